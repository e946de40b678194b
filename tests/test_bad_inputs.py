"""Every bad input gets a LabelflipError naming the parameter (never a bare TypeError/RuntimeError)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from labelflip._validation import LabelflipError
from labelflip.analysis import Profile, fit_profile_polynomial, probe_profile
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.losses import SLAMLoss, create_loss
from labelflip.models import MultiLabelModel, check_model
from labelflip.study.robust_spec import ROBUST_DEMO_SPEC
from tests.helpers import K, TinyCNN

N = 5  # conftest's x fixture: (5, 3, 8, 8)


def _param(name: str) -> str:
    """Regex matching a message that names the parameter ``name`` in quotes."""
    return f"'{re.escape(name)}'"


def _raises(fn: Callable[[], Any], param: str, extra: str | None = None) -> LabelflipError:
    with pytest.raises(LabelflipError, match=_param(param)) as info:
        fn()
    msg = str(info.value)
    assert "Traceback" not in msg
    if extra is not None:
        assert re.search(extra, msg), msg
    return info.value


# ---------------------------------------------------------------------------------------------- MIFGSM eps


@pytest.mark.parametrize(
    "eps",
    [-0.01, float("nan"), float("inf"), [], "abc", True, [0.01, -0.1], [0.01, "a"], None, torch.tensor([])],
    ids=[
        "negative",
        "nan",
        "inf",
        "empty-list",
        "string",
        "bool",
        "negative-in-list",
        "string-in-list",
        "none",
        "empty-tensor",
    ],
)
def test_mifgsm_bad_eps(model: MultiLabelModel, x: torch.Tensor, eps: Any) -> None:
    err = _raises(lambda: MIFGSM(model)(x, eps), "eps", extra="MIFGSM")
    assert "Fix:" in str(err)


# ---------------------------------------------------------------------------------------------- MIFGSM x


def _with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[1, 2, 3, 4] = float("nan")
    return x


@pytest.mark.parametrize(
    ("make_x", "extra"),
    [
        (lambda x: x.tolist(), "torch.Tensor"),
        (lambda x: x.numpy(), "torch.Tensor"),
        (lambda x: x[0, 0, 0], "batch"),
        (lambda x: x[:0], "N >= 1"),
        (lambda x: (x * 255).to(torch.uint8), "floating-point"),
        (_with_nan, "finite"),
        (lambda x: x * 255, "bounds"),
        (lambda x: x - 0.5, "bounds"),
    ],
    ids=["list", "numpy", "no-batch-dim", "empty-batch", "uint8", "nan", "0-255", "negative"],
)
def test_mifgsm_bad_x(model: MultiLabelModel, x: torch.Tensor, make_x: Callable, extra: str) -> None:
    _raises(lambda: MIFGSM(model)(make_x(x), 0.01), "x", extra=extra)


def test_uint8_hint_says_how_to_convert(model: MultiLabelModel, x: torch.Tensor) -> None:
    err = _raises(lambda: MIFGSM(model)((x * 255).to(torch.uint8), 0.01), "x")
    assert "x.float()" in str(err)


def test_out_of_bounds_hint_mentions_255(model: MultiLabelModel, x: torch.Tensor) -> None:
    _raises(lambda: MIFGSM(model)(x * 255, 0.01), "x", extra="255")


def test_channel_mismatch_with_mean_std(x: torch.Tensor) -> None:
    wrapped = MultiLabelModel(TinyCNN(), mean=[0.5] * 4, std=[0.2] * 4)
    _raises(lambda: MIFGSM(wrapped)(x, 0.01), "x", extra="4 channels")


def test_single_image_without_batch_dim(model: MultiLabelModel, x: torch.Tensor) -> None:
    _raises(lambda: MIFGSM(model)(x[0], 0.01), "x")


def test_float64_x_on_float32_model_is_cast_or_named(model: MultiLabelModel, x: torch.Tensor) -> None:
    error: LabelflipError | None = None
    try:
        res = MIFGSM(model)(x.double(), 0.01)
    except LabelflipError as exc:  # refusing with a clear message is an acceptable fix
        error = exc
    if error is not None:
        assert "'x'" in str(error)
    else:
        assert res.flips.shape == (1, N)


# ---------------------------------------------------------------------------------------------- target / weights


@pytest.mark.parametrize(
    ("target", "extra"),
    [
        (torch.zeros(N, K - 1), "shape"),
        (torch.zeros(N + 1, K), "shape"),
        (torch.zeros(N * K), "shape"),
        (torch.full((N, K), 0.5), "0 or 1"),
        (torch.full((N, K), 2.0), "0 or 1"),
        ([[0] * K] * N, "torch.Tensor"),
    ],
    ids=["too-few-labels", "too-many-rows", "flat", "soft", "two", "list"],
)
def test_mifgsm_bad_target(model: MultiLabelModel, x: torch.Tensor, target: Any, extra: str) -> None:
    _raises(lambda: MIFGSM(model)(x, 0.01, target=target), "target", extra=extra)


@pytest.mark.parametrize(
    ("weights", "extra"),
    [
        (torch.ones(K - 1), "shape"),
        (torch.ones(N), "shape"),
        (torch.ones(2, N, K), "shape"),  # one matrix per budget, but 1 budget
        (torch.full((K,), 1.5), r"\[0, 1\]"),
        (torch.full((K,), -0.5), r"\[0, 1\]"),
        (torch.full((N, K), float("nan")), r"\[0, 1\]"),
    ],
    ids=["K-1", "N", "wrong-budget-count", "above-1", "negative", "nan"],
)
def test_mifgsm_bad_weights(model: MultiLabelModel, x: torch.Tensor, weights: Any, extra: str) -> None:
    _raises(lambda: MIFGSM(model)(x, 0.01, weights=weights), "weights", extra=extra)


@pytest.mark.parametrize("weights", [["a"] * K, [[1.0, 0.0], [1.0]]], ids=["strings", "ragged"])
def test_mifgsm_non_numeric_weights(model: MultiLabelModel, x: torch.Tensor, weights: Any) -> None:
    _raises(lambda: MIFGSM(model)(x, 0.01, weights=weights), "weights")


# ---------------------------------------------------------------------------------------------- MIFGSM options


def test_unknown_loss_name_suggests_closest(model: MultiLabelModel) -> None:
    _raises(lambda: MIFGSM(model, "bcee"), "loss", extra="Did you mean 'bce'")
    _raises(lambda: create_loss("lineer"), "loss", extra="Did you mean 'linear'")


@pytest.mark.parametrize("loss", [None, 3, "nonsense"], ids=["none", "int", "unknown"])
def test_bad_loss(model: MultiLabelModel, loss: Any) -> None:
    _raises(lambda: MIFGSM(model, loss), "loss")


def test_slam_by_name_without_profile_says_so(model: MultiLabelModel) -> None:
    _raises(lambda: MIFGSM(model, "slam"), "profile", extra="flip profile")


@pytest.mark.parametrize(
    ("kwargs", "param", "extra"),
    [
        ({"norm": "l3"}, "norm", "'linf', 'l2'"),
        ({"norm": "Linf"}, "norm", "Did you mean 'linf'"),
        ({"clip": "none"}, "clip", "'final', 'step'"),
        ({"normalize": "global"}, "normalize", "'sample', 'batch'"),
        ({"l2_mode": "proj"}, "l2_mode", "Did you mean 'project'"),
        ({"alpha": 0.0}, "alpha", "> 0"),
        ({"alpha": -1e-3}, "alpha", "> 0"),
        ({"alpha": float("nan")}, "alpha", "finite"),
        ({"mu": -0.1}, "mu", ">= 0"),
        ({"batch_size": 0}, "batch_size", ">= 1"),
        ({"batch_size": 2.5}, "batch_size", "int"),
        ({"return_adv": 1}, "return_adv", "bool"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={w}" for k, w in v.items()),
)
def test_mifgsm_bad_options(model: MultiLabelModel, kwargs: dict, param: str, extra: str) -> None:
    _raises(lambda: MIFGSM(model, **kwargs), param, extra=extra)


def test_mifgsm_not_a_module() -> None:
    _raises(lambda: MIFGSM(lambda x: x), "module", extra="nn.Module")


@pytest.mark.parametrize("eps", [np.float32(0.01), np.array([0.0, 0.01])], ids=["np.float32", "ndarray"])
def test_numpy_budgets_are_accepted(model: MultiLabelModel, x: torch.Tensor, eps: Any) -> None:
    res = MIFGSM(model)(x, eps)
    assert res.eps.numel() == np.asarray(eps).size


# ---------------------------------------------------------------------------------------------- MultiLabelModel


@pytest.mark.parametrize(
    ("kwargs", "param", "extra"),
    [
        ({"bounds": (1.0, 0.0)}, "bounds", "low < high"),
        ({"bounds": (0.5, 0.5)}, "bounds", "low < high"),
        ({"bounds": (0.0, float("nan"))}, "bounds[1]", "finite"),
        ({"bounds": 1.0}, "bounds", "pair"),
        ({"threshold": 0.0}, "threshold", "between 0 and 1"),
        ({"threshold": 1.0}, "threshold", "between 0 and 1"),
        ({"threshold": -0.2}, "threshold", "between 0 and 1"),
        ({"threshold": [0.5, 1.2]}, "threshold", "between 0 and 1"),
        ({"threshold": [[0.5]]}, "threshold", "1-D"),
        ({"threshold": [0.5] * (K - 1), "num_labels": K}, "threshold", f"{K} per-label"),
        ({"mean": [0.5] * 3}, "mean/std", "together"),
        ({"std": [0.5] * 3}, "mean/std", "together"),
        ({"mean": [0.5] * 3, "std": [0.5] * 2}, "mean/std", "equal length"),
        ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "std", "> 0"),
        ({"mean": [0.5] * 3, "std": [-0.2] * 3}, "std", "> 0"),
        ({"num_labels": 0}, "num_labels", ">= 1"),
        ({"num_labels": 6.0}, "num_labels", "int"),
        ({"output_kind": "logit"}, "output_kind", "Did you mean 'logits'"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(f"{k}={w}" for k, w in v.items()),
)
def test_model_bad_options(kwargs: dict, param: str, extra: str) -> None:
    _raises(lambda: MultiLabelModel(TinyCNN(), **kwargs), param, extra=extra)


def test_model_not_a_module() -> None:
    _raises(lambda: MultiLabelModel(lambda x: x), "module", extra="nn.Module")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"threshold": "0.5"}, "threshold"), ({"mean": ["a"] * 3, "std": [1.0] * 3}, "mean")],
    ids=["threshold-str", "mean-str"],
)
def test_model_non_numeric_options(kwargs: dict, param: str) -> None:
    _raises(lambda: MultiLabelModel(TinyCNN(), **kwargs), param)


def test_num_labels_mismatch_detected_at_check(x: torch.Tensor) -> None:
    wrapped = MultiLabelModel(TinyCNN(), num_labels=K - 2)
    _raises(lambda: check_model(wrapped, x), "num_labels", extra=f"output width {K}")


def test_per_label_threshold_length_mismatch_detected_at_check(x: torch.Tensor) -> None:
    wrapped = MultiLabelModel(TinyCNN(), threshold=[0.5] * (K - 1))
    _raises(lambda: MIFGSM(wrapped)(x, 0.01), "threshold", extra=f"{K} per-label")


class ThreeDOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean(dim=(2, 3))).unsqueeze(1)


def test_model_returning_3d_output(x: torch.Tensor) -> None:
    _raises(lambda: check_model(MultiLabelModel(ThreeDOutput()), x), "module", extra=r"\(N, K\)")
    _raises(lambda: MIFGSM(ThreeDOutput())(x, 0.01), "module", extra=r"\(N, K\)")


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")  # torch warns when a str indexes a tensor
def test_output_key_missing(x: torch.Tensor) -> None:
    _raises(lambda: MultiLabelModel(TinyCNN(), output="logits")(x), "output", extra="key/index")


def test_output_index_on_tensor_output_names_output(x: torch.Tensor) -> None:
    _raises(lambda: MIFGSM(MultiLabelModel(TinyCNN(), output=0))(x, 0.01), "output")


# ---------------------------------------------------------------------------------------------- SLAMLoss


@pytest.mark.parametrize(
    ("kwargs", "param", "extra"),
    [
        ({}, "profile", "coefficients"),
        ({"coefficients": [0.0, 1.0]}, "profile", "eps_max"),
        ({"eps_max": 0.1}, "profile", "coefficients"),
        ({"profile": 3}, "profile", "coefficients"),
        ({"coefficients": [0.0, 1.0], "eps_max": 0.1, "q": 1.5}, "q", "<= 1"),
        ({"coefficients": [0.0, 1.0], "eps_max": 0.1, "q": -0.1}, "q", ">= 0"),
        ({"coefficients": [0.0, 1.0], "eps_max": 0.0}, "eps_max", "> 0"),
        ({"coefficients": [0.0, 1.0], "eps_max": -0.1}, "eps_max", "> 0"),
        ({"coefficients": [], "eps_max": 0.1}, "coefficients", "non-empty"),
        ({"coefficients": [0.0, float("nan")], "eps_max": 0.1}, "coefficients", "finite"),
    ],
    ids=[
        "nothing",
        "no-eps_max",
        "no-coefficients",
        "not-a-profile",
        "q>1",
        "q<0",
        "eps_max=0",
        "eps_max<0",
        "empty-coefficients",
        "nan-coefficient",
    ],
)
def test_slam_bad_options(kwargs: dict, param: str, extra: str) -> None:
    _raises(lambda: SLAMLoss(**kwargs), param, extra=extra)


def test_slam_without_eps_when_called_directly() -> None:
    loss = SLAMLoss(coefficients=[0.0, 10.0], eps_max=0.1)
    with pytest.raises(LabelflipError, match="eps"):
        loss(torch.zeros(2, 3), torch.ones(2, 3))


def test_slam_non_numeric_coefficients() -> None:
    _raises(lambda: SLAMLoss(coefficients=["a", "b"], eps_max=0.1), "coefficients")


# ---------------------------------------------------------------------------------------------- profiles


@pytest.mark.parametrize(
    ("kwargs", "param", "extra"),
    [
        ({"interval": 0}, "interval", ">= 1"),
        ({"interval": 2.5}, "interval", "int"),
        ({"curve": "mean"}, "curve", "'max', 'bce'"),
        ({"order": 0}, "order", ">= 1"),
        ({"max_steps": 0}, "max_steps", ">= 1"),
        ({"max_steps": 5}, "max_steps", "order x interval"),
        ({"rel_tol": -0.1}, "rel_tol", ">= 0"),
        ({"min_points": 1}, "min_points", ">= 2"),
    ],
    ids=["interval-0", "interval-float", "curve", "order-0", "max_steps-0", "max_steps-small", "rel_tol", "min_pts"],
)
def test_probe_profile_bad_options(
    model: MultiLabelModel, x: torch.Tensor, kwargs: dict, param: str, extra: str
) -> None:
    _raises(lambda: probe_profile(model, x, **kwargs), param, extra=extra)


def test_probe_profile_bad_x(model: MultiLabelModel, x: torch.Tensor) -> None:
    _raises(lambda: probe_profile(model, x * 255), "x", extra="probe_profile")


def test_profile_load_missing_file(tmp_path: Path) -> None:
    _raises(lambda: Profile.load(tmp_path / "nope.json"), "path", extra="nope.json")


def test_profile_load_directory(tmp_path: Path) -> None:
    _raises(lambda: Profile.load(tmp_path), "path")


def test_profile_load_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(LabelflipError, match="not valid JSON"):
        Profile.load(path)


@pytest.mark.parametrize(
    "content",
    [[1, 2], {"format": "something/else"}, {"coefficients": [0.0]}],
    ids=["list", "other-format", "no-format"],
)
def test_profile_load_wrong_format(tmp_path: Path, content: Any) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(LabelflipError, match=r"not a 'labelflip\.profile/1' artefact"):
        Profile.load(path)


def test_profile_load_malformed_fields(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "labelflip.profile/1", "coefficients": [0.0]}))
    with pytest.raises(LabelflipError, match="malformed profile"):
        Profile.load(path)


def test_profile_load_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02\xff\xfe\x00binary")
    with pytest.raises(LabelflipError, match=r"model\.pt"):
        Profile.load(path)


@pytest.mark.parametrize(
    ("eps", "flips", "order", "param", "extra"),
    [
        ([0.0, 0.1, 0.2], [0.0, 1.0, 2.0], 4, "eps", "order \\+ 1 = 5"),
        ([0.0, 0.1], [0.0, 1.0], 3, "eps", "4 points"),
        ([0.0, 0.1, 0.2], [0.0, 1.0], 1, "flips", "matching eps"),
        ([0.0, 0.1, 0.2], [0.0, 1.0, 2.0], 0, "order", ">= 1"),
    ],
    ids=["too-few-order4", "too-few-order3", "length-mismatch", "order-0"],
)
def test_fit_profile_polynomial_bad_inputs(eps: list, flips: list, order: int, param: str, extra: str) -> None:
    _raises(lambda: fit_profile_polynomial(eps, flips, order), param, extra=extra)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_no_models(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI app with model loading and dataset building disabled (a test must fail before them)."""
    typer_testing = pytest.importorskip("typer.testing")
    from labelflip import cli
    from labelflip.cli import loading

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLI loaded a model/dataset before validating its options")

    from labelflip.study import loaders, runner

    monkeypatch.setattr(loading, "create_dataset", forbidden)  # the CLI builds its dataset here ...
    monkeypatch.setattr(runner, "open_dataset", forbidden)  # a study generates its data here ...
    monkeypatch.setattr(loaders, "create_model", forbidden)  # ... and both load (train) their models here
    return cli.app, typer_testing.CliRunner()


def _cli_error(cli_no_models: Any, args: list[str]) -> str:
    app, runner = cli_no_models
    result = runner.invoke(app, args)
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    return output


def test_cli_bad_split(cli_no_models: Any) -> None:
    output = _cli_error(cli_no_models, ["attack", "--split", "bogus"])
    assert "--split" in output and "bogus" in output and "'train', 'val', 'test'" in output


def test_cli_unknown_loss(cli_no_models: Any) -> None:
    output = _cli_error(cli_no_models, ["attack", "--loss", "bce,bcee"])
    assert "'bcee'" in output and "Did you mean 'bce'" in output


def test_cli_non_integer_samples(cli_no_models: Any) -> None:
    output = _cli_error(cli_no_models, ["attack", "--samples", "abc"])
    assert "--samples" in output


def test_cli_bad_budgets_fail_before_loading_a_model(cli_no_models: Any) -> None:
    output = _cli_error(cli_no_models, ["attack", "--budgets", "abc", "--loss", "bce"])
    assert "--budgets" in output and "abc" in output


# ---------------------------------------------------------------------------------------------- every CLI option
# (issue 16 item 4): each invalid value is refused before any data is generated or model trained (cli_no_models
# raises if either happens; the model cache is empty), in well under a few seconds, naming the option typed.
CLI_CASES: list[tuple[list[str], str]] = [
    (["attack", "--model", "nope"], "--model"),
    (["attack", "--split", "bogus"], "--split"),
    (["attack", "--samples", "0"], "--samples"),
    (["attack", "--samples", "99999"], "--samples"),
    (["attack", "--split", "val", "--samples", "1000"], "--samples"),
    (["attack", "--probe-samples", "1"], "--probe-samples"),
    (["attack", "--budgets", "abc"], "--budgets"),
    (["attack", "--budgets", "-1"], "--budgets"),
    (["attack", "--budgets", "8/0"], "--budgets"),
    (["attack", "--budgets", "nan"], "--budgets"),
    (["attack", "--methods", "bcee"], "bcee"),
    (["attack", "--methods", "class:2"], "gamma"),
    (["attack", "--norm", "l3"], "--norm"),
    (["attack", "--profile", "nope.json"], "--profile"),
    (["attack", "--profile", "{bad_json}"], "--profile"),
    (["attack", "--correlations", "nope.json"], "--correlations"),
    (["attack", "--eps-corr", "-1"], "--eps-corr"),
    (["attack", "--eps-corr", "inf"], "--eps-corr"),
    (["attack", "--batch-size", "0"], "--batch-size"),
    (["attack", "--max-steps", "1"], "--max-steps"),
    (["attack", "--markdown", "{tmp}"], "--markdown"),
    (["attack", "--preset", "nope"], "--preset"),
    (["profile", "--model", "nope"], "--model"),
    (["profile", "--samples", "0"], "--samples"),
    (["profile", "--samples", "99999"], "--samples"),
    (["profile", "--order", "0"], "--order"),
    (["profile", "--interval", "0"], "--interval"),
    (["profile", "--curve", "mean"], "--curve"),
    (["profile", "--norm", "l3"], "--norm"),
    (["profile", "--max-steps", "1"], "--max-steps"),
    (["profile", "--out", "{tmp}"], "--out"),
    (["correlations", "--samples", "0"], "--samples"),
    (["correlations", "--samples", "5000"], "--samples"),
    (["correlations", "--eps", "-1"], "--eps"),
    (["correlations", "--eps", "nan"], "--eps"),
    (["correlations", "--model", "asl"], "--model"),
    (["attackability", "--eps", "0"], "--eps"),
    (["attackability", "--images", "0"], "--images"),
    (["attackability", "--per-label", "0"], "--per-label"),
    (["targets-vs-flips", "--fractions", "abc"], "--fractions"),
    (["targets-vs-flips", "--fractions", "inf"], "--fractions"),
    (["targets-vs-flips", "--step", "0"], "--step"),
    (["targets-vs-flips", "--samples", "99999"], "--samples"),
    (["targets-vs-flips", "--probe-samples", "1"], "--probe-samples"),
    (["targets-vs-flips", "--probe-samples", "99999"], "--probe-samples"),  # was silently clamped to the split
    (["study", "run", "--out", "{tmp}/s", "--samples", "1"], "samples.count"),
    (["study", "run", "--out", "{tmp}/s", "--samples", "99999"], "samples.count"),
    (["study", "run", "--out", "{tmp}/s", "--models", "asl-cnn,nope"], "models"),
    (["study", "run", "--out", "{tmp}/s", "--methods", "bcee"], "bcee"),
    (["study", "run", "--out", "{tmp}/s", "--set", "budgets={{absolute: [.nan]}}"], "budgets.absolute"),
    (["study", "run", "--out", "{tmp}/s", "--set", "budgets.fractions=[.inf]"], "budgets.fractions"),
    (["study", "run", "--out", "{tmp}/s", "--set", "nokey=1"], "--set"),
    (["study", "run", "--out", "{tmp}/s", "--set", "profile.samples=5000"], "profile.samples"),
    (["study", "run", "--out", "{tmp}/s", "--set", "correlations.samples=5000"], "correlations.samples"),
    (["study", "run", "--out", "{tmp}/s", "--set", "dataset.config.bogus=1"], "dataset.config"),
    (["study", "run", "{tmp}/missing.yaml"], "path"),
    (["study", "export", "{tmp}", "--format", "xls"], "--format"),
    (["demo", "--samples", "99999"], "samples.count"),
    (["demo", "--workers", "0"], "--workers"),
    (["study", "run", "--out", "{tmp}/s", "--workers", "many"], "--workers"),
    (["study", "run", str(ROBUST_DEMO_SPEC), "--out", "{tmp}/r", "--workers", "2"], "--workers"),
    (["demo", "--out", "{tmp}/d", "--set", "profile.eps=1"], "correlations.eps"),
]


@pytest.mark.parametrize(("args", "needle"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_every_cli_option_is_checked_before_any_work(
    cli_no_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    import time

    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    args = [a.format(tmp=tmp_path, bad_json=tmp_path / "bad.json") for a in args]
    start = time.perf_counter()
    output = _cli_error(cli_no_models, args)
    assert time.perf_counter() - start < 5.0, "validation must not wait for work"
    assert needle in output, output
    for internal in ("load_builtin", "parse_method", "_select", "model_spec", "create_model", "'x' parameter"):
        assert internal not in output, output
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())


def test_cli_budgets_accept_ratios() -> None:
    from labelflip.cli.attack import parse_budgets

    assert parse_budgets("8/255,4/255,0.01,5%") == [(8 / 255, False), (4 / 255, False), (0.01, False), (5.0, True)]


def test_every_cli_help_shows_its_defaults() -> None:
    """Each option shows its default (typer's [default: ...]) or says in its help what leaving it out means."""
    import typer.main

    from labelflip import cli

    def walk(command: Any, path: list[str]) -> Any:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    missing = []
    for path, command in walk(typer.main.get_command(cli.app), []):
        for p in command.params:
            if not getattr(p, "opts", [""])[0].startswith("--") or p.name == "help":
                continue
            shown = getattr(p, "show_default", True) is not False and p.default is not None
            if not shown and "default" not in (p.help or "").lower():
                missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert not missing, missing


def test_cli_models_lists_k_input_size_and_quality(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from labelflip import cli

    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path))
    result = typer_testing.CliRunner().invoke(cli.app, ["models", "asl*"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert "asl-cnn" in output and "24" in output and "3x32x32" in output and "not trained yet" in output


def test_empty_batch_is_named_as_such_not_as_a_missing_batch_dimension(model: MultiLabelModel, x: torch.Tensor) -> None:
    err = _raises(lambda: MIFGSM(model)(x[:0], 0.01), "x", extra="N = 0")
    assert "unsqueeze" not in str(err)
    err = _raises(lambda: probe_profile(model, x[:0]), "x", extra="N = 0")
    assert "unsqueeze" not in str(err)

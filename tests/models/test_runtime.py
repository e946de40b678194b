"""The runtime configuration (issue 12 item 1): validation, bf16/fp16 autocast with fp32 attack state, channels-last,
torch.compile fallback, out-of-memory back-off and "auto" batch sizing, the spec section and the CLI options.

There is no GPU here: the CUDA-only parts are covered through CPU autocast (bf16 and fp16 run on CPU), a module
that raises ``torch.OutOfMemoryError`` on large batches, and monkeypatched memory probes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from labelflip import cli
from labelflip._validation import LabelflipError
from labelflip.attacks import MIFGSM, FixedBudgetAttack
from labelflip.attacks.base import Batch
from labelflip.attacks.trajectory import Trajectory
from labelflip.estimate import PolynomialEstimate
from labelflip.losses import create_loss
from labelflip.models import MultiLabelModel, Runtime, chunking
from labelflip.models import runtime as rt
from labelflip.study import load_spec
from labelflip.testing import TinyNet

EPS = [0.0, 0.003, 0.01, 0.03]


def inputs(n: int = 64, seed: int = 5) -> Tensor:
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(seed))


def attack(model: MultiLabelModel, x: Tensor, loss: str = "bce", **kw):
    return MIFGSM(model, loss, return_adv=True, **kw)(x, EPS)


def same(a, b) -> None:
    for key in ("flips", "adv_probs", "x_adv", "linf", "l2", "clean_probs"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"precision": "half"}, "precision"),
        ({"device": "gpu"}, "device"),
        ({"device": 0}, "device"),
        ({"channels_last": "yes"}, "channels_last"),
        ({"compile": 1}, "compile"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": "max"}, "batch_size"),
    ],
)
def test_runtime_refuses_bad_settings(kwargs: dict, param: str) -> None:
    with pytest.raises(LabelflipError, match=f"'{param}' parameter of Runtime"):
        Runtime(**kwargs)


def test_option_errors_name_the_option_and_unknown_keys_are_refused() -> None:
    with pytest.raises(LabelflipError, match=r"'--precision' parameter of labelflip attack.*Did you mean 'fp16'"):
        Runtime.from_options({"precision": "fp61"}, owner="labelflip attack", prefix="--")
    with pytest.raises(LabelflipError, match=r"'runtime.devce'.*a runtime setting"):
        Runtime.from_options({"devce": "cpu"}, owner="study spec", prefix="runtime.")
    assert Runtime.from_options({"device": None, "precision": "bf16"}, owner="x") == Runtime(precision="bf16")
    with pytest.raises(LabelflipError, match="batch_size"):
        MIFGSM(MultiLabelModel(TinyNet()), batch_size=0)
    assert MIFGSM(MultiLabelModel(TinyNet()), batch_size="auto").batch_size == "auto"
    with pytest.raises(LabelflipError, match="'runtime' parameter of MultiLabelModel"):
        MultiLabelModel(TinyNet()).set_runtime("bf16")  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_cuda_says_so_and_suggests_cpu() -> None:
    with pytest.raises(LabelflipError, match=r"no CUDA device.*use --device cpu"):
        rt.resolve_device("cuda", "labelflip attack", "--device")
    with pytest.raises(LabelflipError, match="no CUDA device"):
        MultiLabelModel(TinyNet(), runtime=Runtime(device="cuda:0"))
    assert rt.resolve_device("auto") == torch.device("cpu")
    res = CliRunner().invoke(cli.app, ["attack", "--device", "cuda", "--samples", "4"])
    assert res.exit_code == 2
    assert "--device" in res.output
    assert "no CUDA device" in res.output


# ----------------------------------------------------------------------------- the default path
def test_default_and_fp32_cpu_runtimes_are_bit_identical() -> None:
    x = inputs(8)
    ref = attack(MultiLabelModel(TinyNet()), x)
    for runtime in (Runtime(), Runtime(device="cpu"), Runtime(device="auto"), Runtime(batch_size="auto")):
        model = MultiLabelModel(TinyNet(), runtime=runtime)
        assert model._runtime_net is None  # the plain forward: nothing in between
        same(attack(model, x), ref)


# ----------------------------------------------------------------------------- mixed precision
def test_bf16_autocast_keeps_logits_gradients_momentum_and_perturbation_fp32() -> None:
    x = inputs(8)
    fp32, bf16 = MultiLabelModel(TinyNet()).eval(), MultiLabelModel(TinyNet(), runtime=Runtime(precision="bf16")).eval()
    logits, logits32 = bf16(x), fp32(x)
    assert logits.dtype == torch.float32
    assert 0 < float((logits - logits32).detach().abs().max()) < 0.1  # autocast really ran, and is close
    traj = Trajectory(bf16, create_loss("slam", profile=PolynomialEstimate((0.0, 100.0), 0.04)), x,
                      torch.ones(8, 8), loss_eps=torch.full((8,), 0.01, dtype=torch.float64))  # fmt: skip
    assert traj.gradient().dtype == torch.float32
    traj.run_to(3)
    assert traj.x.dtype == traj.g.dtype == torch.float32
    assert attack(bf16, x).x_adv.dtype == torch.float32


@pytest.mark.parametrize(("precision", "loss"), [("bf16", "bce"), ("bf16", "slam"), ("fp16", "bce")])
def test_reduced_precision_flips_agree_with_fp32_within_the_documented_tolerance(precision: str, loss: str) -> None:
    x, eps = inputs(32), [0.0, 0.01, 0.05]
    opts = {"profile": PolynomialEstimate((0.0, 100.0), 0.06)} if loss == "slam" else {}
    ref = MIFGSM(MultiLabelModel(TinyNet()), create_loss(loss, **opts), return_adv=True)(x, eps)
    low = MIFGSM(MultiLabelModel(TinyNet(), runtime=Runtime(precision=precision)), create_loss(loss, **opts),
                 return_adv=True)(x, eps)  # fmt: skip
    assert low.x_adv.dtype == torch.float32
    assert float(low.linf.max()) <= max(eps) + 1e-6  # the budget holds exactly in fp32
    diff = (low.flips - ref.flips).abs().float()
    tol = rt.BF16_TOLERANCE
    assert float(diff.mean()) <= tol["mean_abs_diff"]
    assert float((diff == 0).float().mean()) >= tol["identical_fraction"]
    assert float((low.flips.float().mean(1) - ref.flips.float().mean(1)).abs().max()) <= tol["mean_flips_diff"]
    assert float(ref.flips[-1].float().mean()) > 0.2  # the comparison is not vacuous


def _two_layer(w1: float, w2: float, k: int = 8) -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 1, bias=False), nn.Linear(1, k, bias=False))
    with torch.no_grad():
        net[1].weight.fill_(w1)
        net[2].weight.fill_(w2)
    return net


def test_fp16_gradient_scaling_keeps_tiny_input_gradients_and_refuses_overflow() -> None:
    x = inputs(2).requires_grad_(True)
    net, c = _two_layer(1e-4, 1e-3), 2.0**-5  # d loss / d x = 1e-4 * 8 * 1e-3 * c = 2.5e-8: rounds to 0 in fp16
    exact = torch.autograd.grad(net(x).sum() * c, x)[0]
    with torch.autocast("cpu", dtype=torch.float16):  # plain fp16 autocast: the input gradient underflows
        plain = torch.autograd.grad(net(x).float().sum() * c, x)[0]
    fp16 = MultiLabelModel(net, runtime=Runtime(precision="fp16")).eval()  # attacks run in eval mode
    scaled = torch.autograd.grad(fp16(x).sum() * c, x)[0]
    assert float(plain.abs().max()) == 0.0
    assert torch.allclose(scaled, exact, rtol=0.01, atol=0)
    fp16.train()  # training: parameter gradients must not carry the scale, so none is applied
    w = net[1].weight
    with torch.autocast("cpu", dtype=torch.float16):
        plain_w = torch.autograd.grad(net(x).float().sum(), w)[0]
    assert torch.equal(torch.autograd.grad(fp16(x).sum(), w)[0], plain_w)
    hot = MultiLabelModel(_two_layer(1 / 192, 300.0), runtime=Runtime(precision="fp16")).eval()
    with pytest.raises(LabelflipError, match=r"fp16 input gradient overflowed.*bf16"):
        torch.autograd.grad(hot(x).sum(), x)


# ----------------------------------------------------------------------------- channels-last and compile
def test_channels_last_gives_the_same_results_and_can_be_undone() -> None:
    x = inputs(16)
    ref = attack(MultiLabelModel(TinyNet()), x)
    model = MultiLabelModel(TinyNet(), runtime=Runtime(channels_last=True))
    conv = model.module.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    res = attack(model, x)
    assert torch.equal(res.flips, ref.flips)
    assert torch.allclose(res.x_adv, ref.x_adv, atol=1e-5, rtol=0)
    assert res.x_adv.is_contiguous()  # the gradient came back in the usual layout
    model.set_runtime(None)
    assert model.module.features[0].weight.is_contiguous()


def test_compile_failure_falls_back_to_eager_with_a_logged_warning(monkeypatch, caplog) -> None:
    x = inputs(8)
    ref = attack(MultiLabelModel(TinyNet()), x)

    def broken_call(module: nn.Module):
        def call(_x: Tensor) -> Tensor:
            raise RuntimeError("inductor: no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken_call)
    with caplog.at_level(logging.WARNING, logger="labelflip.models.runtime"):
        model = MultiLabelModel(TinyNet(), runtime=Runtime(compile=True))
        same(attack(model, x), ref)
    assert "torch.compile failed" in caplog.text
    assert model._runtime_net.compiled is None
    monkeypatch.setattr(torch, "compile", lambda m: (_ for _ in ()).throw(RuntimeError("Python 3.99 unsupported")))
    same(attack(MultiLabelModel(TinyNet(), runtime=Runtime(compile=True)), x), ref)


def test_compile_runs_the_compiled_module(monkeypatch) -> None:
    calls: list[int] = []

    def counting(module: nn.Module):
        def call(x: Tensor) -> Tensor:
            calls.append(x.shape[0])
            return module(x)

        return call

    monkeypatch.setattr(torch, "compile", counting)
    x = inputs(8)
    same(attack(MultiLabelModel(TinyNet(), runtime=Runtime(compile=True)), x), attack(MultiLabelModel(TinyNet()), x))
    assert calls
    assert rt.describe_runtime(MultiLabelModel(TinyNet(), runtime=Runtime(compile=True)))["compile"] is True


# ----------------------------------------------------------------------------- out-of-memory back-off
class OOMNet(nn.Module):
    """TinyNet that runs out of "device memory" on batches larger than ``limit`` (counts the refusals)."""

    def __init__(self, limit: int, error: type[Exception] = torch.OutOfMemoryError, grad_only: bool = False) -> None:
        super().__init__()
        self.net, self.limit, self.error, self.grad_only, self.refused = TinyNet(), limit, error, grad_only, 0

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > self.limit and (torch.is_grad_enabled() or not self.grad_only):
            self.refused += 1
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_oom_halves_and_retries_the_chunk_with_results_of_the_small_chunk_run() -> None:
    x, eps = inputs(8), [0.0, 0.005, 0.01]
    direct = MIFGSM(MultiLabelModel(TinyNet()), return_adv=True, batch_size=2)(x, eps)
    net = OOMNet(limit=2)
    model = MultiLabelModel(net)
    model._checked = True  # the one-off check runs on 4 samples: not what this test is about
    same(MIFGSM(model, return_adv=True)(x, eps), direct)  # 8 -> 4 -> 2 samples per chunk
    assert net.refused == 2
    assert model._chunk_memo == {("MIFGSM", (3, 8, 8), 1): 2}
    same(MIFGSM(model, return_adv=True, batch_size=8)(x, eps), direct)  # the working size is remembered
    assert net.refused == 2


def test_oom_retry_restores_the_attack_info_and_loses_no_sample() -> None:
    class Recording(FixedBudgetAttack):
        def run(self, batch: Batch, budgets: list[float]) -> Tensor:
            batch.info.setdefault("seen", []).extend(batch.sample_ids.tolist())  # written before the OOM
            self.model(batch.x)
            return batch.x.unsqueeze(0).expand(len(budgets), *batch.x.shape).clone()

    model = MultiLabelModel(OOMNet(limit=3, error=RuntimeError, grad_only=True))  # in run(), after the clean pass
    model._checked = True
    res = Recording(model)(inputs(7), [0.0, 0.01])
    assert res.extra["seen"] == list(range(7))
    assert res.flips.shape == (2, 7)


def test_oom_at_one_sample_or_for_a_chunk_dependent_attack_is_a_clear_error() -> None:
    model = MultiLabelModel(OOMNet(limit=0))
    model._checked = True
    with pytest.raises(LabelflipError, match=r"out of device memory on 1 sample.*bf16"):
        attack(model, inputs(4))
    model = MultiLabelModel(OOMNet(limit=2))
    model._checked = True
    with pytest.raises(LabelflipError, match="depend on the chunk size"):
        attack(model, inputs(4), normalize="batch")
    assert not chunking.is_oom(RuntimeError("shape mismatch"))
    assert chunking.is_oom(torch.cuda.OutOfMemoryError("x"))


def test_auto_batch_size_from_free_device_memory(monkeypatch) -> None:
    x = inputs(40)
    model = MultiLabelModel(TinyNet())
    assert chunking.estimate_batch_size(model, x, 40) == 40  # no device memory to measure (CPU): all at once
    monkeypatch.setattr(chunking, "_measures_memory", lambda device: True)
    monkeypatch.setattr(chunking, "_free_bytes", lambda device: 100_000)
    monkeypatch.setattr(chunking, "_probe_bytes", lambda model, x: 1000.0)
    assert chunking.estimate_batch_size(model, x, 40) == 40  # 0.8 * 100000 / (1.25 * 1000) = 64, capped at n
    monkeypatch.setattr(chunking, "_free_bytes", lambda device: 20_000)
    assert chunking.estimate_batch_size(model, x, 40) == 12
    assert chunking.estimate_batch_size(model, x, 40, stack=4) == 3
    sizes: list[int] = []
    monkeypatch.setattr(
        chunking.ChunkPlan, "run", lambda self, n, fn, state=None: sizes.append(self.size) or [fn(slice(0, n))]
    )
    MIFGSM(MultiLabelModel(TinyNet(), runtime=Runtime(batch_size="auto")))(x, 0.01)
    MIFGSM(MultiLabelModel(TinyNet()), batch_size="auto")(x, 0.01)
    MIFGSM(MultiLabelModel(TinyNet(), runtime=Runtime(batch_size="auto")), batch_size=5)(x, 0.01)  # explicit wins
    assert sizes == [12, 12, 5]


# ----------------------------------------------------------------------------- spec, manifest, CLI
def test_spec_runtime_section_hashes_only_a_non_fp32_precision() -> None:
    base = load_spec().config_hash()
    same_results = [
        "runtime.device=cpu",
        "runtime.batch_size=auto",
        "runtime.channels_last=true",
        "runtime.compile=true",
    ]
    assert load_spec(sets=same_results).config_hash() == base
    assert load_spec(sets=["runtime.precision=fp32"]).config_hash() == base
    assert load_spec(sets=["runtime.precision=bf16"]).config_hash() != base
    assert load_spec(overrides={"runtime": {"precision": "bf16"}}).runtime["precision"] == "bf16"
    with pytest.raises(LabelflipError, match=r"'runtime.precision' parameter of study spec"):
        load_spec(sets=["runtime.precision=half"])


def test_study_under_a_runtime_records_it_and_fp32_rows_do_not_change(tmp_path: Path) -> None:
    from labelflip.study.runner import run_study
    from labelflip.study.store import ResultsStore
    from tests.study.test_study import _rows, tiny_spec

    profile = {"samples": 4, "interval": 5, "max_steps": 60, "allow_capped": True}  # fast; not what is tested
    path = tiny_spec(tmp_path, methods=["bce"], attackability={"per_label": 0}, seeds=[0],
                     samples={"count": 8, "seed": 1}, profile=profile)  # fmt: skip
    run_study(load_spec(path))
    run_study(load_spec(path, sets=["runtime.device=cpu", "runtime.batch_size=auto", f"output={tmp_path / 'b'}"]))
    assert _rows(tmp_path / "run") == _rows(tmp_path / "b")  # bit-identical, confidences included
    with ResultsStore(tmp_path / "b" / "results.sqlite") as store:
        recorded = store.manifest()["model_runtime"]["tiny"]
    assert recorded["device"] == "cpu"
    assert recorded["batch_size"] == "auto"
    assert recorded["precision"] == "fp32"

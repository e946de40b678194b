"""``labelflip train`` and ``labelflip estimate`` end to end on tiny synthetic tabular data (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelflip import cli
from labelflip.data import create_dataset
from labelflip.estimators import sae
from labelflip.models.checkpoints import read_metadata
from labelflip.robust import list_regularisers, load_trained
from labelflip.study.inputs import select_samples

runner = CliRunner()
TINY = "synthetic-tabular:n=200,num_features=6,num_labels=4"
MULAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "mulan"


def _train(out: Path, *extra: str) -> tuple[object, Path]:
    res = runner.invoke(cli.app, ["train", "--dataset", TINY, "--epochs", "3", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    (path,) = out.glob("*.safetensors")
    return res, path


@pytest.fixture(scope="module")
def linear_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    res, path = _train(tmp_path_factory.mktemp("ck"))
    assert "Micro-F1" in res.output and "Macro-F1" in res.output and "mAP" in res.output
    assert "epoch 3/3" in res.output  # progress, one line per epoch off a terminal
    assert path.name.startswith("linear_multilabel-") and str(path) in res.output
    return path


def test_train_then_estimate_round_trip(linear_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    args = ["estimate", "--model", str(linear_ckpt), "--dataset", TINY, "--samples", "10", "--norm", "linf"]
    res = runner.invoke(
        cli.app, [*args, "--eps", "0.5", "--eps", "2", "--method", "sae,gase,exact", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "SAE" in res.output and "GASE C_a" in res.output and "milp" in res.output
    got = json.loads(out.read_text())
    trained = load_trained(linear_ckpt)
    assert got["format"] == "labelflip.estimate/1" and got["fingerprint"] == trained.fingerprint
    assert (got["samples"], got["num_labels"], got["norm"], got["linear"]) == (10, 4, "linf", True)
    assert [b["eps"] for b in got["budgets"]] == [0.5, 2.0]
    # the CLI reports the library's numbers on the seeded selection of the test split
    data = create_dataset(TINY)
    x = data.test.x[select_samples(data.test, 10, 0)]
    assert got["sae"]["mean"] == pytest.approx(sae(trained.model, x, norm="linf").mean())
    for row in got["budgets"]:
        assert row["gase"]["oracle"] == "exact" and row["exact"]["method"] == "milp"
        assert 0 <= row["gase"]["c_a"] <= row["exact"]["c_star"] <= 4  # the MILP is the maximum
        assert row["exact"]["gap"] == pytest.approx(row["exact"]["c_star"] - row["gase"]["c_a"])
    assert got["budgets"][0]["exact"]["c_star"] <= got["budgets"][1]["exact"]["c_star"]


def test_estimate_defaults_to_the_checkpoints_data_and_warns_on_other_data(linear_ckpt: Path) -> None:
    res = runner.invoke(cli.app, ["estimate", "--model", str(linear_ckpt), "--split", "val"])
    assert res.exit_code == 0, res.output
    assert "n=200" in res.output and "SAE" in res.output and "GASE C_a" not in res.output
    assert "val: 60 samples" in res.output  # default: 100, or the whole split when it is smaller
    other = TINY.replace("n=200", "n=300")
    res = runner.invoke(cli.app, ["estimate", "--model", str(linear_ckpt), "--dataset", other, "--samples", "5"])
    assert res.exit_code == 0, res.output
    assert "trained on" in res.output


def test_train_again_loads_the_checkpoint(linear_ckpt: Path) -> None:
    res = runner.invoke(cli.app, ["train", "--dataset", TINY, "--epochs", "3", "--out", str(linear_ckpt.parent)])
    assert res.exit_code == 0, res.output
    assert "loaded" in res.output and "epoch 1/3" not in res.output


def test_regulariser_spec_reaches_the_training(tmp_path: Path) -> None:
    _, path = _train(tmp_path, "--arch", "mlp", "--hidden", "8", "--regularizer", "arm-sae:0.3")
    meta = read_metadata(path)
    assert meta["train_config"]["regulariser"] == "arm-sae:0.3" and meta["arch_kwargs"]["hidden"] == 8
    assert meta["train_config"]["loss"] == "logistic"  # --loss auto for a non-linear model
    assert all(h["penalty"] > 0 for h in meta["history"])
    res = runner.invoke(cli.app, ["estimate", "--model", str(path), "--eps", "1", "--method", "exact"])
    assert res.exit_code == 2 and "--method" in res.output and "linear" in res.output


def test_regularizer_list() -> None:
    res = runner.invoke(cli.app, ["train", "--dataset", TINY, "--regularizer", "list"])
    assert res.exit_code == 0, res.output
    assert all(name in res.output for name in list_regularisers())


@pytest.mark.parametrize(
    ("spec", "needle"),
    [("arm-sea:0.3", "Did you mean 'arm-sae'"), ("arm-sae:foo=1", "lam, alpha"), ("nuclear:-1", "nuclear")],
)
def test_bad_regularizer_is_refused_before_training(tmp_path: Path, spec: str, needle: str) -> None:
    res = runner.invoke(cli.app, ["train", "--dataset", TINY, "--regularizer", spec, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "--regularizer" in res.output and needle in res.output and "--regularizer list" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--dataset", "synthetic-tabulr"], "Did you mean 'synthetic-tabular'"),
        (["train", "--dataset", "no-such-data"], "MULAN"),
        (["train", "--dataset", TINY, "--arch", "asl_convnet"], "--arch linear"),
        (["train", "--dataset", TINY, "--arch", "resnet"], "Did you mean"),
        (["train", "--dataset", TINY, "--batch-size", "0"], "'--batch-size'"),
        (["train", "--dataset", TINY, "--dataset-path", "."], "--dataset-path"),
        (["train", "--dataset", TINY, "--hidden", "4"], "--hidden"),
        (["estimate", "--model", "asl-cn"], "Did you mean 'asl-cnn'"),
        (["estimate", "--model", "nowhere.safetensors"], "existing checkpoint"),
    ],
)
def test_bad_input_is_a_clean_error(args: list[str], needle: str) -> None:
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dataset", "no-such-data"], "'--dataset'"),
        (["--dataset", "synthetic-tabular"], "6 features, 4 labels"),  # not the data it was trained on
        (["--eps", "-1"], "'--eps'"),
        (["--eps", "1/0"], "'--eps'"),
        (["--method", "gase"], "'--eps'"),
        (["--eps", "1", "--method", "sae,foo"], "'--method'"),
        (["--norm", "l3"], "'--norm'"),
        (["--split", "dev"], "'--split'"),
        (["--samples", "1000"], "'--samples'"),
        (["--eps", "1", "--attack", "nope"], "--attack"),
    ],
)
def test_bad_estimate_input_is_a_clean_error(linear_ckpt: Path, args: list[str], needle: str) -> None:
    res = runner.invoke(cli.app, ["estimate", "--model", str(linear_ckpt), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


@pytest.mark.skipif(not (MULAN / "emotions.arff.gz").is_file(), reason="../shared/data/mulan is absent")
def test_mulan_name_and_folder(tmp_path: Path) -> None:
    args = ["train", "--dataset", "emotions", "--dataset-path", str(MULAN), "--epochs", "1", "--out", str(tmp_path)]
    res = runner.invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.glob("*.safetensors")
    res = runner.invoke(cli.app, ["estimate", "--model", str(path), "--eps", "0.5", "--samples", "5"])
    assert res.exit_code == 0, res.output
    assert "K = 6" in res.output and "exact" in res.output  # GASE's exact oracle on a linear model

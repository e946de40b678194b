"""The robust study kind (SAE paper, Tables 2-4): spec validation before any work, a tiny study end to end into the
store, resume (finished units and components skipped, checkpoints reused), refusal of another configuration, the
packaged configs, and dispatch through ``labelflip study run`` / ``study report``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from labelflip import LabelflipError, cli
from labelflip.study import ROBUST_DEMO_SPEC, ResultsStore, load_robust_spec, run_robust_study
from labelflip.study import robust_runner as runner_module
from labelflip.study.robust_plan import BUDGETS_KIND, INDEX_KIND, UNIT_KIND, plan_robust_units
from labelflip.study.robust_spec import CONFIGS_DIR, is_robust_spec, regulariser_spec

SHARED_MULAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "mulan"


def tiny_spec(out: Path, **changes: Any) -> dict[str, Any]:
    """A robust study on tiny synthetic-tabular data with every table (seconds on one CPU core)."""
    spec: dict[str, Any] = {
        "kind": "robust",
        "name": "tiny",
        "output": str(out),
        "dataset": {"name": "synthetic-tabular", "seed": 1, "config": {"n": 150, "num_features": 6, "num_labels": 4}},
        "train": {"epochs": 4, "batch_size": 25, "lr": 0.05},
        "budgets": {"absolute": [0.25, 1.0]},
        "tables": {
            "table2": {"strengths": [0, 0.3, 3.0]},
            "table3": {
                "regularisers": ["none", "l2:0.1", "nuclear:0.3", "arm-primal:0.3", "arm-sae:0.3", "arm-single:0.3"]
            },
            "table4": {"lambdas": [0, 0.3, 3.0]},
            "fig1": {"correlations": [0.0, 0.9], "regulariser": "arm-sae:1.0"},
        },
    }
    spec.update(changes)
    return spec


def _units(out: Path) -> dict[str, dict[str, Any]]:
    with ResultsStore(out / "results.sqlite", readonly=True) as store:
        keys = store.get_artefact("", INDEX_KIND)["units"]
        return {k: store.get_artefact(k, UNIT_KIND) for k in keys}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("robust") / "tiny"
    run_robust_study(tiny_spec(out))
    return out


BAD_SPECS = [
    ({"bogus": 1}, "bogus"),
    ({"dataset": {"name": "coco"}}, "dataset.name"),
    ({"dataset": {"name": "synthetic-tabular", "config": {"corelation": 0.5}}}, "dataset.config.corelation"),
    ({"dataset": {"name": "synthetic-tabular", "config": {"correlation": 2.0}}}, "correlation"),
    ({"dataset": {"name": "yeast", "path": "/nowhere/yeast.arff.gz"}}, "dataset.path"),
    ({"dataset": {"name": "synthetic"}, "model": {"family": "linear"}}, "model.family"),
    ({"dataset": {"name": "synthetic", "path": "x.arff"}}, "dataset.path"),
    ({"dataset": {"name": "yeast", "config": {"n": 5}}}, "dataset.config"),
    ({"model": {"family": "cnn"}}, "model.family"),
    ({"train": {"epochs": 0}}, "train"),
    ({"train": {"seed": 3}}, "train.seed"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"norm": "l1"}, "norm"),
    ({"attack": "slam"}, "attack"),
    ({"budgets": {"absolute": [0.5]}}, "budgets.absolute"),
    ({"budgets": {"rule": {"loss_share": 1.5}}}, "budgets.rule.loss_share"),
    ({"budgets": {"fractions": [0.5]}}, "budgets"),
    ({"tables": {"table5": {}}}, "tables"),
    ({"tables": {"table3": {"regularisers": ["none", "nuclr:0.1"]}}}, "tables.table3.regularisers"),
    ({"tables": {"table2": {"strengths": [0, 0]}}}, "tables.table2.strengths"),
    ({"tables": {"table4": {"regulariser": "none"}}}, "tables.table4.regulariser"),
    ({"tables": {"table2": {"eps": "largest"}}}, "tables.table2.eps"),
    ({"dataset": {"name": "synthetic"}, "model": {"family": "cnn"}, "tables": {"fig1": {}}}, "tables.fig1"),
    ({"evaluation": {"samples": -1}}, "evaluation.samples"),
    ({"evaluation": {"gase_attack": "slam"}}, "evaluation.gase_attack"),
    ({"attack_options": {"k_tri": 2}}, "attack_options.k_tri"),
    ({"attack": "maxflip", "attack_options": {"slak": 2}}, "attack_options.slak"),
]


@pytest.mark.parametrize(("changes", "needle"), BAD_SPECS, ids=[n for _, n in BAD_SPECS])
def test_bad_specs_fail_naming_the_key_and_the_fix(tmp_path: Path, changes: dict, needle: str) -> None:
    spec = tiny_spec(tmp_path / "out")
    for key, value in changes.items():
        spec[key] = value
    with pytest.raises(LabelflipError) as err:
        load_robust_spec(spec)
    assert needle in str(err.value) and "must be" in str(err.value), str(err.value)
    assert not (tmp_path / "out").exists()  # nothing done


def test_set_overrides_and_bad_set_keys(tmp_path: Path) -> None:
    spec = load_robust_spec(tiny_spec(tmp_path), sets=["train.epochs=7", "tables.table2.eps=0.5"])
    assert spec.train["epochs"] == 7 and spec.tables["table2"]["eps"] == 0.5
    with pytest.raises(LabelflipError, match="--set"):
        load_robust_spec(tiny_spec(tmp_path), sets=["trian.epochs=7"])


def test_canonical_regularisers_and_units_shared_across_tables(tmp_path: Path) -> None:
    assert regulariser_spec("nuclear:0.01") == "nuclear:lam=0.01,mode=prox"
    assert regulariser_spec("arm-sae", 0.0) == "none" and regulariser_spec("l2:0") == "none"
    spec = load_robust_spec(tiny_spec(tmp_path))
    units = plan_robust_units(spec, [0.25, 1.0])
    keys = [u.key for u in units]
    assert len(keys) == len(set(keys)) and keys[0] == "none|seed=0"
    base = next(u for u in units if u.key == "none|seed=0")  # table2's 0, table3's none and table4's 0: one model
    assert base.needs == {"f1", "sae", "gase@1.0"}
    assert sum(u.variant == {"correlation": 0.9} for u in units) == 2  # fig1: none and the regulariser


def test_tiny_study_end_to_end_into_the_store(tiny_study: Path) -> None:
    units = _units(tiny_study)
    assert len(units) == 12  # 8 shared by tables 2-4 (arm-sae:0.3 is in 3 and 4; none in 2, 3, 4) + 4 of fig1
    for key, unit in units.items():
        assert {"train", "f1", "sae"} <= set(unit), key
        f1 = unit["f1"]
        assert f1["budgets"] == [0.25, 1.0] and f1["attack"] == "gase" and f1["samples"] == 30
        assert 0 <= f1["micro_f1"][1] <= f1["clean_micro_f1"] + 1e-9  # attacked at the larger budget: no better
        assert len(unit["sae"]["scores"]) == 30 and unit["sae"]["mean"] > 0
    assert len(units["none|seed=0"]["gase@1.0"]["flips"]) == 30
    with ResultsStore(tiny_study / "results.sqlite", readonly=True) as store:
        manifest = store.manifest()
        assert manifest["kind"] == "robust" and manifest["spec"]["name"] == "tiny"
        assert store.get_artefact("", BUDGETS_KIND)["budgets"] == [0.25, 1.0]
    assert len(list((tiny_study / "checkpoints").glob("*.safetensors"))) == 12


def test_resume_skips_finished_units_and_reuses_checkpoints(tiny_study: Path, monkeypatch) -> None:
    calls: list[str] = []
    real = runner_module.train_robust

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[2].regulariser)
        trained = real(*args, **kwargs)
        assert trained.cached  # the checkpoint in <out>/checkpoints, not a new training run
        return trained

    monkeypatch.setattr(runner_module, "train_robust", counting)
    again = run_robust_study(tiny_spec(tiny_study))
    assert again.computed == 0 and calls == []
    with ResultsStore(tiny_study / "results.sqlite") as store:  # drop one component of one unit
        unit = store.get_artefact("l2:lam=0.1|seed=0", UNIT_KIND)
        kept = copy.deepcopy(unit)
        del unit["sae"]
        store.put_artefact("l2:lam=0.1|seed=0", UNIT_KIND, unit)
    again = run_robust_study(tiny_spec(tiny_study))
    assert again.computed == 1 and calls == ["l2:lam=0.1"]
    assert _units(tiny_study)["l2:lam=0.1|seed=0"]["sae"]["scores"] == kept["sae"]["scores"]  # deterministic


def test_interrupted_study_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    spec = tiny_spec(tmp_path / "s", tables={"table3": {"regularisers": ["none", "l2:0.1", "arm-sae:0.3"]}})
    real, seen = runner_module.sae, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "sae", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_robust_study(spec)
    monkeypatch.setattr(runner_module, "sae", real)
    units = _units(tmp_path / "s")
    assert "sae" in units["none|seed=0"] and "sae" not in units["l2:lam=0.1|seed=0"]
    result = run_robust_study(spec)
    assert result.computed == 1 + 3  # l2's SAE, then arm-sae's train, f1 and SAE
    assert all("sae" in u for u in _units(tmp_path / "s").values())


def test_another_configuration_is_refused_and_added_tables_reuse_units(tiny_study: Path, tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="different configuration"):
        run_robust_study(tiny_spec(tiny_study, seeds=[1]))
    spec = tiny_spec(tmp_path / "grow", tables={"table3": {"regularisers": ["none", "l2:0.1"]}})
    assert run_robust_study(spec).computed == 6
    spec["tables"]["table4"] = {"lambdas": [0, 0.3]}
    assert run_robust_study(spec).computed == 3  # only arm-sae:0.3 is new (train, f1, sae)


def test_budget_rule_is_recorded(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path / "r", budgets={"rule": {"grid": [0.25, 0.5, 1.0, 2.0], "loss_share": 0.3}},
                     tables={"table3": {"regularisers": ["none"]}})  # fmt: skip
    result = run_robust_study(spec)
    with ResultsStore(tmp_path / "r" / "results.sqlite", readonly=True) as store:
        record = store.get_artefact("", BUDGETS_KIND)
    assert record["source"] == "rule" and record["budgets"] == result.budgets
    assert result.budgets[1] in (0.25, 0.5, 1.0, 2.0) and result.budgets[0] == pytest.approx(result.budgets[1] / 4)
    assert "0.7 x its clean value" in record["rule"] and record["attack"] == "gase"


def test_packaged_configs_validate() -> None:
    names = sorted(p.name for p in CONFIGS_DIR.glob("robust-*.yaml"))
    assert names == ["robust-demo.yaml", "robust-emotions.yaml", "robust-images.yaml", "robust-yeast.yaml"]
    assert is_robust_spec(ROBUST_DEMO_SPEC) and not is_robust_spec(CONFIGS_DIR.parent / "demo.yaml")
    for name in ("robust-demo.yaml", "robust-images.yaml"):
        load_robust_spec(CONFIGS_DIR / name)
    images = load_robust_spec(CONFIGS_DIR / "robust-images.yaml")
    assert images.attack_name == "maxflip" and len(images.tables["table3"]["regularisers"]) == 6


def test_mulan_configs_name_dataset_path_when_the_file_is_missing(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(LabelflipError, match=r"dataset\.path.*--set dataset\.path="):
        load_robust_spec(CONFIGS_DIR / "robust-yeast.yaml", sets=[f"dataset.path={tmp_path / 'yeast.arff.gz'}"])


@pytest.mark.skipif(not (SHARED_MULAN / "yeast.arff.gz").is_file(), reason="needs ../shared/data/mulan")
def test_mulan_configs_load_the_real_files() -> None:
    for name, labels in (("robust-yeast.yaml", 14), ("robust-emotions.yaml", 6)):
        spec = load_robust_spec(CONFIGS_DIR / name, sets=[f"dataset.path={SHARED_MULAN / name[7:-5]}.arff.gz"])
        data = runner_module.open_robust_dataset(spec)
        assert data.train.y.shape[1] == labels and spec.attack_name == "gase"


def test_cli_dispatch_run_and_report(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    spec = tiny_spec(tmp_path / "cli", tables={"table3": {"regularisers": ["none", "arm-sae:0.3"]}})
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    res = runner.invoke(cli.app, ["study", "run", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "robust study tiny" in res.output and "report:" in res.output
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Table 3" in html and "arm-sae" in html
    (tmp_path / "o" / "report.html").unlink()
    res = runner.invoke(cli.app, ["study", "report", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "report.html").is_file() and (tmp_path / "o" / "tables" / "robust-table3.md").is_file()
    res = runner.invoke(cli.app, ["study", "run", str(path), "--samples", "5"])
    assert res.exit_code == 2 and "--samples" in res.output
    res = runner.invoke(cli.app, ["study", "run", str(path), "--set", "train.epochs=0"])
    assert res.exit_code == 2 and "train" in res.output and not (tmp_path / "cli").exists()
    manifest = json.loads(json.dumps(_units(tmp_path / "o")))
    assert set(manifest) == {"none|seed=0", "arm-sae:lam=0.3,alpha=0.1,detach_weights=false|seed=0"}


def test_attack_study_never_discards_a_robust_store(tmp_path):
    """An attack study pointed at a robust study's directory is refused; its artefacts stay (never lost results)."""
    from labelflip._validation import LabelflipError
    from labelflip.study.store import ResultsStore

    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.init_manifest({"kind": "robust"}, "abc")
        store.put_artefact("unit", "training", {"f1": 0.5})
        with pytest.raises(LabelflipError, match=r"a robust study.*\(--out\)"):
            store.claim("def")
        assert store.get_artefact("unit", "training") == {"f1": 0.5}

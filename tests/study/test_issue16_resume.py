"""Issue 16 items 2, 3 and 6: a failed run never locks its output directory; NaN/inf budgets are refused by spec
key; resuming under another labelflip version / git hash / torch version warns and is recorded, a change of the
code that computes the numbers is refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from labelflip._validation import LabelflipError
from labelflip.study import load_spec
from labelflip.study import runner as runner_mod
from labelflip.study.runner import run_study
from labelflip.study.store import ResultsStore, engine_hash
from tests.study.test_study import tiny_spec

SMALL = {
    "samples": {"count": 4, "seed": 1},
    "methods": ["bce"],
    "seeds": [0],
    "attackability": {"per_label": 0, "images": 64},
    "profile": {"samples": 6, "interval": 5},
}


def _spec(tmp_path: Path, **extra):
    return load_spec(tiny_spec(tmp_path, **{**SMALL, **extra}))


def test_a_run_that_fails_at_its_first_unit_leaves_the_directory_reusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Today the manifest is written before the first unit: after fixing the cause, the rerun (a different
    configuration) was refused as 'a different configuration'."""
    first = _spec(tmp_path)

    def boom(*args: object, **kwargs: object) -> None:
        raise LabelflipError("a failure inside the first unit")

    monkeypatch.setattr(runner_mod, "_execute", boom)
    with pytest.raises(LabelflipError, match="first unit"):
        run_study(first)
    monkeypatch.undo()
    fixed = _spec(tmp_path, samples={"count": 5, "seed": 1})
    assert fixed.config_hash() != first.config_hash()
    with caplog.at_level(logging.WARNING, logger="labelflip.study.store"):
        ctx = run_study(fixed)
    assert ctx.computed > 0
    assert any("no results were stored" in r.getMessage() for r in caplog.records)
    with ResultsStore(Path(fixed.output) / "results.sqlite", readonly=True) as store:
        assert store.manifest()["config_hash"] == fixed.config_hash()
        assert store.count() == 5 * 3  # 5 samples x 3 budgets (tiny_spec: fractions 0.1, 0.5, 1.0)
    # a directory with stored results of another configuration is still refused
    with pytest.raises(LabelflipError, match="different configuration"):
        run_study(_spec(tmp_path, samples={"count": 3, "seed": 1}))


def test_artefacts_of_a_failed_run_are_not_reused_under_another_configuration(tmp_path: Path) -> None:
    """A run that failed on a typo'd second model had stored the first model's profile; a rerun with another
    profile size must measure it again, not reuse the stale one."""
    broken = [{"name": "tiny", "factory": f"{tmp_path / 'tiny.py'}:build"}, {"name": "typo", "factory": "nope:x"}]
    with pytest.raises(LabelflipError, match="factory"):
        run_study(_spec(tmp_path, models=broken))
    fixed = _spec(tmp_path, profile={"samples": 8, "interval": 5})
    run_study(fixed)
    with ResultsStore(Path(fixed.output) / "results.sqlite", readonly=True) as store:
        assert store.get_artefact("tiny", "profile")["num_samples"] == 8


def test_resume_under_another_version_warns_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _spec(tmp_path)
    run_study(spec)
    from labelflip.study import provenance as provenance_mod

    monkeypatch.setattr(provenance_mod, "__version__", "99.0")
    monkeypatch.setattr(provenance_mod, "git_hash", lambda: "feedface")
    monkeypatch.setattr(provenance_mod.torch, "__version__", "9.9.9")
    with caplog.at_level(logging.WARNING, logger="labelflip.study.store"):
        ctx = run_study(spec)
    assert ctx.computed == 0
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "resuming a study started under" in text and "99.0" in text and "9.9.9" in text
    with ResultsStore(Path(spec.output) / "results.sqlite", readonly=True) as store:
        manifest = store.manifest()
    assert manifest["labelflip_version"] != "99.0"  # the original provenance is kept ...
    (entry,) = manifest["resumed_with"]  # ... and the resume recorded beside it
    assert entry["labelflip_version"] == "99.0" and entry["git_hash"] == "feedface"
    assert entry["torch_version"] == "9.9.9" and entry["engine_hash"] == engine_hash()


def test_resume_under_different_engine_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path)
    run_study(spec)
    from labelflip.study import provenance as provenance_mod

    monkeypatch.setattr(provenance_mod, "engine_hash", lambda: "0123456789abcdef")
    with pytest.raises(LabelflipError, match="different labelflip code") as info:
        run_study(spec)
    assert "--out" in str(info.value)


def test_engine_hash_ignores_docstrings_and_comments() -> None:
    import ast

    from labelflip.models.checkpoints import _strip_docstrings

    a = ast.dump(_strip_docstrings(ast.parse('def f(x):\n    """doc"""\n    return x + 1  # note\n')))
    b = ast.dump(_strip_docstrings(ast.parse("def f(x):\n    return x + 1\n")))
    c = ast.dump(_strip_docstrings(ast.parse("def f(x):\n    return x + 2\n")))
    assert a == b != c
    assert len(engine_hash()) == 16


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("budgets={absolute: [.nan]}", "budgets.absolute"),
        ("budgets={fractions: [.inf]}", "budgets.fractions"),
        ("budgets={absolute: [0.01, -.inf]}", "budgets.absolute"),
        ("correlations.eps=.inf", "correlations.eps"),
        ("attackability.eps=.nan", "attackability.eps"),
    ],
)
def test_nan_and_inf_budgets_are_refused_by_spec_key(setting: str, key: str) -> None:
    with pytest.raises(LabelflipError, match=f"'{key}'"):
        load_spec(sets=[setting])

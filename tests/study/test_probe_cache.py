"""The user-level probe cache (issue 14 item 5): profiles and correlations reused only for the same model, probe
images, settings and code; off unless activated; atomic JSON files."""

from __future__ import annotations

import json

import pytest
import torch

from labelflip.analysis import Correlations, Profile
from labelflip.analysis.cache import ProbeCache, active_probe_cache, default_probe_dir, use_probe_cache
from labelflip.data import DatasetSplits, MultiLabelData
from labelflip.models import MultiLabelModel
from labelflip.study import inputs
from tests.helpers import TinyCNN, make_inputs


def _split(n: int, seed: int) -> MultiLabelData:
    y = (torch.rand(n, 8, generator=torch.Generator().manual_seed(seed)) < 0.4).float()
    return MultiLabelData(make_inputs(n, seed=seed), y, [f"l{i}" for i in range(8)])


@pytest.fixture
def data() -> DatasetSplits:
    return DatasetSplits(_split(4, 1), _split(10, 2), _split(4, 3), None, [f"l{i}" for i in range(8)])


@pytest.fixture
def model() -> MultiLabelModel:
    return MultiLabelModel(TinyCNN(k=8, seed=4))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the real measurements behind measure_profile / measure_correlations_for."""
    counts = {"profile": 0, "correlations": 0}
    real_profile, real_corr = inputs.probe_profile, inputs._measure_correlations

    def profile(*args, **kwargs):
        counts["profile"] += 1
        return real_profile(*args, **kwargs)

    def corr(*args, **kwargs):
        counts["correlations"] += 1
        return real_corr(*args, **kwargs)

    monkeypatch.setattr(inputs, "probe_profile", profile)
    monkeypatch.setattr(inputs, "_measure_correlations", corr)
    return counts


def _profile(model, data, **kw) -> Profile:
    args = {"samples": 6, "seed": 0, "interval": 5, "fingerprint": "fp-a", **kw}
    return inputs.measure_profile(model, data, **args)


def test_profile_hit_on_the_second_call_and_miss_on_any_change(model, data, calls, tmp_path, monkeypatch) -> None:
    said: list[str] = []
    cache = ProbeCache(tmp_path, notify=said.append)
    with use_probe_cache(cache):
        first = _profile(model, data)
        again = _profile(model, data)
        assert calls["profile"] == 1 and again.to_dict() == first.to_dict()
        assert len(said) == 1 and said[0].startswith("reusing cached profile (") and str(tmp_path) in said[0]
        _profile(model, data, samples=7)  # another probe size
        _profile(model, data, fingerprint="fp-b")  # another model
        _profile(model, data, interval=4)  # another setting
        _profile(model, data, exclude=torch.tensor([0, 1]))  # other probe images
        assert calls["profile"] == 5
        monkeypatch.setattr(inputs, "engine_hash", lambda: "changed-code")
        _profile(model, data)  # the code changed
        assert calls["profile"] == 6
        _profile(model, data, fingerprint=None)  # an unidentified model is never cached
        _profile(model, data, fingerprint=None)
        assert calls["profile"] == 8
    assert len(said) == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 6 and all(f.startswith("profile-fp-") and f.endswith(".json") for f in files)


def test_nothing_cached_unless_a_cache_is_active(model, data, calls, tmp_path) -> None:
    assert active_probe_cache() is None
    _profile(model, data)
    _profile(model, data)
    with use_probe_cache(None):  # --no-cache
        _profile(model, data)
    assert calls["profile"] == 3 and active_probe_cache() is None


def test_correlations_hit_and_miss(model, data, calls, tmp_path) -> None:
    def corr(**kw) -> Correlations:
        args = {"samples": 4, "seed": 0, "eps": 0.01, "fingerprint": "fp-a", **kw}
        return inputs.measure_correlations_for(model, data, **args)

    with use_probe_cache(ProbeCache(tmp_path)):
        first = corr()
        assert torch.equal(corr().flipup, first.flipup) and calls["correlations"] == 1
        corr(samples=5)
        corr(eps=0.02)
        corr(flipdown=True)
        assert calls["correlations"] == 4


def test_unusable_entries_are_misses_and_writes_are_atomic(model, data, calls, tmp_path) -> None:
    cache = ProbeCache(tmp_path)
    with use_probe_cache(cache):
        _profile(model, data)
        (path,) = tmp_path.iterdir()
        path.write_text("{not json")
        _profile(model, data)  # recomputed, file rewritten
        entry = json.loads(path.read_text())
        assert calls["profile"] == 2 and entry["format"] == "labelflip.probe-cache/1"
        entry["identity"]["fingerprint"] = "another"  # same file name, another identity (a collision)
        path.write_text(json.dumps(entry))
        _profile(model, data)
        assert calls["profile"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_default_directory_follows_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABELFLIP_PROBE_CACHE", str(tmp_path / "probes-here"))
    assert ProbeCache().directory == tmp_path / "probes-here"
    monkeypatch.delenv("LABELFLIP_PROBE_CACHE")
    monkeypatch.setenv("LABELFLIP_CACHE", str(tmp_path / "zoo"))
    assert default_probe_dir() == tmp_path / "zoo" / "probes"


def test_study_progress_reports_profile_steps(model, data) -> None:
    seen: list[tuple[str, int, int]] = []
    prof = _profile(model, data, max_steps=200, progress=lambda *a: seen.append(a), label="m profile")
    assert seen and all(label == "m profile" and total == 200 for label, _, total in seen)
    assert seen[-1][1] == round(prof.eps[-1] / prof.alpha)  # the last step probed is always reported

"""eps_max's bootstrap interval over the probe images (issue 14 item 4): the vectorised stopping rule, the
interval, determinism, no global RNG, and profiles saved before the per-image flips were recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from labelflip._validation import LabelflipError
from labelflip.analysis import Profile, probe_profile, stopping_rule
from labelflip.analysis.profile_ci import bootstrap_eps_max, first_stop
from tests.helpers import TinyCNN, make_inputs

_NEW_FIELDS = ("image_flips_bce", "image_flips_linear", "eps_max_ci", "ci_resamples")


@pytest.fixture(scope="module")
def profile() -> Profile:
    return probe_profile(TinyCNN(k=8, seed=2), make_inputs(12, seed=2), interval=5, norm="l2")


def _scalar_first_stop(curve: np.ndarray, rel_tol: float) -> int:
    for i in range(2, curve.size + 1):
        if stopping_rule(list(curve[:i]), rel_tol=rel_tol) is not None:
            return i - 1
    return -1


@pytest.mark.parametrize("rel_tol", [0.01, 0.3])
def test_vectorised_rule_is_the_stopping_rule(rel_tol: float) -> None:
    rng = np.random.default_rng(5)
    for _ in range(40):
        points = int(rng.integers(1, 25))
        curves = np.cumsum(rng.choice([0.0, 0.0, 1.0, 2.5, -1.0, 0.001], size=(points, 6)), axis=0)
        got = first_stop(curves, rel_tol=rel_tol)
        assert got.tolist() == [_scalar_first_stop(curves[:, r], rel_tol) for r in range(6)]


def test_probe_records_per_image_flips_whose_means_are_the_curves(profile: Profile) -> None:
    bce, lin = np.asarray(profile.image_flips_bce), np.asarray(profile.image_flips_linear)
    assert bce.shape == lin.shape == (len(profile.eps), profile.num_samples)
    np.testing.assert_array_equal(bce.mean(1), profile.flips_bce)
    np.testing.assert_array_equal(np.maximum(bce.mean(1), lin.mean(1)), profile.flips)
    # The identity resample reproduces eps_max exactly (same rule, same arithmetic).
    assert profile.eps[int(first_stop(np.asarray(profile.flips)[:, None], rel_tol=profile.rel_tol)[0])] == (
        profile.eps_max
    )


def test_interval_contains_eps_max_is_seeded_and_leaves_global_rng_alone(profile: Profile) -> None:
    low, high = profile.eps_max_ci
    assert low <= profile.eps_max <= high and low < high  # this probe's images disagree
    assert profile.ci_resamples == 1000
    np_state = np.random.get_state()[1].copy()  # noqa: NPY002  (checking the global RNG is left alone)
    torch_state = torch.random.get_rng_state().clone()
    again = profile.bootstrap_eps_max()  # the probe's own seed: the stored interval
    assert again == profile.eps_max_ci
    assert profile.bootstrap_eps_max(seed=7) == profile.bootstrap_eps_max(seed=7)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    narrow = profile.bootstrap_eps_max(level=0.5)
    assert low <= narrow[0] <= narrow[1] <= high


def test_identical_images_give_a_point_interval_and_censoring_is_counted() -> None:
    eps = [0.0, 1.0, 2.0, 3.0, 4.0]
    same = [[0, 0, 0], [2, 2, 2], [3, 3, 3], [3, 3, 3], [3, 3, 3]]  # stops at point 3 whatever the resample
    (low, high), star, censored = bootstrap_eps_max(eps, [same], resamples=50, seed=0)
    assert low == high == 3.0 and censored == 0.0 and star.shape == (50,)
    rising = [[0, 0], [1, 2], [2, 4], [3, 6], [4, 8]]  # never saturates: every resample censored at the last eps
    (low, high), _, censored = bootstrap_eps_max(eps, [rising], resamples=50, seed=0)
    assert censored == 1.0 and low == high == 4.0
    with pytest.raises(LabelflipError, match="resamples"):
        bootstrap_eps_max(eps, [same], resamples=3)
    with pytest.raises(LabelflipError, match="image_flips"):
        bootstrap_eps_max(eps, [same, [[0, 0]]])


def test_round_trip_and_a_profile_saved_before_the_interval(profile: Profile, tmp_path) -> None:
    back = Profile.load(profile.save(tmp_path / "p.json"))
    assert back.eps_max_ci == profile.eps_max_ci and isinstance(back.eps_max_ci, tuple)
    assert back.bootstrap_eps_max() == profile.eps_max_ci
    old = {k: v for k, v in profile.to_dict().items() if k not in _NEW_FIELDS}
    (tmp_path / "old.json").write_text(json.dumps(old))
    legacy = Profile.load(tmp_path / "old.json")
    assert legacy.eps_max == profile.eps_max and legacy.eps_max_ci is None and legacy.image_flips_bce is None
    assert legacy.eps_max_text() == f"eps_max = {profile.eps_max:.3g} ({profile.num_samples} probe images)"
    with pytest.raises(LabelflipError, match="re-probe"):
        legacy.bootstrap_eps_max()


def test_eps_max_text_names_interval_and_probe_size(profile: Profile) -> None:
    low, high = profile.eps_max_ci
    assert profile.eps_max_text() == (
        f"eps_max = {profile.eps_max:.3g} (95% CI {low:.3g}-{high:.3g}, {profile.num_samples} probe images)"
    )

"""Flip profile: the stopping rule on known curves, the polynomial fit, the probe, and the JSON artefact."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from labelflip._validation import LabelflipError
from labelflip.analysis import Profile, fit_profile_polynomial, probe_profile, stopping_rule
from labelflip.losses import SLAMLoss
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def test_stopping_rule_one_percent_of_first_increment() -> None:
    assert stopping_rule([0, 10, 15, 17], min_points=2) is None  # 2/10 = 20 %
    assert stopping_rule([0, 10, 15, 17, 17.05], min_points=2) == "converged"  # 0.05/10 < 1 %
    assert stopping_rule([0, 10, 15, 17, 17.1], min_points=2) is None  # exactly 1 % is not < 1 %


def test_stopping_rule_guards() -> None:
    # zero first increment: no division by zero; the first positive increment is the reference
    assert stopping_rule([0, 0, 0], min_points=2) is None
    assert stopping_rule([0, 0, 4, 4.01], min_points=2) == "converged"
    assert stopping_rule([0, 0, 4, 6], min_points=2) is None
    # a negative dip stops (the curve has peaked)
    assert stopping_rule([0, 5, 8, 7.9], min_points=2) == "dip"
    # never before min_points
    assert stopping_rule([0, 5, 5], min_points=4) is None
    assert stopping_rule([0, 5, 5, 5], min_points=4) == "converged"


def test_fit_recovers_known_polynomial() -> None:
    coefs = [0.5, 300.0, -4000.0, 20000.0, -30000.0]
    eps = np.linspace(0, 0.1, 12)
    flips = np.polynomial.polynomial.polyval(eps, coefs)
    fitted = fit_profile_polynomial(eps, flips, order=4)
    assert np.allclose(fitted, coefs, rtol=1e-6, atol=1e-6)
    cubic = fit_profile_polynomial(eps, np.polynomial.polynomial.polyval(eps, coefs[:4]), order=3)
    assert np.allclose(cubic, coefs[:4], rtol=1e-6, atol=1e-6)


def test_fit_needs_enough_points() -> None:
    with pytest.raises(LabelflipError, match="'eps'"):
        fit_profile_polynomial([0.0, 0.1, 0.2], [0, 1, 2], order=4)


@pytest.fixture(scope="module")
def probed() -> Profile:
    model = MultiLabelModel(TinyCNN(k=12, seed=2))
    return probe_profile(model, make_inputs(24, seed=3), interval=5, max_steps=512, seed=3)


def test_probe_profile_points_and_rule(probed: Profile) -> None:
    p = probed
    assert p.eps[0] == 0.0 and p.flips[0] == 0.0
    assert len(p.eps) == len(p.flips) == len(p.flips_bce) == len(p.flips_linear) >= p.order + 2
    steps = [round(e / p.alpha) for e in p.eps]
    assert steps == [5 * j for j in range(len(steps))]
    assert p.flips == [max(a, b) for a, b in zip(p.flips_bce, p.flips_linear, strict=True)]
    assert p.stop_reason in ("converged", "dip")
    # eps_max is where the rule first fired (SPEC.md); later points only feed the fit
    first = next(j for j in range(2, len(p.flips) + 1) if stopping_rule(p.flips[:j], rel_tol=p.rel_tol))
    assert stopping_rule(p.flips[:first], rel_tol=p.rel_tol) == p.stop_reason
    assert p.eps_max == p.eps[first - 1] and len(p.eps) == max(first, p.order + 2)
    assert np.allclose(p.coefficients, fit_profile_polynomial(p.eps, p.flips, p.order))


def test_profile_curve_points_equal_separate_attacks(probed: Profile) -> None:
    """Iteration k of the probe trajectory == a separate attack with eps = k * alpha (prefix property)."""
    from labelflip.attacks import MIFGSM

    model = MultiLabelModel(TinyCNN(k=12, seed=2))
    x = make_inputs(24, seed=3)
    res = MIFGSM(model, "bce")(x, probed.eps)
    assert np.allclose(res.mean_flips().numpy(), probed.flips_bce)


def test_bce_curve_mode_skips_linear() -> None:
    model = MultiLabelModel(TinyCNN(k=12, seed=2))
    p = probe_profile(model, make_inputs(24, seed=3), interval=5, curve="bce", max_steps=512)
    assert p.flips_linear == [] and p.flips == p.flips_bce


def test_profile_round_trip_and_slam(tmp_path, probed: Profile) -> None:
    path = probed.save(tmp_path / "p.json")
    loaded = Profile.load(path)
    assert loaded == probed
    assert json.loads(path.read_text())["format"] == "labelflip.profile/1"
    slam = SLAMLoss(profile=loaded)
    assert slam.eps_max == probed.eps_max
    assert math.isclose(slam.flip_estimate(0.01), float(probed.estimate(0.01)))
    budgets = probed.budgets()
    assert (
        len(budgets) == 7
        and math.isclose(budgets[-1], probed.eps_max)
        and math.isclose(budgets[0], 0.05 * probed.eps_max)
    )

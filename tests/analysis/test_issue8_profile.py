"""Issue 8 in the flip profile: the cap is a number of steps (item 1), ``eps_max`` is where the stop rule first
fired (item 6), capped profiles are refused unless accepted, and malformed profile JSON names its fields."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from labelflip._validation import LabelflipError, LabelflipWarning
from labelflip.analysis import DEFAULT_MAX_STEPS, Profile, check_profile, probe_profile, stopping_rule
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def _instant_model() -> MultiLabelModel:
    """logits_j = 1000 (x_j - 0.5) + 0.1 on (N, 4) inputs at 0.5: one L-inf step flips every label, so the flip
    curve is [0, 4, 4, ...] and the 1 % rule fires at the second measurement."""
    lin = nn.Linear(4, 4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4) * 1000.0)
        lin.bias.fill_(-500.0 + 0.1)
    return MultiLabelModel(lin)


def test_eps_max_is_where_the_rule_first_fired_extra_points_feed_the_fit() -> None:
    x = torch.full((3, 4), 0.5, dtype=torch.float64)
    p = probe_profile(_instant_model(), x, interval=1, order=4)
    assert p.flips[:3] == [0.0, 4.0, 4.0]
    assert stopping_rule(p.flips[:3]) == "converged" and stopping_rule(p.flips[:2]) is None
    assert p.eps_max == p.eps[2] == 2 / 2560  # the rule fired at the 3rd point (the old probe: eps[5] = 5/2560)
    assert len(p.eps) == p.order + 2  # min_points: the extra points are kept for the fit
    q = probe_profile(_instant_model(), x, interval=1, order=1, min_points=4)
    assert len(q.eps) == 4 and q.eps_max == 2 / 2560


def test_probe_cap_is_in_steps_for_both_norms() -> None:
    model = MultiLabelModel(TinyCNN(k=6, seed=1))
    x = make_inputs(4, seed=2, shape=(3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelflipWarning)
        profs = {
            n: probe_profile(model, x, interval=5, max_steps=15, rel_tol=0.0, order=2, norm=n) for n in ("linf", "l2")
        }
    for norm, p in profs.items():
        assert p.max_steps == 15 and p.stop_reason == "cap", norm
        assert [round(e / p.alpha) for e in p.eps] == [0, 5, 10, 15], norm  # 15 steps, whatever the step size
    assert profs["l2"].alpha == pytest.approx(32 / 2560)  # alpha * sqrt(H W): the old 0.5 cap = only 40 steps
    assert DEFAULT_MAX_STEPS >= 1000  # never binds for the built-in models (they converge after 500-800 steps)


def test_capped_probe_warns_and_is_refused_by_check_profile() -> None:
    model = MultiLabelModel(TinyCNN(k=6, seed=1))
    with pytest.warns(LabelflipWarning, match="cap max_steps=10"):
        p = probe_profile(model, make_inputs(4), interval=5, max_steps=10, rel_tol=0.0, order=1)
    assert p.stop_reason == "cap"
    with pytest.raises(LabelflipError, match=r"'my profile'.*stopped at its cap.*max_steps=10"):
        check_profile(p, owner="test", name="my profile")
    with pytest.warns(LabelflipWarning, match="used as allowed"):
        ok = check_profile(p, owner="test", allow_capped=True)
    assert ok.cap_accepted and not p.cap_accepted
    with pytest.raises(LabelflipError, match="K = 7"):
        check_profile(ok, owner="test", num_labels=7)
    with pytest.raises(LabelflipError, match="fingerprint abc"):
        check_profile(Profile.from_dict({**p.to_dict(), "model_fingerprint": "xyz"}), owner="t", fingerprint="abc")


def test_profile_json_with_wrong_fields_names_them(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "labelflip.profile/1", "eps_max": 0.1, "epsilon": [0.0]}))
    with pytest.raises(
        LabelflipError, match=r"missing fields alpha, coefficients, curve.*unknown fields epsilon.*labelflip"
    ):
        Profile.load(path)

"""compare_at_baseline_norms (seed Table VII): each method at each baseline example's own norm equals attacking that
sample alone at that budget; bad inputs are refused before any work."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from labelflip import LabelflipError
from labelflip.analysis.correlation import Correlations
from labelflip.attacks import MIFGSM, SLAMAttack, create_attack
from labelflip.attacks.baselines import MLDeepFool, compare_at_baseline_norms
from labelflip.attacks.baselines.compare import _baseline_columns
from labelflip.estimate import PolynomialEstimate
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs

PROFILE = PolynomialEstimate((0.0, 100.0), 0.04)


@pytest.fixture
def setup() -> tuple[MultiLabelModel, torch.Tensor]:
    return MultiLabelModel(TinyCNN()), make_inputs(3)


def baseline(model: MultiLabelModel, x: torch.Tensor, eps: tuple[float, ...] = (0.01, 0.3), check: bool = True):
    """ML-DeepFool on each sample's label closest to its threshold (weights): small, distinct norms."""
    with torch.no_grad(), model.eval_mode():
        closest = model(x).abs().argmin(dim=1)
    weights = torch.nn.functional.one_hot(closest, 6).float()
    res = MLDeepFool(model, steps=5)(x, eps=list(eps), weights=weights)  # 0.3 covers every norm (checked)
    if check:
        assert res.extra["status"] == ["success"] * x.shape[0] and float(res.min_norm.max()) <= 0.3
        assert len(set(res.min_norm.tolist())) == x.shape[0]
    return res


def test_each_sample_at_its_own_norm_equals_a_separate_attack(setup) -> None:
    model, x = setup
    base = baseline(model, x)
    out = compare_at_baseline_norms(model, x, base, methods=("bce", "slam"), profile=PROFILE)
    assert torch.equal(out.norms, base.min_norm) and torch.equal(out.baseline_flips, base.flips[1])
    assert set(out.flips) == {"BCE", "SLAM"} and out.methods == {"BCE": "bce", "SLAM": "slam"}
    for label, attack in (("BCE", MIFGSM(model, "bce")), ("SLAM", SLAMAttack(model, PROFILE))):
        for i in range(x.shape[0]):
            eps = float(base.min_norm[i])
            alone = attack(x[i : i + 1], eps, weights=base.weights[i : i + 1])
            assert int(out.flips[label][i]) == int(alone.flips[0, 0]), (label, i)
            assert float(out.achieved[label][i]) == pytest.approx(float(alone.linf[0, 0]), abs=1e-7)
            assert float(out.achieved[label][i]) <= eps + 1e-7
    rows = out.summary()
    assert [r["method"] for r in rows] == [base.loss, "BCE", "SLAM"]
    assert rows[1]["mean_flips"] == pytest.approx(float(out.flips["BCE"].double().mean()))


def test_other_methods_run_once_per_distinct_norm(setup) -> None:
    model, x = setup
    base = baseline(model, x)
    gen = torch.Generator().manual_seed(0)
    corr = Correlations(flipup=torch.rand(6, 6, generator=gen, dtype=torch.float64), eps=0.005, num_samples=4)
    out = compare_at_baseline_norms(model, x, base, methods=("class:0.5",), profile=PROFILE, correlations=corr)
    attack = create_attack("class:0.5", model, profile=PROFILE, correlations=corr)
    for i in range(x.shape[0]):
        alone = attack(x[i : i + 1], float(base.min_norm[i]), sample_ids=[i], weights=base.weights[i : i + 1])
        assert int(out.flips["CLASS(γ=0.5)"][i]) == int(alone.flips[0, 0])


def test_bad_inputs_are_refused(setup) -> None:
    model, x = setup
    base = baseline(model, x)
    exact = dataclasses.replace(base, eps=torch.tensor([0.01, float(base.min_norm.max())], dtype=torch.float64))
    norms, flips = _baseline_columns(exact, x.shape[0], "linf")  # a budget equal to the largest norm clips nothing
    assert torch.equal(norms, base.min_norm) and torch.equal(flips, base.flips[1])
    with pytest.raises(LabelflipError, match="profile"):
        compare_at_baseline_norms(model, x, base)  # SLAM without a profile: refused before any attack runs
    with pytest.raises(LabelflipError, match="baseline_result"):
        compare_at_baseline_norms(model, x, MIFGSM(model)(x, 0.01))  # not a minimum-norm result
    with pytest.raises(LabelflipError, match="baseline_result"):
        compare_at_baseline_norms(model, x, baseline(model, x, (1e-4,), check=False))  # no budget covers the norms
    with pytest.raises(LabelflipError, match="baseline_result"):
        compare_at_baseline_norms(model, x[:2], base)
    with pytest.raises(LabelflipError, match="'x'"):
        compare_at_baseline_norms(model, make_inputs(3, seed=7), base)
    with pytest.raises(LabelflipError, match="norm"):
        compare_at_baseline_norms(model, x, base, norm="l2")
    with pytest.raises(LabelflipError, match="methods"):
        compare_at_baseline_norms(model, x, base, methods="bce")
    with pytest.raises(LabelflipError):
        compare_at_baseline_norms(model, x, base, methods=("nonsense",))

"""GASE (a reconstruction) and the exact references for linear models: the min-norm oracle against an independent
solver, the MILP against enumeration, GASE against exhaustive enumeration (the gap is printed), the attack-based
oracle bounded by the exact maximum, and the real yeast data (skipped where ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from labelflip import LabelflipError
from labelflip.attacks import MIFGSM
from labelflip.estimators import exact_max_flips, gase, milp_max_flips, min_norm_linear
from labelflip.estimators.exact import enumerate_max_flips
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mulan"


def _linear(w: np.ndarray, b: np.ndarray) -> MultiLabelModel:
    lin = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    return MultiLabelModel(lin, bounds=(-100.0, 100.0))


def _problem(seed: int, m: int = 8, d: int = 6, n: int = 12, aligned: float = 0.5):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(d)
    w = aligned * shared + rng.standard_normal((m, d))  # partly aligned boundaries: transfer happens
    b = rng.standard_normal(m)
    x = rng.standard_normal((n, d))
    return _linear(w, b), torch.from_numpy(x), w, b


def _slsqp_min_norm(v: np.ndarray, mu: np.ndarray, kappa: float) -> np.ndarray:
    cons = [{"type": "ineq", "fun": (lambda r, j=j: -(v[j] @ r) - mu[j] - kappa)} for j in range(len(mu))]
    return minimize(lambda r: r @ r, np.zeros(v.shape[1]), jac=lambda r: 2 * r, constraints=cons, method="SLSQP").x


def test_exact_l2_oracle_matches_an_independent_solver() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        k, d = rng.integers(1, 5), 6
        v, mu = rng.standard_normal((k, d)), rng.uniform(0.1, 2.0, k)
        r = min_norm_linear(v, mu, kappa=1e-4)
        assert r is not None and (v @ r <= -(mu + 1e-4) + 1e-9).all()
        # KKT certificate of optimality: r = -V_A^T lam with lam >= 0 on the active constraints
        active = np.abs(v @ r + mu + 1e-4) <= 1e-7
        lam, *_ = np.linalg.lstsq(-v[active].T, r, rcond=None)
        assert (lam >= -1e-8).all() and np.allclose(-v[active].T @ lam, r, atol=1e-7)
        # and no feasible point found by SLSQP is shorter
        other = _slsqp_min_norm(v, mu, 1e-4)
        if (v @ other <= -(mu + 1e-4) + 1e-7).all():
            assert np.linalg.norm(r) <= np.linalg.norm(other) + 1e-6
            assert np.linalg.norm(r) == pytest.approx(np.linalg.norm(other), rel=1e-3)
    v = np.array([[3.0, 4.0]])
    assert np.linalg.norm(min_norm_linear(v, np.array([2.0]), kappa=0.0)) == pytest.approx(0.4)  # mu / ||v||
    assert min_norm_linear(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([1.0, 1.0])) is None  # opposite labels


def test_exact_linf_oracle_and_box() -> None:
    v, mu = np.array([[3.0, -4.0]]), np.array([2.0])
    r = min_norm_linear(v, mu, norm="linf", kappa=0.0)
    assert np.abs(r).max() == pytest.approx(2.0 / 7.0)  # mu / ||v||_1
    boxed = min_norm_linear(v, mu, norm="l2", kappa=0.0, lower=np.array([-0.1, -1.0]), upper=np.array([0.1, 1.0]))
    assert boxed is not None and abs(boxed[0]) <= 0.1 + 1e-9 and v @ boxed <= -2.0 + 1e-8
    assert np.linalg.norm(boxed) > 0.4  # the box makes the cheapest direction unavailable


def test_milp_equals_enumeration_and_bounds_any_attack() -> None:
    model, x, _, _ = _problem(1, m=6, n=6)
    for eps in (0.1, 0.3):
        milp = exact_max_flips(model, x, eps, norm="linf")
        enum = exact_max_flips(model, x, eps, norm="linf", method="enumerate")
        assert torch.equal(milp.flips, enum.flips)
        assert (milp.perturbation.abs().amax(dim=1) <= eps + 1e-9).all()
        attack = MIFGSM(model, "bce", alpha=eps / 20)(x, eps)  # no attack beats the exact maximum
        assert (attack.flips[0] <= milp.flips).all()
        gl = gase(model, x, eps, norm="linf")
        assert (gl.flips <= milp.flips).all()


def test_gase_against_exhaustive_enumeration_small_linear() -> None:
    gaps, totals = [], []
    for seed in range(4):
        model, x, _, _ = _problem(seed, m=9, d=7, n=10)
        for eps in (0.3, 0.8):
            g = gase(model, x, eps)
            ex = exact_max_flips(model, x, eps)
            assert (g.norms <= eps * (1 + 1e-6)).all()
            assert (g.flips <= ex.flips).all()  # the exact maximum is an upper bound
            with torch.no_grad():  # the reported flips are real flips of the model
                adv = model(x + g.perturbation) > 0
            assert torch.equal((adv != (model(x) > 0)).sum(1), g.flips)
            gaps.append((ex.flips - g.flips).double())
            totals.append(ex.flips.double())
    gap = torch.cat(gaps)
    share = float((gap == 0).double().mean())
    print(f"GASE vs exhaustive (m=9): mean gap {gap.mean():.3f} labels, max {gap.max():.0f}, exact on {share:.0%}")
    print(f"of samples; mean exact C* {torch.cat(totals).mean():.2f}")
    assert share >= 0.85 and gap.mean() <= 0.2


def test_ground_truth_labels_and_label_subsets() -> None:
    model, x, w, b = _problem(5, m=6, n=8)
    with torch.no_grad():
        pred = (model(x) > 0).double()
    truth = pred.clone()
    truth[:, 0] = 1 - truth[:, 0]  # label 0 is wrong on every sample
    assert (gase(model, x, 0.0, y=truth).flips == 1).all()  # Eq. 1 counts it at zero budget
    assert (gase(model, x, 0.0).flips == 0).all()
    sub = gase(model, x, 0.5, labels=[1, 3, 4])
    assert sub.flipped.shape == (8, 3) and (sub.flips <= 3).all()
    ex = exact_max_flips(model, x, 0.5, labels=[1, 3, 4])
    assert (sub.flips <= ex.flips).all()
    direct = enumerate_max_flips(*_vmu(w[[1, 3, 4]], b[[1, 3, 4]], x[0].numpy()), 0.5)
    assert direct.count == int(ex.flips[0])


def _vmu(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = w @ x + b
    y = np.where(h > 0, 1.0, -1.0)
    return y[:, None] * w, y * h, y


def test_attack_oracle_on_deep_and_linear_models() -> None:
    model, x, _, _ = _problem(2, m=6, n=6)
    exact = exact_max_flips(model, x, 0.8)
    by_attack = gase(model, x, 0.8, oracle="attack", attack_options={"alpha": 0.04})
    assert by_attack.oracle.startswith("attack") and (by_attack.flips <= exact.flips).all()
    assert by_attack.flips.sum() >= 0.6 * exact.flips.sum()
    deep = MultiLabelModel(TinyCNN(k=6))
    xs = make_inputs(4)
    res = gase(deep, xs, 0.5, attack_options={"alpha": 0.05})
    assert res.oracle == "attack:bce" and (res.norms <= 0.5 + 1e-5).all()
    assert (xs + res.perturbation).min() >= 0 and (xs + res.perturbation).max() <= 1
    with torch.no_grad():
        flipped = deep.predict(xs + res.perturbation) != deep.predict(xs)
    assert torch.equal(flipped.sum(1), res.flips) and res.flips.sum() > 0
    assert (gase(deep, xs, 0.0).flips == 0).all()
    with pytest.raises(LabelflipError, match="oracle"):
        gase(deep, xs, 0.5, oracle="exact")
    with pytest.raises(LabelflipError, match="enumerate"):
        exact_max_flips(model, x, 0.5, method="milp")


def test_milp_direct() -> None:
    v, mu, y = _vmu(np.array([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]]), np.array([0.2, 0.2, 0.1]), np.zeros(2))
    res = milp_max_flips(v, mu, y, 0.25)
    assert res.count == 2 and set(res.subset) == {0, 1}  # label 2 points the other way


@pytest.mark.skipif(not (SHARED / "yeast.arff.gz").is_file(), reason="../shared/data/mulan is absent")
def test_yeast_gase_matches_enumeration_on_a_label_subset() -> None:
    from labelflip.data import load_mulan
    from labelflip.robust import RobustTrainConfig, train_robust

    splits = load_mulan(SHARED / "yeast.arff.gz")
    trained = train_robust("linear_multilabel", splits, RobustTrainConfig(epochs=4, patience=0))
    x, labels = splits.test.x[:10], list(range(10))
    g = gase(trained.model, x, 1.0, labels=labels)
    ex = exact_max_flips(trained.model, x, 1.0, labels=labels)
    gap = (ex.flips - g.flips).double()
    print(f"yeast, 10 labels, eps=1: GASE {g.mean():.2f} vs exact {ex.mean():.2f} (mean gap {gap.mean():.3f})")
    assert (gap >= 0).all() and gap.mean() <= 0.2


def test_numpy_and_torch_marginal_costs_agree() -> None:
    from labelflip.estimators.gase import _costs_np, marginal_costs

    rng = np.random.default_rng(3)
    v = rng.standard_normal((7, 5))
    v[3] = 2 * v[0]  # aligned with a tight label: zero or infinite marginal cost
    rho = rng.uniform(-0.5, 1.0, 7)
    rho[3] = 0.0
    tight = np.array([True, True, False, False, False, False, False])
    cand = ~tight
    gram = v @ v.T
    ref = marginal_costs(
        torch.from_numpy(v)[None],
        torch.from_numpy(rho)[None],
        torch.from_numpy(tight)[None],
        torch.from_numpy(cand)[None],
    )[0].numpy()
    got = _costs_np(gram, np.diag(gram), rho, np.flatnonzero(tight), cand)
    assert np.allclose(np.nan_to_num(ref, posinf=-1), np.nan_to_num(got, posinf=-1), rtol=1e-6, atol=1e-9)
    assert np.isinf(got[tight]).all() and got[3] == 0.0

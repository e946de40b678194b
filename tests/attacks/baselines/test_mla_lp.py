"""MLA-LP: the LP against exact small cases (closed form, SciPy's LP on the full problem, a brute-force grid), the L2
step against SLSQP, the attack on linear and tiny models, reduction, workers and every failure path."""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from labelflip import LabelflipError
from labelflip.attacks import create_attack
from labelflip.attacks.baselines import MLALP, min_l2_step, min_linf_step
from labelflip.attacks.baselines import mla_lp as mla_lp_module
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def full_lp(a: np.ndarray, delta: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """The published LP in one go (an independent formulation): min z s.t. a r <= delta, |r_i| <= z, box."""
    m, d = a.shape
    eye, ones = sp.identity(d), np.ones((d, 1))
    a_ub = sp.vstack(
        [sp.hstack([sp.csr_matrix(a), np.zeros((m, 1))]), sp.hstack([eye, -ones]), sp.hstack([-eye, -ones])]
    )
    res = linprog(
        np.r_[np.zeros(d), 1.0], A_ub=a_ub, b_ub=np.r_[delta, np.zeros(2 * d)], bounds=np.r_[np.c_[lo, hi], [[0, None]]]
    )
    assert res.status == 0
    return float(res.x[-1])


def box(d: int, x: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    return np.full(d, -x), np.full(d, 1 - x)


@pytest.mark.parametrize("search", ["secant", "bisect"])
def test_single_row_matches_the_closed_form(search: str) -> None:
    """min ||r||_inf s.t. w.r <= -c (c > 0) is c / ||w||_1 when the box does not bind."""
    w = np.array([1.0, -2.0, 0.5, 0.25, 0.0])
    lo, hi = box(5)
    sol = min_linf_step(w[None], np.array([-0.3]), lo, hi, search=search, rtol=1e-6)
    assert sol.status == "optimal"
    assert sol.z == pytest.approx(0.3 / 3.75, rel=1e-5)
    assert float(w @ sol.r) <= -0.3 + 1e-7 and float(np.abs(sol.r).max()) <= sol.z + 1e-9


def test_several_rows_match_the_full_lp_and_a_brute_force_grid() -> None:
    rng = np.random.default_rng(3)
    for trial in range(4):
        a = rng.normal(size=(3, 7))
        delta = -rng.random(3) * 0.5
        lo, hi = box(7, 0.4 + 0.1 * trial)
        exact = full_lp(a, delta, lo, hi)
        for search in ("secant", "bisect"):
            sol = min_linf_step(a, delta, lo, hi, search=search, rtol=1e-6)
            assert sol.status == "optimal" and sol.z == pytest.approx(exact, rel=1e-5)
            assert np.all(a @ sol.r <= delta + 1e-7) and np.all(sol.r >= lo - 1e-9) and np.all(sol.r <= hi + 1e-9)
    # d = 2, two rows: brute force over a fine grid of r
    a = np.array([[1.0, 0.5], [-0.3, 1.0]])
    delta = np.array([-0.2, -0.1])
    lo, hi = box(2)
    grid = np.linspace(-0.5, 0.5, 1001)
    r1, r2 = np.meshgrid(grid, grid)
    ok = (a[0, 0] * r1 + a[0, 1] * r2 <= delta[0]) & (a[1, 0] * r1 + a[1, 1] * r2 <= delta[1])
    brute = float(np.maximum(np.abs(r1), np.abs(r2))[ok].min())
    sol = min_linf_step(a, delta, lo, hi, rtol=1e-6)
    assert sol.z == pytest.approx(brute, abs=1e-3) and sol.z <= brute + 1e-9


def test_box_binds_and_infeasibility_is_detected() -> None:
    """With x near the top of the range only downward room is large; conflicting rows are infeasible."""
    a = np.array([[1.0, 1.0]])
    lo, hi = np.array([-0.9, -0.9]), np.array([0.05, 0.05])  # x = 0.95: up by at most 0.05
    sol = min_linf_step(a, np.array([-0.3]), lo, hi)
    assert sol.z == pytest.approx(full_lp(a, np.array([-0.3]), lo, hi), rel=1e-3)
    up = min_linf_step(-a, np.array([-0.3]), lo, hi)  # needs r1 + r2 >= 0.3: impossible with r <= 0.05
    assert up.status == "infeasible" and up.r is None and list(up.violated) == [0]
    conflict = min_linf_step(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([-0.1, -0.1]), *box(2))
    assert conflict.status == "infeasible"
    trivial = min_linf_step(a, np.array([0.2]), lo, hi)  # r = 0 satisfies it
    assert trivial.status == "optimal" and trivial.z == 0.0 and trivial.solves == 0


def test_l2_step_matches_the_closed_form_and_slsqp() -> None:
    w = np.array([1.0, -2.0, 0.5, 0.25])
    lo, hi = box(4)
    sol = min_l2_step(w[None], np.array([-0.3]), lo, hi)
    assert sol.status == "optimal" and sol.z == pytest.approx(0.3 / np.linalg.norm(w), rel=1e-8)
    rng = np.random.default_rng(0)
    a, delta = rng.normal(size=(4, 30)) * 0.2, -rng.random(4)
    lo, hi = box(30, 0.3)  # the box binds
    sol = min_l2_step(a, delta, lo, hi)
    cons = {"type": "ineq", "fun": lambda r: delta - a @ r, "jac": lambda r: -a}
    bounds = list(zip(lo, hi, strict=True))
    opts = {"maxiter": 500, "ftol": 1e-14}
    ref = minimize(
        lambda r: (0.5 * r @ r, r),
        np.zeros(30),
        jac=True,
        method="SLSQP",
        bounds=bounds,
        constraints=[cons],
        options=opts,
    )
    assert ref.status == 0 and sol.z == pytest.approx(float(np.linalg.norm(ref.x)), rel=1e-6)
    infeasible = min_l2_step(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([-0.1, -0.1]), *box(2))
    assert infeasible.status == "infeasible"


def linear(weight: list[list[float]], bias: list[float]) -> MultiLabelModel:
    lin = nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return MultiLabelModel(lin)


X = torch.full((1, 4), 0.5, dtype=torch.float64)


def test_attack_on_a_linear_model_flips_above_the_exact_minimum() -> None:
    """For one linear logit the minimal L-inf flip is |w.x + b - t| / ||w||_1: MLA-LP (linearised BCE, adaptive
    target) reaches the target with a perturbation at least that (here 1.63x: BCE linearised at the logit -0.3
    undershoots to -0.02, then tau = 0.55 overshoots to 0.19)."""
    w = [1.0, -2.0, 0.5, 0.25]
    model = linear([w], [-0.3 - 0.5 * sum(w)])
    res = MLALP(model)(X, eps=[0.01, 0.25])
    optimum = 0.3 / 3.75
    assert res.extra["status"] == ["success"]
    assert optimum <= float(res.min_norm[0]) <= 2 * optimum  # the linearised BCE and adaptive tau overshoot
    assert res.flips.tolist() == [[0], [1]]
    l2 = MLALP(model, norm="l2")(X, eps=1.0)
    assert l2.extra["status"] == ["success"] and float(l2.min_norm[0]) >= 0.3 / np.linalg.norm(w)


def test_infeasible_labels_are_dropped_or_stop_the_sample() -> None:
    """Two labels with the same gradient pulled in opposite directions: no step satisfies both."""
    w = [1.0, -1.0, 0.5, 0.2]
    s = 0.5 * sum(w)
    model = linear([w, w, [0.0, 0.0, 1.0, 0.0]], [-0.3 - s, 0.4 - s, -0.2 - 0.5])  # targets: up, down, up
    stop = MLALP(model, infeasible="stop", return_adv=True)(X, eps=0.3)
    assert stop.extra["stop_reason"] == ["infeasible"] and stop.extra["status"] == ["failed"]
    assert torch.equal(stop.x_adv[0], X) and float(stop.min_norm[0]) == 0.0
    drop = MLALP(model)(X, eps=0.3)
    assert drop.extra["dropped_labels"][0] >= 1
    assert drop.extra["status"] == ["partial"] and drop.extra["labels_on_target"] == [2]


def test_timeout_and_solver_failure_stop_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    model = MultiLabelModel(TinyCNN())
    x = make_inputs(3)
    res = MLALP(model, time_limit=1e-9, return_adv=True)(x, eps=0.05)
    assert res.extra["stop_reason"] == ["timeout"] * 3
    assert torch.isfinite(res.x_adv).all() and res.extra["status"] == ["failed"] * 3
    failing = types.SimpleNamespace(status=4, fun=None, x=None, message="numerical difficulties")
    monkeypatch.setattr(mla_lp_module, "linprog", lambda *args, **kwargs: failing)
    broken = MLALP(model)(x, eps=0.05)
    assert broken.extra["stop_reason"] == ["solver_error"] * 3
    assert torch.equal(broken.min_norm, torch.zeros(3, dtype=torch.float64))


def test_already_on_target_and_weights() -> None:
    model = linear([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], [-0.6, -0.55])
    same = MLALP(model, return_adv=True)(X, 0.1, target=model.predict(X).double())
    assert same.extra["status"] == ["already_on_target"] and torch.equal(same.x_adv[0], X)
    one = MLALP(model)(X, 0.2, weights=[1.0, 0.0])  # only label 0 must flip (up by 0.1)
    assert one.extra["status"] == ["success"] and one.extra["labels_on_target"] == [1]
    assert int(one.flips_up[0, 0]) >= 1


def test_block_and_topk_reductions_give_feasible_steps_of_the_full_problem() -> None:
    rng = np.random.default_rng(1)
    shape = (3, 6, 5)
    a = torch.from_numpy(rng.normal(size=(1, 4, *shape)))
    delta = -torch.from_numpy(rng.random(4)) * 2
    x = torch.from_numpy(rng.random((1, *shape)))
    lo, hi = -x, 1 - x
    full = min_linf_step(a.flatten(2)[0].numpy(), delta.numpy(), lo.flatten().numpy(), hi.flatten().numpy())
    for block, topk in [(2, 0), (0, 40), (2, 12)]:
        a_r, lo_r, hi_r, index = MLALP._reduce(a, lo, hi, block, topk)
        assert a_r.shape[2] == (topk or 3 * 3 * 3)
        sol = min_linf_step(a_r[0].numpy(), delta.numpy(), lo_r[0].numpy(), hi_r[0].numpy())
        r = MLALP._expand(torch.from_numpy(sol.r)[None], shape, block, index)[0]
        assert torch.all(a.flatten(2)[0] @ r.flatten() <= delta + 1e-7), "not feasible for the full problem"
        assert torch.all(r >= lo[0] - 1e-9) and torch.all(r <= hi[0] + 1e-9), "outside the box"
        assert float(r.abs().max()) == pytest.approx(sol.z, rel=1e-6) and sol.z >= full.z * (1 - 1e-6)
        if topk:
            assert int((r != 0).sum()) <= topk * (block * block if block else 1)
        if block:  # constant on each 2 x 2 block
            padded = torch.nn.functional.pad(r, (0, 1, 0, 0), value=float("nan"))[:, :, :6]
            blocks = padded[:, :6, :4].unfold(1, 2, 2).unfold(2, 2, 2)
            assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))
    assert mla_lp_module._reduction((3, 448, 448), 0, 0, 20000) == (6, 0)  # 3 * 75 * 75 = 16875 <= 20000
    assert mla_lp_module._reduction((100000,), 0, 0, 20000) == (0, 20000)
    assert mla_lp_module._reduction((3, 32, 32), 0, 0, 20000) == (0, 0)
    model = MultiLabelModel(TinyCNN())
    res = MLALP(model, block=2, steps=2)(make_inputs(2), eps=0.3)
    assert res.extra["reduction"] == (2, 0) and torch.isfinite(res.min_norm).all()


def test_workers_give_the_same_result() -> None:
    model = MultiLabelModel(TinyCNN())
    x = make_inputs(4)
    one = MLALP(model, steps=2, return_adv=True)(x, eps=[0.02, 0.3])
    two = MLALP(model, steps=2, workers=2, return_adv=True)(x, eps=[0.02, 0.3])
    assert torch.equal(one.x_adv, two.x_adv) and one.extra["solves"] == two.extra["solves"]


def test_registered_and_validated() -> None:
    model = MultiLabelModel(TinyCNN())
    attack = create_attack("mla-lp:steps=3,search=bisect,workers=2", model)
    assert isinstance(attack, MLALP) and (attack.steps, attack.search, attack.workers) == (3, "bisect", 2)
    with pytest.raises(LabelflipError, match="search"):
        MLALP(model, search="simplex")
    with pytest.raises(LabelflipError, match="time_limit"):
        MLALP(model, time_limit=0.0)
    with pytest.raises(LabelflipError, match="infeasible"):
        MLALP(model, infeasible="ignore")

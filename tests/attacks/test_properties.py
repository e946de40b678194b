"""Hypothesis properties of the MI-FGSM engine and the attack losses on tiny models (seconds, CPU)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labelflip.attacks.mifgsm import MIFGSM
from labelflip.losses import BCELoss, HingeLoss, LinearLoss, MSELoss, SLAMLoss
from labelflip.models import MultiLabelModel
from tests.helpers import K, TinyCNN, make_inputs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Wrappers are built once (hypothesis re-runs the body; function-scoped fixtures would be shared anyway).
MODELS = {
    (0.0, 1.0): MultiLabelModel(TinyCNN(seed=0)),
    (-1.0, 2.0): MultiLabelModel(TinyCNN(seed=4), bounds=(-1.0, 2.0)),
}
ALPHA_LINF = 1.0 / 2560.0


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add overhead (and stall badly on a loaded 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inputs(n: int, seed: int, bounds: tuple[float, float], edge: bool) -> torch.Tensor:
    low, high = bounds
    x = make_inputs(n, seed) * (high - low) + low
    if edge:  # put some pixels exactly on the bounds: the clamp must keep them inside
        x[:, 0, :2] = low
        x[:, 1, :2] = high
    return x


# ---------------------------------------------------------------------------------------------- MI-FGSM


# budgets on the step grid (k * alpha written as a decimal) sit on the floor() boundary: 0.001171875 / (1/2560)
# is 2.9999999999999996 in floating point, and must still give 3 steps (SPEC: floor(eps / alpha + 1e-9))
grid_eps = st.integers(0, 128).map(lambda k: float(f"{k / 2560:.12g}")) | st.integers(0, 16).map(
    lambda k: float(f"{k / 320:.12g}")
)
budgets = st.floats(0.0, 0.05, allow_nan=False) | grid_eps


@pytest.mark.parametrize(
    ("norm", "eps", "steps"),
    [("linf", [0.001171875, 0.009375, 0.0], [3, 24, 0]), ("l2", [0.009375, 0.028125], [3, 9])],
)
def test_steps_absorb_float_noise(norm: str, eps: list[float], steps: list[int]) -> None:
    res = MIFGSM(MODELS[(0.0, 1.0)], norm=norm)(make_inputs(1), eps)
    assert res.steps.tolist() == steps


@SETTINGS
@given(
    eps=st.lists(budgets, min_size=1, max_size=3),
    n=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    norm=st.sampled_from(["linf", "l2"]),
    clip=st.sampled_from(["final", "step"]),
    bounds=st.sampled_from(sorted(MODELS)),
    edge=st.booleans(),
)
def test_attack_invariants(
    eps: list[float], n: int, seed: int, norm: str, clip: str, bounds: tuple[float, float], edge: bool
) -> None:
    model = MODELS[bounds]
    x = _inputs(n, seed, bounds, edge)
    res = MIFGSM(model, "bce", norm=norm, clip=clip, l2_mode="project", return_adv=True)(x, eps)
    b = len(eps)
    assert res.x_adv is not None
    assert res.x_adv.shape == (b, *x.shape)

    # step count: floor(eps / alpha + 1e-9), alpha = 1/2560 (L-inf) or 1/2560 * sqrt(H*W) (L2)
    alpha = ALPHA_LINF if norm == "linf" else ALPHA_LINF * math.sqrt(8 * 8)
    assert res.steps.tolist() == [math.floor(e / alpha + 1e-9) for e in eps]
    assert res.eps.tolist() == eps

    delta = (res.x_adv.double() - x.double().unsqueeze(0)).flatten(2)
    linf = delta.abs().amax(dim=2)
    l2 = delta.norm(dim=2)
    torch.testing.assert_close(res.linf, linf)
    torch.testing.assert_close(res.l2, l2)
    for j, e in enumerate(eps):
        if norm == "linf":
            assert float(linf[j].max()) <= e + 1e-6
        else:
            assert float(l2[j].max()) <= e * (1 + 1e-5) + 1e-6

    low, high = bounds
    assert float(res.x_adv.min()) >= low and float(res.x_adv.max()) <= high
    assert not bool(torch.isnan(res.adv_probs).any())
    assert not bool(torch.isnan(res.clean_probs).any())

    # flips against the clean prediction
    assert torch.equal(res.flips, res.flips_up + res.flips_down)
    assert bool((res.flips >= 0).all()) and bool((res.flips <= K).all())
    xor = (res.adv_pred ^ res.clean_pred.unsqueeze(0)).sum(dim=-1)
    assert torch.equal(res.flips, xor)
    up = (res.adv_pred & ~res.clean_pred.unsqueeze(0)).sum(dim=-1)
    assert torch.equal(res.flips_up, up)
    assert torch.equal(res.adv_pred, res.adv_probs > 0.5)

    # zero budget (or fewer than one step): nothing moves, nothing flips
    for j, steps in enumerate(res.steps.tolist()):
        if steps == 0:
            assert torch.equal(res.x_adv[j], x)
            assert int(res.flips[j].sum()) == 0


@SETTINGS
@given(eps=st.floats(0.0, 0.05, allow_nan=False), seed=st.integers(0, 2**16), norm=st.sampled_from(["linf", "l2"]))
def test_zero_budget_in_a_list_gives_identity(eps: float, seed: int, norm: str) -> None:
    model = MODELS[(0.0, 1.0)]
    x = make_inputs(2, seed)
    res = MIFGSM(model, "linear", norm=norm, return_adv=True)(x, [eps, 0.0])
    assert res.x_adv is not None
    assert int(res.steps[1]) == 0
    assert torch.equal(res.x_adv[1], x)
    assert res.flips[1].tolist() == [0, 0]
    assert torch.equal(res.adv_probs[1], res.clean_probs)


# ---------------------------------------------------------------------------------------------- losses


def _sigmoid64(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@st.composite
def loss_batches(draw: st.DrawFn, max_logit: float = 14.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 4))
    k = draw(st.integers(1, 6))
    z = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-max_logit, max_logit)))
    t = draw(hnp.arrays(np.float64, (n, k), elements=st.sampled_from([0.0, 1.0])))
    w = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(0.0, 1.0)))
    return z, t, w


@SETTINGS
@given(batch=loss_batches(), weighted=st.booleans())
def test_bce_matches_direct_formula(batch: tuple[np.ndarray, np.ndarray, np.ndarray], weighted: bool) -> None:
    z, t, w = batch
    s = _sigmoid64(z)
    terms = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    expected = (terms * (w if weighted else 1.0)).sum(axis=1)
    got = BCELoss()(torch.from_numpy(z), torch.from_numpy(t), torch.from_numpy(w) if weighted else None)
    assert got.shape == (z.shape[0],)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-7, atol=1e-9)


@SETTINGS
@given(
    signs=hnp.arrays(np.float32, (3, 4), elements=st.sampled_from([-1.0, 1.0])),
    mags=hnp.arrays(np.float32, (3, 4), elements=st.sampled_from([1e2, 1e3, 1e4])),
    t=hnp.arrays(np.float32, (3, 4), elements=st.sampled_from([0.0, 1.0])),
)
def test_bce_finite_for_huge_logits(signs: np.ndarray, mags: np.ndarray, t: np.ndarray) -> None:
    z = torch.from_numpy(signs * mags).requires_grad_(True)
    tt = torch.from_numpy(t)
    loss = BCELoss()(z, tt)
    assert bool(torch.isfinite(loss).all())
    assert bool((loss >= 0).all())
    # for |z| >= 100 the loss is the wrong-side margin: t * relu(-z) + (1 - t) * relu(z)
    margin = (tt * torch.relu(-z) + (1 - tt) * torch.relu(z)).sum(dim=1)
    torch.testing.assert_close(loss, margin, rtol=1e-5, atol=1e-3)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert bool(torch.isfinite(grad).all())
    torch.testing.assert_close(grad, torch.sigmoid(z.detach()) - tt)  # d BCE / dz = P - t


@SETTINGS
@given(batch=loss_batches(max_logit=30.0), weighted=st.booleans())
def test_linear_matches_formula(batch: tuple[np.ndarray, np.ndarray, np.ndarray], weighted: bool) -> None:
    z, t, w = batch
    s = _sigmoid64(z)
    expected = ((t * (1 - s) + (1 - t) * s) * (w if weighted else 1.0)).sum(axis=1)
    got = LinearLoss()(torch.from_numpy(z), torch.from_numpy(t), torch.from_numpy(w) if weighted else None)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert bool((got >= 0).all()) and bool((got <= z.shape[1]).all())


def _mix(coefs: np.ndarray, eps_max: float, q: float, eps: float, k: int) -> float:
    """SLAM's BCE share, computed independently of the library (SPEC.md, Losses)."""
    if eps >= eps_max:
        return q
    e = sum(c * eps**i for i, c in enumerate(coefs))
    return q * min(1.0, max(0.0, e) / k)


coefficients = hnp.arrays(np.float64, st.integers(1, 5), elements=st.floats(-1e3, 1e3))


@SETTINGS
@given(
    batch=loss_batches(),
    coefs=coefficients,
    eps_max=st.floats(1e-3, 0.2),
    frac=st.floats(0.0, 1.5),
    q=st.floats(0.0, 1.0),
)
def test_slam_is_weighted_mix_of_linear_and_bce(
    batch: tuple[np.ndarray, np.ndarray, np.ndarray], coefs: np.ndarray, eps_max: float, frac: float, q: float
) -> None:
    z, t, w = batch
    eps = frac * eps_max
    k = z.shape[1]
    m = _mix(coefs, eps_max, q, eps, k)
    zt, tt, wt = torch.from_numpy(z), torch.from_numpy(t), torch.from_numpy(w)
    slam = SLAMLoss(coefficients=coefs, eps_max=eps_max, q=q)
    got = slam(zt, tt, wt, eps)
    expected = (1 - m) * LinearLoss()(zt, tt, wt) + m * BCELoss()(zt, tt, wt)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    # a per-sample eps tensor gives the same rows
    got_t = slam(zt, tt, wt, torch.full((z.shape[0],), eps, dtype=torch.float64))
    torch.testing.assert_close(got_t, got, rtol=0, atol=0)


@SETTINGS
@given(
    coefs=coefficients,
    eps_max=st.floats(1e-3, 0.2),
    eps=st.floats(0.0, 0.5),
    q=st.floats(0.0, 1.0),
    k=st.integers(1, 20),
)
def test_slam_mix_weight_range(coefs: np.ndarray, eps_max: float, eps: float, q: float, k: int) -> None:
    slam = SLAMLoss(coefficients=coefs, eps_max=eps_max, q=q)
    m = slam.mix_weight(eps, k)
    assert 0.0 <= m <= q
    if eps >= eps_max:
        assert m == q
    assert m == pytest.approx(_mix(coefs, eps_max, q, eps, k), rel=1e-9, abs=1e-12)
    assert slam.mix_weight(eps_max, k) == q
    assert slam.mix_weight(eps_max * (1 + 1e-9) + 1e-12, k) == q


LOSSES = {
    "bce": BCELoss(),
    "linear": LinearLoss(),
    "hinge": HingeLoss(),
    "mse": MSELoss(),
    "slam": SLAMLoss(coefficients=[0.0, 50.0, -100.0], eps_max=0.05),
}


@SETTINGS
@given(
    name=st.sampled_from(sorted(LOSSES)),
    batch=loss_batches(max_logit=20.0),
    other=hnp.arrays(np.float64, (4, 6), elements=st.floats(-20.0, 20.0)),
    row=st.integers(0, 3),
    eps=st.floats(0.0, 0.1),
    weighted=st.booleans(),
)
def test_losses_are_per_sample(
    name: str,
    batch: tuple[np.ndarray, np.ndarray, np.ndarray],
    other: np.ndarray,
    row: int,
    eps: float,
    weighted: bool,
) -> None:
    """Row i of the loss depends only on row i of the logits (and target/weights/eps)."""
    z, t, w = batch
    n, k = z.shape
    row = row % n
    loss = LOSSES[name]
    zt, tt = torch.from_numpy(z), torch.from_numpy(t)
    wt = torch.from_numpy(w) if weighted else None
    eps_t = torch.full((n,), eps, dtype=torch.float64)
    full = loss(zt, tt, wt, eps_t)
    assert full.shape == (n,)
    # change every other row
    z2 = zt.clone()
    mask = torch.arange(n) != row
    z2[mask] = torch.from_numpy(other[:n, :k])[mask]
    changed = loss(z2, tt, wt, eps_t)
    assert torch.equal(changed[row], full[row])
    # the row alone gives the same value
    alone = loss(zt[row : row + 1], tt[row : row + 1], None if wt is None else wt[row : row + 1], eps_t[:1])
    torch.testing.assert_close(alone[0], full[row], rtol=1e-12, atol=0)
    # and the row's own logits matter (a constant loss would pass the checks above): wrong side > right side
    sign = torch.where(tt[row] > 0, 1.0, -1.0).double()
    z_right, z_wrong = zt.clone(), zt.clone()
    z_right[row] = 10.0 * sign
    z_wrong[row] = -10.0 * sign
    if wt is None or float(wt[row].max()) > 1e-3:
        assert float(loss(z_wrong, tt, wt, eps_t)[row]) > float(loss(z_right, tt, wt, eps_t)[row])

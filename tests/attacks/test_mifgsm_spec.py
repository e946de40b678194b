"""Small hand-checkable cases pinning the SPEC semantics of the MI-FGSM engine, plus a differential test
against a literal transcription of SPEC-reference-code §1.1 (the authors' loop at batch size 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from labelflip.attacks import ALPHA_LINF, MIFGSM, num_steps
from labelflip.losses import LinearLoss, SLAMLoss
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def reference_mifgsm(model: nn.Module, x: torch.Tensor, t: torch.Tensor, loss_fn, eps: float) -> torch.Tensor:
    """SPEC-reference-code §1.1, written out literally for ONE sample (B = 1), as the authors ran it:
    mean-reduced loss on probabilities, one L1 norm over the tensor, g = 1*g + g_hat, x -= alpha*sign(g),
    no clipping until the final clamp. Here for testing only; never used by the library."""
    alpha = (1 / 256) / 10
    n = int(eps / alpha)
    g = 0
    xk = x.clone()
    for _ in range(n):
        xk = xk.detach().requires_grad_(True)
        p = torch.sigmoid(model(xk))
        j = loss_fn(p, t)
        (grad,) = torch.autograd.grad(j, xk)
        g = 1.0 * g + grad / grad.abs().sum()
        xk = xk - alpha * torch.sign(g)
    return xk.detach().clamp(0, 1)


def _bce_mean(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.nn.BCELoss()(p, t)


def _linear_mean(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (t * (1 - p) + (1 - t) * p).mean()


@pytest.fixture
def net64() -> nn.Module:
    return TinyCNN(k=5, seed=3).double().eval()


@pytest.mark.parametrize(("loss", "ref_loss"), [("bce", _bce_mean), ("linear", _linear_mean)])
def test_matches_reference_loop_per_sample(net64: nn.Module, loss: str, ref_loss) -> None:
    x = make_inputs(4, seed=7).double()
    eps = 0.0123
    model = MultiLabelModel(net64)
    res = MIFGSM(model, loss, return_adv=True)(x, eps)
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        with torch.no_grad():
            t = (torch.sigmoid(net64(xi)) <= 0.5).double()  # 1 - pred, pred = P > 0.5
        ref = reference_mifgsm(net64, xi, t, ref_loss, eps)
        # Per-sample normalisation reproduces the authors' B = 1 runs: same signs, same iterates.
        assert torch.allclose(res.x_adv[0, i : i + 1], ref, atol=1e-12, rtol=0)


def test_step_count_is_floor_with_float_guard() -> None:
    assert num_steps(0.0060546875, ALPHA_LINF) == 15  # 15.5 steps -> 15 (SPEC-reference-code §1.1)
    assert num_steps(6 * (0.03125 / 10), ALPHA_LINF) == 48  # 0.018750000000000003 -> 48, not 47
    assert num_steps(0.1, ALPHA_LINF) == 256
    assert num_steps(ALPHA_LINF * 0.999, ALPHA_LINF) == 0
    assert num_steps(0.0, ALPHA_LINF) == 0


def test_result_reports_steps_and_eps(model: MultiLabelModel, x: torch.Tensor) -> None:
    res = MIFGSM(model)(x, [0.0060546875, 0.0002, 0.01])
    assert res.steps.tolist() == [15, 0, 25]
    assert res.eps.tolist() == [0.0060546875, 0.0002, 0.01]


def test_one_step_by_hand(linear_model: MultiLabelModel) -> None:
    """One BCE step on a linear model: grad_x = W^T (sigmoid(Wx+b) - t); x1 = x0 - alpha * sign(grad)."""
    x0 = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.9, 0.4, 0.1]], dtype=torch.float64)
    lin = linear_model.module
    res = MIFGSM(linear_model, "bce", return_adv=True)(x0, ALPHA_LINF)
    assert res.steps.tolist() == [1]
    with torch.no_grad():
        z = lin(x0)
        t = (torch.sigmoid(z) <= 0.5).double()
        grad = (torch.sigmoid(z) - t) @ lin.weight
    expected = x0 - ALPHA_LINF * torch.sign(grad)
    assert torch.equal(res.x_adv[0], expected.clamp(0, 1))


def test_momentum_is_plain_accumulation_of_l1_normalised_gradients(linear_model: MultiLabelModel) -> None:
    """mu = 1: g2 = g1_hat + g2_hat (not an EMA); sign(g2) drives step 2."""
    x0 = torch.tensor([[0.5, 0.4, 0.6, 0.5]], dtype=torch.float64)
    lin = linear_model.module
    res = MIFGSM(linear_model, "linear", return_adv=True)(x0, 2 * ALPHA_LINF)
    t = (torch.sigmoid(lin(x0)) <= 0.5).double().detach()

    def grad_at(xk: torch.Tensor) -> torch.Tensor:
        xk = xk.clone().requires_grad_(True)
        loss = LinearLoss()(lin(xk), t).sum()
        return torch.autograd.grad(loss, xk)[0]

    g1 = grad_at(x0)
    g = g1 / g1.abs().sum()
    x1 = x0 - ALPHA_LINF * torch.sign(g)
    g2 = grad_at(x1)
    g = g + g2 / g2.abs().sum()
    x2 = x1 - ALPHA_LINF * torch.sign(g)
    assert torch.equal(res.x_adv[0], x2.clamp(0, 1))


def test_final_clamp_only_model_sees_out_of_bounds_iterates() -> None:
    """clip='final': no per-step clamp, so the model sees x > 1 mid-attack; clip='step' never does."""
    seen: list[float] = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 1)
            with torch.no_grad():
                self.lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
                self.lin.bias.fill_(-3.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(float(x.detach().max()))
            return self.lin(x)

    x0 = torch.tensor([[0.999, 0.999]])
    model = MultiLabelModel(Probe(), output_kind="logits")
    res = MIFGSM(model, "bce", clip="final", return_adv=True)(x0, 10 * ALPHA_LINF)
    assert max(seen) > 1.0  # iterates leave the bounds: pushed up toward the target 1
    assert float(res.x_adv.max()) <= 1.0  # ... and are clamped once at the end
    seen.clear()
    MIFGSM(model, "bce", clip="step")(x0, 10 * ALPHA_LINF)
    assert max(seen) <= 1.0


def test_zero_gradient_never_produces_nan(model: MultiLabelModel, x: torch.Tensor) -> None:
    """All weights 0 -> zero gradient -> the sample does not move (authors: NaN momentum, sign(NaN)=0)."""
    res = MIFGSM(model, "bce", return_adv=True)(x, [0.01, 0.05], weights=torch.zeros(6))
    assert not torch.isnan(res.adv_probs).any()
    assert torch.equal(res.x_adv[1], x)
    assert res.flips.sum() == 0


def test_zero_gradient_sample_does_not_affect_others(model: MultiLabelModel, x: torch.Tensor) -> None:
    w = torch.ones(x.shape[0], 6)
    w[0] = 0
    res = MIFGSM(model, "bce", return_adv=True)(x, 0.02, weights=w)
    alone = MIFGSM(model, "bce", return_adv=True)(x[1:], 0.02)
    assert torch.equal(res.x_adv[0, 0], x[0])
    assert torch.equal(res.x_adv[0, 1:], alone.x_adv[0])


def test_sample_vs_batch_normalisation(net64: nn.Module) -> None:
    model = MultiLabelModel(net64)
    x = make_inputs(4, seed=2).double()
    per_sample = MIFGSM(model, "bce", return_adv=True)(x, 0.05)
    batch = MIFGSM(model, "bce", normalize="batch", return_adv=True)(x, 0.05)
    assert not torch.equal(per_sample.x_adv, batch.x_adv)  # coupled samples (the authors' batch behaviour)
    one = MIFGSM(model, "bce", normalize="batch", return_adv=True)(x[:1], 0.05)
    assert torch.equal(one.x_adv[0, 0], per_sample.x_adv[0, 0])  # identical at B = 1


def test_default_target_is_one_minus_clean_prediction(model: MultiLabelModel, x: torch.Tensor) -> None:
    res = MIFGSM(model)(x, 0.0)
    assert torch.equal(res.target, (~res.clean_pred).float())


def test_custom_target_is_used(model: MultiLabelModel, x: torch.Tensor) -> None:
    """Pushing toward the clean prediction itself flips nothing."""
    clean = model.predict(x)
    res = MIFGSM(model)(x, 0.05, target=clean.float())
    assert res.flips.sum() == 0


def test_single_label_weight_only_attacks_that_label(linear_model: MultiLabelModel) -> None:
    """A weight e_j makes the step depend only on label j's gradient (subset targeting, seed §IV-C)."""
    x0 = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    res = MIFGSM(linear_model, "bce", return_adv=True)(x0, ALPHA_LINF, weights=torch.tensor([0.0, 1.0, 0.0]))
    w1 = linear_model.module.weight[1].detach()
    z1 = float(linear_model.module(x0)[0, 1].detach())
    t1 = 1.0 if z1 <= 0 else 0.0
    expected = x0 - ALPHA_LINF * torch.sign((torch.sigmoid(torch.tensor(z1)) - t1) * w1)
    assert torch.equal(res.x_adv[0], expected)


# ----------------------------------------------------------------------------- budgets in one call
@pytest.mark.parametrize("loss", ["bce", "linear", "hinge", "mse"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_shared_trajectory_is_bit_identical_to_separate_runs(
    model: MultiLabelModel, x: torch.Tensor, loss: str, norm: str
) -> None:
    budgets = [0.03, 0.0, 0.004, 0.01] if norm == "linf" else [0.3, 0.0, 0.05, 0.1]
    grid = MIFGSM(model, loss, norm=norm, return_adv=True)(x, budgets)
    for b, eps in enumerate(budgets):
        alone = MIFGSM(model, loss, norm=norm, return_adv=True)(x, eps)
        assert torch.equal(grid.x_adv[b], alone.x_adv[0])
        assert torch.equal(grid.adv_probs[b], alone.adv_probs[0])
        assert torch.equal(grid.flips[b], alone.flips[0])


def test_slam_budgets_equal_separate_runs(model: MultiLabelModel, x: torch.Tensor) -> None:
    slam = SLAMLoss(coefficients=[0.0, 200.0], eps_max=0.02)
    budgets = [0.002, 0.01, 0.02]
    grid = MIFGSM(model, slam, return_adv=True)(x, budgets)
    for b, eps in enumerate(budgets):
        assert torch.equal(grid.x_adv[b], MIFGSM(model, slam, return_adv=True)(x, eps).x_adv[0])


def test_per_budget_weights(model: MultiLabelModel, x: torch.Tensor) -> None:
    w = torch.zeros(2, x.shape[0], 6)
    w[1] = 1.0
    res = MIFGSM(model, "bce", return_adv=True)(x, [0.02, 0.02], weights=w)
    assert torch.equal(res.x_adv[0], x)  # all-zero weights: no move
    assert torch.equal(res.x_adv[1], MIFGSM(model, "bce", return_adv=True)(x, 0.02).x_adv[0])


# ----------------------------------------------------------------------------- SLAM mix weight
def test_slam_mix_weight_follows_eq7_with_authors_ge() -> None:
    k = 10
    slam = SLAMLoss(coefficients=[-1.0, 1000.0], eps_max=0.008, q=0.5)  # E(eps) = 1000 eps - 1
    assert slam.mix_weight(0.008, k) == 0.5  # eps >= eps_max -> p = 1 (authors' >=, paper's >)
    assert slam.mix_weight(0.02, k) == 0.5
    assert slam.mix_weight(0.0005, k) == 0.0  # E = -0.5 clipped at 0
    assert math.isclose(slam.mix_weight(0.004, k), 0.5 * 3.0 / 10)  # E = 3 -> p = 0.3
    big = SLAMLoss(coefficients=[0.0, 1e6], eps_max=0.01, q=0.25)
    assert big.mix_weight(0.005, k) == 0.25  # E/K clipped at 1


def test_slam_polynomial_uses_increasing_degree_order() -> None:
    coefs = [0.5, 10.0, -30.0, 5.0, 2.0]
    slam = SLAMLoss(coefficients=coefs, eps_max=1.0)
    assert math.isclose(slam.flip_estimate(0.3), float(np.polynomial.polynomial.polyval(0.3, coefs)))
    assert math.isclose(slam.flip_estimate(0.3), 0.5 + 3.0 - 30 * 0.09 + 5 * 0.027 + 2 * 0.0081)


def test_slam_equals_linear_at_tiny_budget_and_mix_at_eps_max(model: MultiLabelModel, x: torch.Tensor) -> None:
    slam = SLAMLoss(coefficients=[0.0, 0.0], eps_max=0.02)  # E = 0 -> p = 0 below eps_max: pure Linear
    res = MIFGSM(model, slam, return_adv=True)(x, 0.01)
    lin = MIFGSM(model, "linear", return_adv=True)(x, 0.01)
    assert torch.equal(res.x_adv, lin.x_adv)


# ----------------------------------------------------------------------------- L2
def test_l2_step_size_and_counts() -> None:
    model = MultiLabelModel(TinyCNN())
    x = make_inputs(2)
    attack = MIFGSM(model, norm="l2")
    assert math.isclose(attack.step_size(x), ALPHA_LINF * 8)  # sqrt(H*W) = 8 for 8x8
    assert math.isclose(attack.step_size(torch.zeros(2, 3, 448, 448)), 0.175)
    res = attack(x, [0.0, ALPHA_LINF * 8 * 3.5])
    assert res.steps.tolist() == [0, 3]


def test_l2_paper_mode_is_unprojected_raw_momentum(model: MultiLabelModel, x: torch.Tensor) -> None:
    """'paper': x -= alpha2 * g with g the raw sum of unit gradients: the perturbation can exceed eps
    but never alpha2 * n (n + 1) / 2; 'project' stays within eps."""
    eps = 0.2
    paper = MIFGSM(model, norm="l2", l2_mode="paper")(x, eps)
    proj = MIFGSM(model, norm="l2", l2_mode="project")(x, eps)
    a2 = ALPHA_LINF * 8
    n = int(paper.steps[0])
    assert float(paper.l2.max()) > eps  # documented: not a true bound
    assert float(paper.l2.max()) <= a2 * n * (n + 1) / 2 + 1e-9
    assert float(proj.l2.max()) <= eps + 1e-6

"""The six regularisers: the registry switch, each penalty against its formula in the SAE paper (seed 004) computed
independently, where the gradient flows, and the nuclear-norm proximal step."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from labelflip import LabelflipError
from labelflip.models.architectures import ASLConvNet, QueryLabelNet
from labelflip.robust import (
    LinearMultiLabel,
    MLPMultiLabel,
    classification_loss,
    create_regulariser,
    last_linear_weight,
    list_regularisers,
    margin_weights,
)
from tests.helpers import TinyCNN, make_inputs


def _linear(seed: int = 0, k: int = 4, d: int = 5) -> LinearMultiLabel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LinearMultiLabel(k, d)


def _batch(seed: int = 1, n: int = 6, k: int = 4, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), (torch.rand(n, k, generator=gen) < 0.5).float()


def test_registry_switch() -> None:
    assert list_regularisers() == ["arm-primal", "arm-sae", "arm-single", "l2", "none", "nuclear"]
    sae = create_regulariser("arm-sae:1e-3,alpha=0.05")
    assert sae.lam == pytest.approx(1e-3) and sae.alpha == pytest.approx(0.05) and sae.needs_input_grad
    assert create_regulariser("nuclear", lam=0.5, mode="subgradient").mode == "subgradient"
    assert create_regulariser("none").lam == 0.0
    with pytest.raises(LabelflipError, match="arm-sae"):
        create_regulariser("arm-sea:0.1")
    with pytest.raises(LabelflipError, match="lam"):
        create_regulariser("l2:-1")
    with pytest.raises(LabelflipError, match="mode"):
        create_regulariser("nuclear:0.1,mode=svd")


def test_last_linear_weight_of_each_architecture() -> None:
    lin = _linear()
    assert last_linear_weight(lin) is lin.linear.weight
    mlp = MLPMultiLabel(3, 5)
    assert last_linear_weight(mlp) is mlp.head.weight
    assert last_linear_weight(ASLConvNet(7, width=4)).shape == (7, 32)
    q2l = QueryLabelNet(7, width=4, num_heads=2, image_size=16)
    assert last_linear_weight(q2l) is q2l.fc_weight
    assert last_linear_weight(TinyCNN(k=5)).shape == (5, 24)
    with pytest.raises(LabelflipError, match="linear layer"):
        last_linear_weight(nn.Conv2d(3, 3, 1))


def test_margin_weights() -> None:
    logits = torch.tensor([[5.0, -5.0, 0.0, 3.0]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])  # correct, correct, on the boundary, wrong by 3
    w = margin_weights(logits, y, alpha=0.1)
    assert w[0, 0] == pytest.approx(torch.exp(torch.tensor(-5.0)).item(), rel=1e-5) and w[0, 1] == w[0, 0]
    assert w[0, 2] == pytest.approx(1.0) and w[0, 3] == pytest.approx(10.0)  # capped at 1/alpha


def test_l2_and_nuclear_penalties_and_prox() -> None:
    lin = _linear()
    x, y = _batch()
    w = lin.linear.weight
    assert create_regulariser("l2:0.5").penalty(lin, x, lin(x), y).item() == pytest.approx(0.5 * w.pow(2).sum().item())
    nuc = create_regulariser("nuclear:0.5,mode=subgradient").penalty(lin, x, lin(x), y)
    s = torch.linalg.svdvals(w.detach())
    assert nuc.item() == pytest.approx(0.5 * s.sum().item(), rel=1e-5)
    nuc.backward()
    u, _, vh = torch.linalg.svd(w.detach(), full_matrices=False)
    assert torch.allclose(w.grad, 0.5 * u @ vh, atol=1e-5)  # the sub-gradient U V^T
    prox = create_regulariser("nuclear:2.0")
    prox.after_step(lin, lr=0.1)
    assert torch.allclose(torch.linalg.svdvals(lin.linear.weight.detach()), (s - 0.2).clamp_min(0), atol=1e-5)


def test_arm_primal_is_theorem_1_on_the_last_layer() -> None:
    lin = _linear(k=5)
    x, y = _batch(k=5)
    reg = create_regulariser("arm-primal:2.0")
    pen = reg.penalty(lin, x, lin(x), y)
    w = lin.linear.weight.detach()
    values = []
    for i in range(x.shape[0]):
        v = (2 * y[i] - 1).unsqueeze(1) * w
        best = max(v[list(s)].sum(0).norm().item() for k in range(1, 6) for s in itertools.combinations(range(5), k))
        values.append(best)
    # the greedy is a lower bound on the maximum of Theorem 1; on these instances within 10 %
    assert pen.item() <= 2.0 * sum(values) / len(values) + 1e-5
    assert pen.item() >= 0.9 * 2.0 * sum(values) / len(values)
    pen.backward()
    assert lin.linear.weight.grad.abs().sum() > 0 and lin.linear.bias.grad is None  # only W is penalised


def test_arm_sae_linear_closed_form_and_gradient_paths() -> None:
    lin = _linear(k=4)
    x, y = _batch(k=4)
    xg = x.clone().requires_grad_(True)
    logits = lin(xg)
    pen = create_regulariser("arm-sae:1.0,alpha=0.1").penalty(lin, xg, logits, y)
    w = lin.linear.weight.detach()
    c = -(2 * y - 1) * margin_weights(logits.detach(), y, 0.1)  # c_j of Eq. 14
    expected = []
    for i in range(x.shape[0]):
        a = c[i].unsqueeze(1) * w
        expected.append(
            max(a[list(s)].sum(0).norm().item() for k in range(1, 5) for s in itertools.combinations(range(4), k))
        )
    assert pen.item() <= sum(expected) / len(expected) + 1e-5
    assert pen.item() >= 0.9 * sum(expected) / len(expected)
    pen.backward()
    assert lin.linear.weight.grad.abs().sum() > 0 and lin.linear.bias.grad.abs().sum() > 0  # bias via c_j
    lin.zero_grad()
    xg = x.clone().requires_grad_(True)
    create_regulariser("arm-sae:1.0,detach_weights=true").penalty(lin, xg, lin(xg), y).backward()
    assert lin.linear.bias.grad is None or lin.linear.bias.grad.abs().sum() == 0  # no path through c_j


def test_arm_sae_reaches_the_whole_network_unlike_arm_primal() -> None:
    net = TinyCNN(k=5).eval()  # BN in eval mode: per-sample gradients are exact
    x = make_inputs(4).requires_grad_(True)
    y = (torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    create_regulariser("arm-sae:1.0").penalty(net, x, net(x), y).backward()
    assert net.features[0].weight.grad.abs().sum() > 0  # the conv layer is regularised (double backprop)
    net.zero_grad()
    x2 = x.detach()
    create_regulariser("arm-primal:1.0").penalty(net, x2, net(x2), y).backward()
    assert net.features[0].weight.grad is None or net.features[0].weight.grad.abs().sum() == 0


def test_arm_single_is_eq_16() -> None:
    lin = _linear(k=3)
    x, y = _batch(k=3)
    xg = x.clone().requires_grad_(True)
    logits = lin(xg)
    pen = create_regulariser("arm-single:0.5,alpha=0.2").penalty(lin, xg, logits, y)
    norms = lin.linear.weight.detach().norm(dim=1)
    expected = 0.5 * (margin_weights(logits.detach(), y, 0.2) * norms).sum(1).mean()
    assert pen.item() == pytest.approx(expected.item(), rel=1e-4)
    pen.backward()
    assert lin.linear.weight.grad.abs().sum() > 0


def test_classification_losses() -> None:
    logits = torch.tensor([[2.0, -0.5], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert classification_loss("hinge", logits, y).item() == pytest.approx((0 + 0.5 + 1 + 0) / 2)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum") / 2
    assert classification_loss("logistic", logits, y).item() == pytest.approx(bce.item())
    with pytest.raises(LabelflipError, match="name"):
        classification_loss("svm", logits, y)


@pytest.mark.parametrize("spec", ["arm-sae:0.7", "arm-sae:0.7,detach_weights=true", "arm-single:0.7"])
def test_linear_fast_path_equals_double_backprop(spec: str) -> None:
    """LinearMultiLabel takes the closed form (gradients = rows of W); a plain nn.Sequential with the same weights
    goes through the batched autograd path: values and parameter gradients agree."""
    fast = _linear(k=4)
    slow = nn.Sequential(nn.Linear(5, 4))
    slow.load_state_dict({k.replace("linear", "0"): v for k, v in fast.state_dict().items()})
    x, y = _batch(k=4)
    grads = []
    for net in (fast, slow):
        xg = x.clone().requires_grad_(True)
        pen = create_regulariser(spec).penalty(net, xg, net(xg), y)
        weight, bias = list(net.parameters())
        grads.append((pen.detach(), *torch.autograd.grad(pen, [weight, bias], allow_unused=True)))
    for a, b in zip(grads[0], grads[1], strict=True):
        if a is None or b is None:
            assert (a is None or a.abs().sum() == 0) and (b is None or b.abs().sum() == 0)
        else:
            assert torch.allclose(a, b, atol=1e-5)

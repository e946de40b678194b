"""ML-CW: bounded below by the exact minimum on linear models, batched with per-sample state (equal to one sample
at a time), the binary search on c, weights, and the failure paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip import LabelflipError
from labelflip.attacks import create_attack
from labelflip.attacks.baselines import MLCarliniWagner
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def linear(weight: list[list[float]], bias: list[float]) -> MultiLabelModel:
    lin = nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return MultiLabelModel(lin)


W = [1.0, -2.0, 0.5, 0.25]
X = torch.full((1, 4), 0.5, dtype=torch.float64)


@pytest.mark.parametrize(("objective", "norm", "optimum"), [("l2", "l2", 0.3 / 2.3049), ("linf", "linf", 0.3 / 3.75)])
def test_linear_model_success_near_and_never_below_the_exact_minimum(objective: str, norm: str, optimum: float) -> None:
    """min L2 / L-inf to move w.x + b across the threshold logit is |w.x + b - t| / ||w||_2 / ||w||_1: a successful
    ML-CW example can never be smaller, and with enough steps it gets close."""
    model = linear([W], [-0.3 - 0.5 * sum(W)])
    attack = MLCarliniWagner(model, norm=norm, objective=objective, steps=300, binary_steps=6, const=1.0)
    res = attack(X, eps=0.25 if norm == "linf" else 1.0)
    assert res.extra["status"] == ["success"]
    needed = float(res.min_norm[0])
    assert optimum * (1 - 1e-4) <= needed <= 1.3 * optimum
    assert int(res.flips[0, 0]) == 1


def test_batched_equals_one_sample_at_a_time_with_per_sample_constants() -> None:
    """One Adam state, one c and one binary search per sample: the batch result equals separate runs."""
    model = linear([W], [-0.3 - 0.5 * sum(W)])  # logits -0.3, -1.15 and 0.825: three different distances
    x = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.7, 0.4, 0.1], [0.9, 0.1, 0.3, 0.6]], dtype=torch.float64)
    attack = MLCarliniWagner(model, norm="l2", steps=60, binary_steps=4, const=0.5, return_adv=True)
    batch = attack(x, eps=2.0)
    singles = [attack(x[i : i + 1], eps=2.0, sample_ids=[i]) for i in range(3)]
    for i, single in enumerate(singles):
        assert torch.allclose(batch.x_adv[0, i], single.x_adv[0, 0], atol=1e-12)
        assert batch.extra["const"][i] == single.extra["const"][0]
    assert len(set(batch.extra["const"])) > 1  # the binary search moved each sample's c on its own


def test_binary_search_raises_c_until_success() -> None:
    """With a tiny initial c the first outer steps fail (c x 10), later ones succeed; the final c is above c0."""
    model = linear([W], [-0.3 - 0.5 * sum(W)])
    res = MLCarliniWagner(model, norm="l2", steps=100, binary_steps=5, const=1e-4)(X, eps=1.0)
    assert res.extra["status"] == ["success"] and res.extra["const"][0] > 1e-4


def test_weights_and_already_on_target() -> None:
    model = linear([W, [0.0, 1.0, 0.0, 0.0]], [-0.3 - 0.5 * sum(W), -5.0])  # label 1 unreachable in [0, 1]
    res = MLCarliniWagner(model, norm="l2", steps=100)(X, eps=1.0, weights=[1.0, 0.0])
    assert res.extra["status"] == ["success"] and res.extra["labels_on_target"] == [1]
    both = MLCarliniWagner(model, norm="l2", steps=100)(X, eps=1.0)
    assert both.extra["status"] == ["partial"] and both.extra["labels_on_target"] == [1]
    same = MLCarliniWagner(model, return_adv=True)(X, 0.1, target=model.predict(X).double())
    assert same.extra["status"] == ["already_on_target"] and torch.equal(same.x_adv[0], X)
    assert float(same.min_norm[0]) == 0.0


class NaNBeyond(nn.Module):
    """A linear model whose logits turn NaN once the first input coordinate exceeds 0.6."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
            self.lin.bias.copy_(torch.tensor([-0.8], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x)
        return torch.where(x[:, :1] > 0.6, torch.full_like(z, float("nan")), z)


def test_a_non_finite_loss_stops_the_sample_without_nan() -> None:
    res = MLCarliniWagner(NaNBeyond(), norm="l2", steps=200, const=100.0, return_adv=True)(X, eps=1.0)
    assert res.extra["stop_reason"] == ["non_finite"] and res.extra["status"] == ["failed"]
    assert torch.isfinite(res.x_adv).all() and torch.isfinite(res.min_norm).all()


def test_registered_and_validated() -> None:
    model = MultiLabelModel(TinyCNN())
    attack = create_attack("ml-cw:steps=5,binary_steps=2,objective=l2", model, norm="linf")
    assert isinstance(attack, MLCarliniWagner) and (attack.steps, attack.binary_steps, attack.objective) == (5, 2, "l2")
    assert create_attack("ml-cw", model, norm="l2").objective == "l2"
    assert create_attack("ml-cw", model).objective == "linf"
    with pytest.raises(LabelflipError, match="objective"):
        MLCarliniWagner(model, objective="l1")
    with pytest.raises(LabelflipError, match="const"):
        MLCarliniWagner(model, const=0.0)
    res = attack(make_inputs(2), eps=[0.0, 0.05])
    assert res.min_norm is not None and torch.isfinite(res.min_norm).all()

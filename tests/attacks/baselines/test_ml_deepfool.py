"""ML-DeepFool: exact on linear models (one pseudo-inverse step), the published mode, the failure paths, the
batched Jacobian and the fixed tie-break."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip import LabelflipError
from labelflip.attacks import create_attack
from labelflip.attacks.baselines import MLDeepFool, label_jacobian, min_norm_step
from labelflip.attacks.baselines.ml_deepfool import BestIterate
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def linear(weight: list[list[float]], bias: list[float]) -> MultiLabelModel:
    """logits = W x + b in float64 on (N, D) inputs."""
    lin = nn.Linear(len(weight[0]), len(weight)).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        lin.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return MultiLabelModel(lin)


X = torch.full((1, 4), 0.5, dtype=torch.float64)


def test_min_norm_step_matches_the_closed_form() -> None:
    """One row: delta = w (t - w.x - b) / ||w||^2, so ||delta||_2 = |w.x + b - t| / ||w||_2."""
    w = torch.tensor([1.0, -2.0, 0.5, 0.25], dtype=torch.float64)
    b = torch.tensor([[0.3]], dtype=torch.float64)
    delta, singular = min_norm_step(w.view(1, 1, 4), b, torch.ones(1, 1, dtype=torch.bool))
    assert torch.allclose(delta[0], w * 0.3 / w.dot(w), atol=1e-15)
    assert float(delta[0].norm()) == pytest.approx(0.3 / float(w.norm()), rel=1e-12)
    assert not bool(singular[0])
    # several rows: the minimum-norm solution is the pseudo-inverse solution; inactive rows are ignored
    a = torch.randn(2, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rhs = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rows = torch.tensor([[True, True, True], [True, False, True]])
    delta, singular = min_norm_step(a, rhs, rows)
    assert torch.allclose(delta[0], torch.linalg.pinv(a[0]) @ rhs[0], atol=1e-12)
    keep = [0, 2]
    assert torch.allclose(delta[1], torch.linalg.pinv(a[1, keep]) @ rhs[1, keep], atol=1e-12)
    assert not bool(singular.any())


def test_one_label_linear_model_is_exact_in_one_step() -> None:
    """min L2 to move w.x + b across the threshold logit t is |w.x + b - t| / ||w||_2 (times 1 + overshoot)."""
    w = [1.0, -2.0, 0.5, 0.25]
    model = linear([w], [-0.3 - 0.5 * sum(w)])  # logit -0.3 at x = 0.5: predicted 0, target 1
    optimum = 0.3 / torch.tensor(w, dtype=torch.float64).norm()
    res = MLDeepFool(model, norm="l2", overshoot=0.02)(X, eps=[0.05, 10.0])
    assert res.extra["status"] == ["success"] and res.extra["iterations"] == [1]
    assert float(res.min_norm[0]) == pytest.approx(1.02 * float(optimum), rel=1e-9)
    assert res.flips.tolist() == [[0], [1]]  # clipped to 0.05 (< optimum 0.13) it does not flip
    # the L-inf report of the same (L2) step: 1.02 * 0.3 * max|w| / ||w||^2
    res_inf = MLDeepFool(model, norm="linf", overshoot=0.02)(X, eps=0.2)
    assert float(res_inf.min_norm[0]) == pytest.approx(1.02 * 0.3 * 2.0 / sum(v * v for v in w), rel=1e-9)


def test_full_rank_linear_model_reaches_every_target_in_one_step() -> None:
    weight = [[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, -1.0, 3.0], [-1.0, 0.0, 0.0, 0.0]]
    model = linear(weight, [0.1, -0.2, 0.05])
    w = torch.tensor(weight, dtype=torch.float64)
    z = model(X).detach()
    expected = 1.02 * (torch.linalg.pinv(w) @ (-z[0]))  # thresholds at logit 0
    expected = expected.detach()
    assert float((X[0] + expected).min()) > 0 and float((X[0] + expected).max()) < 1  # bounds do not bind
    res = MLDeepFool(model, norm="l2", return_adv=True)(X, eps=10.0)
    assert res.extra["status"] == ["success"] and res.extra["iterations"] == [1]
    assert int(res.flips[0, 0]) == 3
    assert torch.allclose(res.x_adv[0, 0] - X[0], expected, atol=1e-12)


def test_published_mode_pulls_labels_on_target_onto_the_threshold() -> None:
    """Target: flip label 0 only (labels 1, 2 already on target). Default: one step along label 0's gradient alone.
    Published: every label's boundary is in the system, so labels 1 and 2 are pulled onto their thresholds (where
    the strict ``>`` no longer predicts a positive one) and the target is not reached."""
    weight = [[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, -1.0, 3.0], [-1.0, 0.0, 0.0, 0.0]]
    model = linear(weight, [0.1, -0.2, 0.05])
    target = model.predict(X).double()
    target[0, 0] = 1 - target[0, 0]
    fixed = MLDeepFool(model, norm="l2", return_adv=True)(X, 10.0, target=target)
    d_fixed = fixed.x_adv[0, 0] - X[0]
    w0 = torch.tensor(weight[0], dtype=torch.float64)
    assert float(torch.nn.functional.cosine_similarity(d_fixed, w0, dim=0)) == pytest.approx(1.0, abs=1e-12)
    assert fixed.extra["status"] == ["success"] and fixed.extra["iterations"] == [1]
    published = MLDeepFool(model, norm="l2", published=True, steps=5)(X, 10.0, target=target)
    assert published.extra["status"] != ["success"] and published.extra["iterations"] == [5]


def test_singular_system_takes_the_least_squares_step_or_stops_when_published() -> None:
    """Two labels with the same gradient and different offsets: A A^T is singular. The default takes the
    least-squares minimum-norm step (then the remaining label alone); the published code skips the sample."""
    w = [1.0, -1.0, 0.5, 0.2]
    s = 0.5 * sum(w)
    model = linear([w, w], [-0.3 - s, -0.6 - s])  # logits -0.3 and -0.6: both predicted 0, targets 1
    res = MLDeepFool(model, norm="l2")(X, 10.0)
    assert res.extra["singular_steps"][0] >= 1
    assert res.extra["status"] == ["success"] and int(res.flips[0, 0]) == 2
    assert torch.isfinite(res.min_norm).all()
    pub = MLDeepFool(model, norm="l2", published=True, return_adv=True)(X, 10.0)
    assert pub.extra["stop_reason"] == ["singular"] and pub.extra["status"] == ["failed"]
    assert float(pub.min_norm[0]) == 0.0 and torch.equal(pub.x_adv[0], X)


def test_zero_gradient_and_already_on_target() -> None:
    model = linear([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], [0.2, -1.0])
    res = MLDeepFool(model, norm="l2")(X, 1.0, weights=[0.0, 1.0])  # label 1 cannot move: zero gradient
    assert res.extra["stop_reason"] == ["zero_gradient"] and res.extra["status"] == ["failed"]
    assert float(res.min_norm[0]) == 0.0
    same = MLDeepFool(model, norm="l2", return_adv=True)(X, 1.0, target=model.predict(X).double())
    assert same.extra["status"] == ["already_on_target"] and torch.equal(same.x_adv[0], X)
    assert float(same.min_norm[0]) == 0.0


def test_label_jacobian_is_one_batched_pass_equal_to_per_label_backward() -> None:
    model = MultiLabelModel(TinyCNN()).eval()
    x = make_inputs(3)
    z, jac = label_jacobian(model, x)
    assert jac.shape == (3, 6, 3, 8, 8)
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    for k in range(6):
        (g,) = torch.autograd.grad(out[:, k].sum(), xg, retain_graph=True)
        assert torch.allclose(jac[:, k], g, atol=1e-6)
    assert torch.allclose(z, out.detach())
    assert all(p.grad is None for p in model.parameters())


def test_best_iterate_breaks_ties_by_perturbation_norm_not_image_norm() -> None:
    """The published code kept, among iterates with equally many labels on target, the one with the smallest
    image norm ||x_k||; the fix keeps the smallest perturbation ||x_k - x||."""
    x0 = torch.tensor([[0.9, 0.9]])
    best = BestIterate.start(x0, torch.tensor([1]), "l2")
    idx = torch.tensor([0])
    best.update(idx, torch.tensor([[0.95, 0.9]]), x0, torch.tensor([2]))  # more labels: taken
    best.update(idx, torch.tensor([[0.70, 0.9]]), x0, torch.tensor([2]))  # tie, darker image, larger step: not taken
    assert torch.equal(best.adv, torch.tensor([[0.95, 0.9]]))
    best.update(idx, torch.tensor([[0.93, 0.9]]), x0, torch.tensor([2]))  # tie, smaller step: taken
    assert torch.equal(best.adv, torch.tensor([[0.93, 0.9]]))
    best.update(idx, torch.tensor([[0.5, 0.1]]), x0, torch.tensor([1]))  # fewer labels: never taken
    assert torch.equal(best.adv, torch.tensor([[0.93, 0.9]])) and int(best.score[0]) == 2


def test_registered_and_validated() -> None:
    model = MultiLabelModel(TinyCNN())
    attack = create_attack("ml-deepfool:steps=3,overshoot=0.1", model)
    assert isinstance(attack, MLDeepFool) and attack.kind == "minimum-norm"
    assert (attack.steps, attack.overshoot, attack.published) == (3, 0.1, False)
    with pytest.raises(LabelflipError, match="overshoot"):
        MLDeepFool(model, overshoot=-1.0)
    with pytest.raises(LabelflipError, match="steps"):
        MLDeepFool(model, steps=0)

"""SAE (seed 004, Eq. 12, Algorithm 1): batched per-label gradients, the Gram greedy against a literal transcription
of Algorithm 1 and brute force, closed forms for linear models, the margin clamp and the alignment diagnostic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from labelflip import LabelflipError
from labelflip.estimators import greedy_gram, greedy_vectors, label_gradients, phi_align, sae
from labelflip.models import MultiLabelModel
from labelflip.robust import tabular_model
from tests.helpers import TinyCNN, make_inputs


def _algorithm1(vectors: np.ndarray) -> tuple[float, set[int]]:
    """Algorithm 1 as printed in the paper, on explicit vectors a_1..a_m (no Gram trick)."""
    selected: set[int] = set()
    lb = cb = 0.0
    while len(selected) < len(vectors):
        lb = cb
        rest = [j for j in range(len(vectors)) if j not in selected]
        base = vectors[list(selected)].sum(axis=0) if selected else np.zeros(vectors.shape[1])
        values = [np.linalg.norm(base + vectors[j]) for j in rest]
        cb = max(values)
        if cb < lb:
            return lb, selected
        selected.add(rest[int(np.argmax(values))])
    return cb, selected


def _linear(w: torch.Tensor, b: torch.Tensor) -> MultiLabelModel:
    lin = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return MultiLabelModel(lin, bounds=(-100.0, 100.0))


def test_greedy_gram_is_algorithm_1_and_a_lower_bound() -> None:
    gen = torch.Generator().manual_seed(0)
    vecs = torch.randn(12, 7, 5, generator=gen, dtype=torch.float64)
    value, chosen = greedy_gram(vecs @ vecs.transpose(1, 2))
    v_value, v_chosen = greedy_vectors(vecs)
    for i in range(vecs.shape[0]):
        ref_value, ref_set = _algorithm1(vecs[i].numpy())
        assert value[i].item() == pytest.approx(ref_value, rel=1e-10)
        assert set(chosen[i].nonzero().flatten().tolist()) == ref_set
        assert v_value[i].item() == pytest.approx(ref_value, rel=1e-10)
        assert torch.equal(v_chosen[i], chosen[i])
        brute = max(
            np.linalg.norm(vecs[i].numpy()[list(s)].sum(axis=0))
            for k in range(1, 8)
            for s in itertools.combinations(range(7), k)
        )
        assert value[i].item() <= brute + 1e-9
        assert value[i].item() >= 0.7 * brute  # the greedy is close on random instances


def test_orthogonal_vectors_select_everything() -> None:
    vecs = torch.eye(4, dtype=torch.float64).unsqueeze(0) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1)
    value, chosen = greedy_gram(vecs @ vecs.transpose(1, 2))
    assert chosen.all() and value.item() == pytest.approx(30**0.5)


def test_label_gradients_match_per_label_backward() -> None:
    net = TinyCNN(k=5).eval()
    x = make_inputs(4)
    logits, jac = label_gradients(net, x)
    assert jac.shape == (4, 5, 3, 8, 8)
    for j in range(5):
        xs = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(net(xs)[:, j].sum(), xs)
        assert torch.allclose(jac[:, j], g, atol=1e-6)
    assert torch.allclose(logits, net(x))


def test_linear_sae_closed_form_and_prediction_labels() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(5, generator=gen, dtype=torch.float64)
    model = _linear(w, b)
    x = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    res = sae(model, x)
    h = x @ w.T + b
    for i in range(9):
        a = (-w / h[i].unsqueeze(1)).numpy()  # a_j = -grad h_j / h_j (Eq. 9 ff.)
        assert res.scores[i].item() == pytest.approx(_algorithm1(a)[0], rel=1e-9)
    pred = (h > 0).double()
    assert torch.allclose(sae(model, x, y=pred).scores, res.scores)
    flipped = sae(model, x, y=1 - pred)  # wrong labels sit on the boundary: clamped, large but finite
    assert torch.isfinite(flipped.scores).all() and (flipped.scores >= res.scores - 1e-9).all()
    # invariant to rescaling the whole classifier (a_j = -w_j / h_j)
    assert torch.allclose(sae(_linear(3 * w, 3 * b), x).scores, res.scores)
    assert torch.equal(sae(model, x, batch_size=2).scores, res.scores)


def test_margin_clamp_and_linf_dual_norm() -> None:
    w = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    model = _linear(w, torch.zeros(1, dtype=torch.float64))
    on_boundary = torch.zeros(1, 2, dtype=torch.float64)
    assert sae(model, on_boundary, delta=1e-3).scores.item() == pytest.approx(5.0 / 1e-3)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # h = 3
    assert sae(model, x).scores.item() == pytest.approx(5.0 / 3.0)
    assert sae(model, x, norm="linf").scores.item() == pytest.approx(7.0 / 3.0)  # q = 1 for an L-inf budget


def test_aligned_boundaries_are_more_attackable() -> None:
    """The paper's Fig. 1: same margins, aligned decision boundaries -> a larger SAE."""
    aligned = _linear(torch.tensor([[1.0, 0.0], [0.9, 0.1]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    orth = _linear(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    assert sae(aligned, x).mean() > 1.3 * sae(orth, x).mean()


def test_deep_model_and_bad_inputs() -> None:
    model = MultiLabelModel(TinyCNN(k=6))
    res = sae(model, make_inputs(5))
    assert res.scores.shape == (5,) and torch.isfinite(res.scores).all() and (res.scores > 0).all()
    assert res.selected.shape == (5, 6) and res.selected.any(dim=1).all()
    with pytest.raises(LabelflipError, match="norm"):
        sae(model, make_inputs(2), norm="l3")
    with pytest.raises(LabelflipError, match="delta"):
        sae(model, make_inputs(2), delta=0.0)
    with pytest.raises(LabelflipError, match="bounds"):
        sae(tabular_model(nn.Linear(3, 2)), torch.full((2, 3), 5000.0))


def test_phi_align() -> None:
    assert phi_align(torch.ones(3, 4)) == pytest.approx(1.0)
    assert phi_align(torch.eye(4)) == pytest.approx(0.25)
    with pytest.raises(LabelflipError):
        phi_align(torch.ones(4))

"""Shared machinery of the attackability estimators and the transferability regularisers.

* :func:`label_gradients`: the input gradient of **every** logit, ``J[n, j] = ∇_x h_j(x_n)``, in one batched
  backward pass (``torch.autograd.grad(..., is_grads_batched=True)``: a vmap over the m one-hot output
  cotangents), optionally differentiable (``create_graph=True``) for double backprop. Scaled-dot-product
  attention runs with its math kernel there, because the fused CPU kernels have no double backward.
* :func:`greedy_gram`: Algorithm 1 of the SAE paper (seed 004) on the Gram matrix of the vectors, batched over
  samples: greedily add the vector that maximises ``‖Σ_{i∈S} a_i‖₂`` and stop when no addition increases it.
* :func:`greedy_vectors`: the same greedy for any ``q``-norm on explicit vectors (``q = 1`` is the dual of an
  L-inf budget).
* :func:`decision_offsets`: ``logit(threshold)`` per label, so that ``h_j(x) - offset_j > 0`` is the prediction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import fail

__all__ = ["decision_offsets", "greedy_gram", "greedy_vectors", "label_gradients", "math_attention"]


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run scaled-dot-product attention with the math kernel (twice differentiable, vmap-able)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def label_gradients(
    module: nn.Module,
    x: Tensor,
    *,
    create_graph: bool = False,
    logits: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The logits and the input gradient of every logit, in one batched backward pass.

    Samples must not interact in the forward pass (eval-mode BatchNorm), because the gradient of
    ``Σ_n h_j(x_n)`` with respect to ``x`` is taken; in train mode BatchNorm couples the samples slightly (the
    usual double-backprop practice).

    Args:
        module: a network (or :class:`~labelflip.models.MultiLabelModel`) mapping ``x`` to logits ``(N, m)``.
        x: inputs ``(N, ...)``. When ``logits`` is given, ``x`` must be the tensor (requiring grad) it was computed
            from; otherwise a detached copy is made to require grad.
        create_graph: keep the graph of the gradients (double backprop: the result is differentiable in the
            parameters and in ``x``).
        logits: the ``(N, m)`` output of ``module(x)`` when the caller already has it (its graph is retained).

    Returns:
        ``(logits (N, m), J (N, m, *x.shape[1:]))`` with ``J[n, j] = ∂h_j(x_n)/∂x_n``.
    """
    if logits is None:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), math_attention():
            logits = module(x)
    elif not x.requires_grad:
        raise fail("label_gradients", "x", "the input tensor (requiring grad) the logits were computed from", x)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise fail("label_gradients", "logits", f"an (N, m) tensor with N = {x.shape[0]}", logits)
    n, m = logits.shape
    eye = torch.eye(m, dtype=logits.dtype, device=logits.device).unsqueeze(1).expand(m, n, m)
    with torch.enable_grad(), math_attention():
        (grads,) = torch.autograd.grad(
            logits, x, grad_outputs=eye, is_grads_batched=True, create_graph=create_graph, retain_graph=True
        )
    return logits, grads.transpose(0, 1)


def decision_offsets(model: nn.Module, m: int, *, device: torch.device | None = None) -> Tensor:
    """``logit(threshold)`` per label ``(m,)`` float64 (0 for the default threshold 0.5 and plain modules)."""
    th = getattr(model, "threshold", None)
    if not isinstance(th, Tensor):
        return torch.zeros(m, dtype=torch.float64, device=device)
    th = th.detach().to(device=device, dtype=torch.float64)
    return torch.logit(th).expand(m).clone() if th.ndim == 0 else torch.logit(th)


def greedy_gram(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Algorithm 1 of the SAE paper on Gram matrices ``Γ = A Aᵀ``, batched over samples.

    For each sample, with ``s = Σ_{i∈S} a_i`` and ``u = Γ 1_S``: repeatedly pick ``j* = argmax_{j∉S}
    ‖s + a_j‖² = ‖s‖² + 2 u_j + Γ_jj``; stop when the best value ``CB`` falls below the previous one ``LB`` (no
    addition increases the norm), else add ``j*``. The greedy never touches the ``d``-dimensional vectors.

    Args:
        gram: ``(N, m, m)`` symmetric PSD Gram matrices (any float dtype; computed in float64).

    Returns:
        ``(value (N,), selected (N, m) bool)``: ``value = ‖Σ_{i∈S} a_i‖₂`` of the selected set ``S`` (the paper's
        ``LB`` when it stopped early, ``CB`` when every label was added); a lower bound on ``max_b ‖Σ b_j a_j‖``.
    """
    if gram.ndim != 3 or gram.shape[1] != gram.shape[2]:
        raise fail("greedy_gram", "gram", "an (N, m, m) tensor of Gram matrices", gram)
    # numpy on the CPU: m small steps over (N, m) arrays cost microseconds each, torch ops tens of them
    g = gram.detach().to("cpu", torch.float64).numpy()
    n, m, _ = g.shape
    selected = np.zeros((n, m), dtype=bool)
    u = np.zeros((n, m))
    s2 = np.zeros(n)
    best_prev = np.zeros(n)  # CB of the last accepted step
    active = np.ones(n, dtype=bool)
    diag = np.diagonal(g, axis1=1, axis2=2)
    for _ in range(m):
        cand = np.where(selected, -np.inf, s2[:, None] + 2 * u + diag)
        j = cand.argmax(axis=1)
        best = cand[np.arange(n), j]
        cb = np.sqrt(np.maximum(best, 0.0))
        take = active & (cb >= best_prev)  # Alg. 1 line 7: break if CB < LB
        if not take.any():
            break
        idx = np.flatnonzero(take)
        selected[idx, j[idx]] = True
        u[idx] += g[idx, :, j[idx]]
        s2[idx] = best[idx]
        best_prev[idx] = cb[idx]
        active = take
    value = torch.from_numpy(np.sqrt(np.maximum(s2, 0.0))).to(gram.device)
    return value, torch.from_numpy(selected).to(gram.device)


def greedy_vectors(vectors: Tensor, q: float = 2.0) -> tuple[Tensor, Tensor]:
    """Algorithm 1 on explicit vectors with the ``q``-norm: ``(value (N,), selected (N, m) bool)``.

    Args:
        vectors: ``(N, m, d)`` the ``a_j`` of each sample (computed in float64).
        q: the dual norm of the budget's ``p``-norm (``1/p + 1/q = 1``): 2 for L2, 1 for L-inf.
    """
    if vectors.ndim != 3:
        raise fail("greedy_vectors", "vectors", "an (N, m, d) tensor", vectors)
    a = vectors.detach().to(torch.float64)
    n, m, _ = a.shape
    selected = torch.zeros(n, m, dtype=torch.bool, device=a.device)
    s = torch.zeros(n, a.shape[2], dtype=torch.float64, device=a.device)
    value = torch.zeros(n, dtype=torch.float64, device=a.device)
    active = torch.ones(n, dtype=torch.bool, device=a.device)
    rows = torch.arange(n, device=a.device)
    for _ in range(m):
        cand = torch.linalg.vector_norm(s.unsqueeze(1) + a, ord=q, dim=2).masked_fill(selected, float("-inf"))
        best, j = cand.max(dim=1)
        take = active & (best >= value)
        if not bool(take.any()):
            break
        selected[rows[take], j[take]] = True
        s[take] += a[rows[take], j[take]]
        value = torch.where(take, best, value)
        active = take
    return value, selected

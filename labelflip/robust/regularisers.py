"""Regularisers for adversarially robust multi-label training (SAE paper, seed 004, §4.2 and §5.3), one registry.

Each regulariser adds ``λ R`` to the mean training loss (Eq. 15's ``(λ/n) Σ_i φ̂`` is ``λ`` times a batch mean):

* ``none``: R = 0 (Table 3 "non").
* ``l2``: ``R = ‖W‖_F²`` on the last linear layer ``W`` (Table 3 "L2"; the same layer as the nuclear norm so the
  comparison is fair, SPEC-related-methods §1.7 [A]).
* ``nuclear``: ``R = ‖W‖_* = Σ_k σ_k(W)`` on the last linear layer (Table 3 "nl", Table 2; the AAAI-21 hardening).
  ``mode="prox"`` (default) applies the proximal step ``W <- U diag(max(σ - lr·λ, 0)) Vᵀ`` after each optimiser
  step (with an adaptive optimiser ``lr`` is the current learning rate: a heuristic step size);
  ``mode="subgradient"`` backpropagates ``λ‖W‖_*`` (sub-gradient ``U Vᵀ``).
* ``arm-primal``: ``R = mean_i C_{W,z_i}``, ``C_{W,z} = max_b ‖Σ_j b_j y_j w_j‖₂`` (Theorem 1, Eq. 6), the
  maximum taken by the greedy of Algorithm 1 on the Gram ``(y yᵀ) ⊙ (W Wᵀ)``; the selected set is held fixed
  for the gradient (sub-gradient of a max). Acts on ``W`` only.
* ``arm-sae``: ``R = mean_i φ̂_{h,x_i}`` (Eqs. 13-15), ``φ̂ = max_b ‖Σ_j b_j c_j ∇h_j(x)‖₂`` with
  ``c_j = -y_j / max(e^{y_j h_j(x)}, α)`` and ground-truth ``y``. The per-label input gradients come from one
  batched backward pass (detached) to select ``b`` with Algorithm 1; then one differentiable vector-Jacobian
  product ``g = Σ_j b_j c_j ∇h_j = ∂(Σ_j b_j c_j h_j)/∂x`` with ``create_graph=True`` (double backprop) gives a
  gradient through the whole network and through ``c`` (``detach_weights=True`` stops the latter).
  ``α`` is not given in the paper; default 0.1 (SPEC [A]).
* ``arm-single``: ``R = mean_i Σ_k ‖∇h_k(x_i)‖₂ / max(e^{y_k h_k(x_i)}, α)`` (Eq. 16, the ablation that penalises
  labels separately): m differentiable input gradients (the costliest of the six for deep networks).

Usage: ``create_regulariser("arm-sae:0.01,alpha=0.1")`` or ``create_regulariser("nuclear", lam=1e-3)``.
BatchNorm in train mode couples the samples of a batch, so the batched input gradients mix samples slightly
(the usual practice for double backprop; SPEC-related-methods §2.3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from labelflip._registry import Param, Registry, Spec
from labelflip._validation import check_choice, check_float, fail
from labelflip.estimators.gradients import greedy_gram, label_gradients, math_attention
from labelflip.models import MultiLabelModel

__all__ = [
    "REGULARISERS",
    "Regulariser",
    "create_regulariser",
    "last_linear_weight",
    "list_regularisers",
    "margin_weights",
]

REGULARISERS: Registry[Any] = Registry("regulariser")
"""All regularisers by name (``list_regularisers()``): none, l2, nuclear, arm-primal, arm-sae, arm-single."""

_LAM = Param("lam", float, 1e-3, "the regularisation weight λ (>= 0)", 0.0)
_ALPHA = Param("alpha", float, 0.1, "the cap α of max(e^{y h}, α) (seed 004 Eq. 13; not given there)", 1e-12)


def last_linear_weight(module: nn.Module) -> Tensor:
    """The per-label weight matrix ``W`` ``(K, d')`` of a network's last linear layer.

    Looked up as: ``module.classifier_weight()``; a group-FC parameter ``fc_weight`` (Query2Label-style heads,
    one row per label); else the weight of the last ``nn.Linear`` in ``module.modules()`` order.
    """
    net = module.module if isinstance(module, MultiLabelModel) else module
    if hasattr(net, "classifier_weight"):
        return net.classifier_weight()
    if isinstance(getattr(net, "fc_weight", None), nn.Parameter):
        return net.fc_weight
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise fail(
            "last_linear_weight",
            "module",
            "a network with a final linear layer (or classifier_weight())",
            type(net).__name__,
            "add a classifier_weight() method returning the (K, d) weight.",
        )
    return linears[-1].weight


def _input_weight(module: nn.Module, x: Tensor) -> Tensor | None:
    """``W`` when ``module`` is linear in its (flattened) input (``linear_parameters()``): then ``∇_x h_j = w_j`` for
    every sample and the input-gradient regularisers need no autograd pass over the inputs."""
    if isinstance(module, MultiLabelModel) or not hasattr(module, "linear_parameters"):
        return None
    w = module.linear_parameters()[0]
    return w if w.ndim == 2 and w.shape[1] == x[0].numel() else None


def margin_weights(logits: Tensor, y: Tensor, alpha: float) -> Tensor:
    """``1 / max(e^{y_j h_j}, α)`` ``(N, K)`` with ``y = 2·labels - 1`` (the margin weighting of Eqs. 13-16).

    It decays like ``e^{-margin}`` for correct labels and grows up to ``1/α`` for misclassified ones."""
    y_pm = 2 * y.to(logits.dtype) - 1
    return 1.0 / torch.exp((y_pm * logits).clamp(max=60.0)).clamp_min(alpha)


class Regulariser:
    """A training-time regulariser: ``penalty(module, x, logits, y)`` is added to the loss; ``after_step`` runs
    after each optimiser step (proximal updates).

    Attributes:
        lam: the weight λ. needs_input_grad: whether ``x`` must require grad before the forward pass.
    """

    name = "none"
    needs_input_grad = False

    def __init__(self, lam: float = 0.0) -> None:
        self.lam = check_float(type(self).__name__, "lam", lam, low=0.0, fix="a non-negative weight, e.g. 1e-3.")

    def penalty(self, module: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        """``λ R``: a differentiable scalar. ``x`` ``(B, ...)`` (requires grad if ``needs_input_grad``),
        ``logits = module(x)`` ``(B, K)``, ``y`` ``(B, K)`` ground truth in {0, 1}."""
        return logits.new_zeros(())

    def after_step(self, module: nn.Module, lr: float) -> None:
        """Called after every optimiser step with the current learning rate."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lam={self.lam:g})"


@REGULARISERS.register("none", label="none", description="no regularisation (Table 3 'non')")
class NoRegulariser(Regulariser):
    """No regularisation."""

    def __init__(self) -> None:
        super().__init__(0.0)


@REGULARISERS.register("l2", params=[_LAM], label="L2", description="λ ‖W‖_F² on the last linear layer")
class L2Regulariser(Regulariser):
    """``λ ‖W‖_F²`` on the last linear layer."""

    name = "l2"

    def penalty(self, module: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        return self.lam * last_linear_weight(module).pow(2).sum()


@REGULARISERS.register(
    "nuclear",
    params=[_LAM, Param("mode", str, "prox", "'prox' (proximal step) or 'subgradient'")],
    label="nuclear",
    description="λ ‖W‖_* (nuclear norm) on the last linear layer, proximal step or sub-gradient",
)
class NuclearRegulariser(Regulariser):
    """``λ ‖W‖_*`` on the last linear layer, by proximal steps (default) or sub-gradient."""

    name = "nuclear"

    def __init__(self, lam: float = 1e-3, mode: str = "prox") -> None:
        super().__init__(lam)
        self.mode = check_choice("NuclearRegulariser", "mode", mode, ("prox", "subgradient"))

    def penalty(self, module: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        w = last_linear_weight(module)
        if self.mode == "subgradient":
            return self.lam * torch.linalg.matrix_norm(w, ord="nuc")
        return self.lam * torch.linalg.matrix_norm(w.detach(), ord="nuc")  # reported; the prox step acts

    def after_step(self, module: nn.Module, lr: float) -> None:
        if self.mode != "prox" or self.lam == 0:
            return
        w = last_linear_weight(module)
        with torch.no_grad():
            u, s, vh = torch.linalg.svd(w.detach().to(torch.float64), full_matrices=False)
            shrunk = (u * (s - lr * self.lam).clamp_min(0.0)) @ vh
            w.copy_(shrunk.to(w.dtype))

    def __repr__(self) -> str:
        return f"NuclearRegulariser(lam={self.lam:g}, mode={self.mode!r})"


@REGULARISERS.register(
    "arm-primal", params=[_LAM], label="ARM-Primal", description="λ mean C_{W,z} (Theorem 1, Eq. 6) on the last layer"
)
class ARMPrimal(Regulariser):
    """ARM-Primal (Eq. 6): ``λ mean_i max_b ‖Σ_j b_j y_ij w_j‖₂`` with the greedy's set held fixed."""

    name = "arm-primal"

    def penalty(self, module: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        w = last_linear_weight(module)
        y_pm = 2 * y.to(w.dtype) - 1
        with torch.no_grad():
            gram = y_pm.unsqueeze(2) * y_pm.unsqueeze(1) * (w @ w.T).unsqueeze(0)
            _, chosen = greedy_gram(gram)
        s = (chosen.to(w.dtype) * y_pm) @ w  # (B, d')
        return self.lam * (s.pow(2).sum(dim=1) + 1e-12).sqrt().mean()


@REGULARISERS.register(
    "arm-sae",
    params=[_LAM, _ALPHA, Param("detach_weights", bool, False, "stop the gradient through c_j = -y/max(e^{yh}, α)")],
    label="ARM-SAE",
    description="λ mean φ̂_{h,x} (seed 004 Eqs. 13-15): SAE with margin weights, double backprop",
)
class ARMSAE(Regulariser):
    """ARM-SAE (Eqs. 13-15): ``λ mean_i max_b ‖Σ_j b_j c_j ∇h_j(x_i)‖₂``, ``c_j = -y_j / max(e^{y_j h_j}, α)``."""

    name = "arm-sae"
    needs_input_grad = True

    def __init__(self, lam: float = 1e-3, alpha: float = 0.1, detach_weights: bool = False) -> None:
        super().__init__(lam)
        self.alpha = check_float("ARMSAE", "alpha", alpha, low=0.0, low_inclusive=False, fix="e.g. alpha=0.1.")
        self.detach_weights = bool(detach_weights)

    def penalty(self, module: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        if self.lam == 0:
            return logits.new_zeros(())
        y_pm = 2 * y.to(logits.dtype) - 1
        c = -y_pm * margin_weights(logits, y, self.alpha)
        cd = c.detach().to(torch.float64)
        w = _input_weight(module, x)
        if w is None:
            _, grads = label_gradients(module, x, logits=logits)  # (B, K, ...) detached, one batched pass
            jac = grads.flatten(2).to(torch.float64)
            inner = jac @ jac.transpose(1, 2)
        else:  # linear model: the gradients are the rows of W
            wd = w.detach().to(torch.float64)
            inner = (wd @ wd.T).unsqueeze(0)
        _, chosen = greedy_gram(cd.unsqueeze(2) * cd.unsqueeze(1) * inner)
        weights = chosen.to(c.dtype) * (c.detach() if self.detach_weights else c)
        if w is None:
            with math_attention():
                (g,) = torch.autograd.grad(logits, x, grad_outputs=weights, create_graph=True, retain_graph=True)
        else:
            g = weights @ w  # = sum_j b_j c_j w_j, differentiable in W and (through c) in the logits
        return self.lam * (g.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt().mean()

    def __repr__(self) -> str:
        return f"ARMSAE(lam={self.lam:g}, alpha={self.alpha:g}, detach_weights={self.detach_weights})"


@REGULARISERS.register(
    "arm-single",
    params=[_LAM, _ALPHA],
    label="ARM-Single",
    description="λ mean Σ_k ‖∇h_k‖₂ / max(e^{y h_k}, α) (seed 004 Eq. 16): labels penalised separately",
)
class ARMSingle(Regulariser):
    """ARM-Single (Eq. 16): ``λ mean_i Σ_k ‖∇h_k(x_i)‖₂ / max(e^{y_k h_k(x_i)}, α)``."""

    name = "arm-single"
    needs_input_grad = True

    def __init__(self, lam: float = 1e-3, alpha: float = 0.1) -> None:
        super().__init__(lam)
        self.alpha = check_float("ARMSingle", "alpha", alpha, low=0.0, low_inclusive=False, fix="e.g. alpha=0.1.")

    def penalty(self, module: nn.Module, x: Tensor, logits: Tensor, y: Tensor) -> Tensor:
        if self.lam == 0:
            return logits.new_zeros(())
        w = _input_weight(module, x)
        if w is None:
            _, grads = label_gradients(module, x, logits=logits, create_graph=True)
            norms = (grads.flatten(2).pow(2).sum(dim=2) + 1e-12).sqrt()  # (B, K)
        else:  # linear model: ||grad h_k|| = ||w_k|| for every sample
            norms = (w.pow(2).sum(dim=1) + 1e-12).sqrt().unsqueeze(0)
        return self.lam * (norms * margin_weights(logits, y, self.alpha)).sum(dim=1).mean()

    def __repr__(self) -> str:
        return f"ARMSingle(lam={self.lam:g}, alpha={self.alpha:g})"


def list_regularisers(pattern: str = "*") -> list[str]:
    """Registered regulariser names matching a shell-style pattern."""
    return REGULARISERS.list(pattern)


def create_regulariser(spec: str | Spec | Regulariser = "none", **params: Any) -> Regulariser:
    """The regulariser a spec names: ``"arm-sae:0.01,alpha=0.1"``, ``"nuclear"`` with ``lam=1e-3``, ...
    (a :class:`Regulariser` instance is returned as is)."""
    if isinstance(spec, Regulariser):
        if params:
            raise fail("create_regulariser", "params", "none when a Regulariser instance is given", params)
        return spec
    return REGULARISERS.create(spec, **params)

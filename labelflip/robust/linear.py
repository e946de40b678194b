"""Multi-label models for tabular data, trained in PyTorch so that every regulariser applies, and their losses.

* :class:`LinearMultiLabel` (architecture ``linear_multilabel``): ``h(x) = W x + b``, one linear decision score
  per label (the SAE paper's linear SVM on Creepware, seed 004 §5.1). Trained with the one-vs-rest **hinge** loss
  it is a linear multi-label SVM; with the **logistic** loss, one-vs-rest logistic regression.
* :class:`MLPMultiLabel` (architecture ``mlp_multilabel``): ``h(x) = W ReLU(A x + a) + b``, the paper's
  ``h(x) = W Rep(x)`` form (§3.1) on tabular data, for the non-linear path without images.
* :func:`classification_loss`: ``"hinge"`` (``Σ_j max(0, 1 - y_j h_j)``, ``y ∈ {±1}``: the loss of the paper's
  Theorem 1), ``"logistic"`` (binary cross-entropy on the logits, summed over labels) or ``"asl"`` (the
  asymmetric loss of the built-in image models); each averaged over the samples.
* :func:`tabular_model`: a :class:`~labelflip.models.MultiLabelModel` with bounds wide enough for standardised
  features (``TABULAR_BOUNDS``), so budgets are in standard-deviation units and never clipped in practice.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from labelflip._validation import check_choice, check_int, fail
from labelflip.losses.training import asymmetric_loss
from labelflip.models import MultiLabelModel
from labelflip.models.architectures import ARCHITECTURES

__all__ = [
    "LOSSES",
    "TABULAR_BOUNDS",
    "LinearMultiLabel",
    "MLPMultiLabel",
    "classification_loss",
    "tabular_model",
]

LOSSES: tuple[str, ...] = ("hinge", "logistic", "asl")
TABULAR_BOUNDS: tuple[float, float] = (-1000.0, 1000.0)
"""Input bounds of tabular models: standardised features never get near them, so attacks are unconstrained."""


@ARCHITECTURES.register("linear_multilabel", input_size=None)
class LinearMultiLabel(nn.Module):
    """``h(x) = W x + b``: logits ``(N, K)`` for features ``(N, D)`` (inputs with more dims are flattened).

    Args:
        num_labels: K. num_features: D.
    """

    def __init__(self, num_labels: int, num_features: int) -> None:
        super().__init__()
        check_int("LinearMultiLabel", "num_labels", num_labels, low=1)
        check_int("LinearMultiLabel", "num_features", num_features, low=1, fix="the feature dimension D.")
        self.num_labels = num_labels
        self.linear = nn.Linear(num_features, num_labels)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))

    def linear_parameters(self) -> tuple[Tensor, Tensor]:
        """``(W (K, D), b (K,))``: what the exact GASE oracle and MILP use."""
        return self.linear.weight, self.linear.bias

    def classifier_weight(self) -> nn.Parameter:
        """``W``, the layer the nuclear-norm, L2 and ARM-Primal regularisers act on."""
        return self.linear.weight


@ARCHITECTURES.register("mlp_multilabel", input_size=None)
class MLPMultiLabel(nn.Module):
    """``h(x) = W ReLU(A x + a) + b``: a one-hidden-layer network for tabular data, logits ``(N, K)``.

    Args:
        num_labels: K. num_features: D. hidden: the width of ``Rep(x)``.
    """

    def __init__(self, num_labels: int, num_features: int, hidden: int = 64) -> None:
        super().__init__()
        check_int("MLPMultiLabel", "num_labels", num_labels, low=1)
        check_int("MLPMultiLabel", "num_features", num_features, low=1, fix="the feature dimension D.")
        check_int("MLPMultiLabel", "hidden", hidden, low=1, fix="e.g. hidden=64.")
        self.num_labels = num_labels
        self.rep = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.rep(x.flatten(1)))

    def classifier_weight(self) -> nn.Parameter:
        return self.head.weight


def classification_loss(name: str, logits: Tensor, y: Tensor) -> Tensor:
    """The training loss ``name`` of logits ``(N, K)`` against labels ``y`` ``(N, K)`` in {0, 1}: a scalar, the
    per-sample sum over labels averaged over samples (see the module docstring)."""
    check_choice("classification_loss", "name", name, LOSSES)
    if logits.shape != y.shape:
        raise fail("classification_loss", "y", f"a tensor of the logits' shape {tuple(logits.shape)}", y)
    y = y.to(logits.dtype)
    if name == "hinge":
        return F.relu(1.0 - (2 * y - 1) * logits).sum(dim=1).mean()
    if name == "logistic":
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(dim=1).mean()
    return asymmetric_loss(logits, y)


def tabular_model(module: nn.Module, *, bounds: tuple[float, float] = TABULAR_BOUNDS) -> MultiLabelModel:
    """Wrap a tabular network (logits ``(N, K)`` for ``(N, D)`` standardised features) for attacks and estimators."""
    k = getattr(module, "num_labels", None)
    return MultiLabelModel(module, num_labels=k, bounds=bounds, output_kind="logits")

"""Label correlation matrices (seed §IV-B, Algorithm 1; SPEC.md "Correlations"; SPEC-reference-code §5).

Flip-up matrix ``U (K, K)``: for each label ``j``, attack only ``j`` upward (target ``t = e_j``, weight
``w = e_j``, BCE) at ``eps_corr`` on ``n`` images; row ``j`` is the mean confidence change of every label,
``U[j, :] = mean_i (sigmoid(F(x'_i)) - sigmoid(F(x_i)))``. The attack pushes ``j`` up whatever its current
prediction (as the authors).

Normalisation (authors' ``attack.py``): one **global** min-max over all ``K^2`` entries (diagonal included),
``U' = (U - min U) / max(U - min U)`` in ``[0, 1]``; the flip-down matrix is derived as ``D' = 1 - U'``. The
**instance correlation matrix** of a sample takes row ``i`` from ``U'`` if label ``i`` is to be flipped up
(``t_i = 1``) and from ``D'`` otherwise.

The work is batched: all ``(label, image)`` pairs run as rows of one MI-FGSM trajectory (chunked), and the
clean forward pass runs once per image (the authors recompute it for every label and attack one image at a
time). Cost: ``(fp + bp) * floor(eps/alpha) * K * n`` (seed App. F).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from labelflip._validation import check_float, check_int, fail
from labelflip.analysis.artefact import Artefact
from labelflip.analysis.single_label import attack_single_labels
from labelflip.attacks import clean_pass, prepare_inputs
from labelflip.models import MultiLabelModel

__all__ = [
    "Correlations",
    "flipdown_matrix",
    "flipup_matrix",
    "instance_correlation_matrices",
    "measure_correlations",
    "normalize_flipup",
]

log = logging.getLogger(__name__)
_FORMAT = "labelflip.correlations/1"


def normalize_flipup(flipup: Tensor) -> Tensor:
    """Global min-max normalisation ``U' = (U - min U) / max(U - min U)`` (all entries, diagonal included)."""
    u = flipup.double()
    shifted = u - u.min()
    top = shifted.max()
    return shifted / top if float(top) > 0 else torch.zeros_like(u)


def instance_correlation_matrices(flipup_normalized: Tensor, target: Tensor) -> Tensor:
    """Per-sample instance correlation matrices ``(N, K, K)`` (seed §V-B a; SPEC-reference-code §5.3).

    Row ``i`` of sample ``n`` is ``U'[i]`` when ``target[n, i] = 1`` (flip up) and ``1 - U'[i]`` otherwise; the
    column label's own direction is ignored, as in the authors' code.

    Args:
        flipup_normalized: ``U'`` ``(K, K)`` in ``[0, 1]``.
        target: ``(N, K)`` in {0, 1}.
    """
    u = flipup_normalized.double().to(target.device)
    up = target.bool().unsqueeze(-1)  # (N, K, 1): selects rows
    return torch.where(up, u.unsqueeze(0), 1.0 - u.unsqueeze(0))


def _prepare(model: nn.Module | MultiLabelModel, x: Tensor, owner: str) -> tuple[MultiLabelModel, Tensor, Tensor]:
    m, x = prepare_inputs(model, x, owner)
    with m.eval_mode():
        clean, _ = clean_pass(m, x)
    return m, x, clean


def _confidence_changes(
    m: MultiLabelModel,
    x: Tensor,
    clean: Tensor,
    pairs: Tensor,
    target_value: float,
    eps: float,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> Tensor:
    """Attack label ``j`` alone toward ``target_value`` (the target vector is ``target_value * e_j``) on image
    ``i`` for each ``(i, j)`` row of ``pairs``; the confidence change of every label ``(R, K)`` float64."""
    k = clean.shape[1]
    targets = torch.zeros(pairs.shape[0], k)
    if target_value == 1.0:
        targets[torch.arange(pairs.shape[0]), pairs[:, 1]] = 1.0
    adv = attack_single_labels(m, x, pairs, targets, eps, batch_size=batch_size, progress=progress)
    return adv - clean[pairs[:, 0]].double().cpu()


def flipup_matrix(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    *,
    eps: float = 0.005,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Flip-up correlation matrix ``U (K, K)`` (Algorithm 1): row ``j`` = mean confidence change of every label
    when only label ``j`` is attacked upward at ``eps`` (BCE, ``t = w = e_j``), over the ``n`` images ``x``."""
    owner = "flipup_matrix"
    eps = check_float(owner, "eps", eps, low=0.0, low_inclusive=False, fix="e.g. eps=0.005 (the authors').")
    batch_size = check_int(owner, "batch_size", batch_size, low=1)
    m, x, clean = _prepare(model, x, owner)
    n, k = clean.shape
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(k))  # (n*K, 2): (image, label)
    deltas = _confidence_changes(m, x, clean, pairs, 1.0, eps, batch_size, progress)
    return deltas.view(n, k, k).mean(dim=0)  # [j, :] averaged over images


def flipdown_matrix(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    y: Tensor | None = None,
    *,
    eps: float = 0.005,
    max_per_label: int | None = None,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Measured flip-down matrix (SPEC-reference-code §5.2), for comparison with the derived ``1 - U'``.

    Row ``j``: attack only ``j`` downward (target 0, ``w = e_j``) on the images whose ground truth ``y``
    contains ``j`` (all images when ``y`` is None), at most ``max_per_label`` of them; mean confidence change.

    Returns:
        ``(D, counts)``: ``D (K, K)`` (rows of labels with no image are NaN) and the images used per label.
    """
    owner = "flipdown_matrix"
    eps = check_float(owner, "eps", eps, low=0.0, low_inclusive=False)
    m, x, clean = _prepare(model, x, owner)
    n, k = clean.shape
    if y is not None:
        y = m.validate_labels(y, n, owner=owner, param="y").cpu().bool()
    else:
        y = torch.ones(n, k, dtype=torch.bool)
    limit = n if max_per_label is None else check_int(owner, "max_per_label", max_per_label, low=1)
    pairs_list = []
    for j in range(k):
        imgs = torch.nonzero(y[:, j]).flatten()[:limit]
        pairs_list.append(torch.stack([imgs, torch.full_like(imgs, j)], dim=1))
    pairs = torch.cat(pairs_list)
    deltas = _confidence_changes(m, x, clean, pairs, 0.0, eps, batch_size, progress)
    counts = torch.bincount(pairs[:, 1], minlength=k)
    sums = torch.zeros(k, k, dtype=torch.float64).index_add_(0, pairs[:, 1], deltas)
    matrix = sums / counts.clamp_min(1).unsqueeze(1).double()
    matrix[counts == 0] = float("nan")
    return matrix, counts


@dataclass
class Correlations(Artefact):
    """A saved correlation artefact: the raw flip-up matrix and how it was measured.

    Attributes:
        flipup: ``(K, K)`` raw mean confidence changes (row = attacked label).
        eps: the attack budget used; ``num_samples`` images; provenance fields.
        flipdown_measured: optional measured flip-down matrix ``(K, K)`` (NaN rows: no image for that label).
    """

    flipup: Tensor
    eps: float
    num_samples: int
    label_names: list[str] = field(default_factory=list)
    flipdown_measured: Tensor | None = None
    model_fingerprint: str | None = None
    seed: int | None = None

    FORMAT: ClassVar[str] = _FORMAT
    CREATE_HINT: ClassVar[str] = "create one with `labelflip correlations` or measure_correlations(...).save(path)."
    TENSOR_FIELDS: ClassVar[tuple[str, ...]] = ("flipup", "flipdown_measured")

    @property
    def num_labels(self) -> int:
        return int(self.flipup.shape[0])

    @property
    def flipup_normalized(self) -> Tensor:
        """``U'`` in ``[0, 1]`` (global min-max)."""
        return normalize_flipup(self.flipup)

    @property
    def flipdown_derived(self) -> Tensor:
        """``D' = 1 - U'`` (the authors' "inverse" flip-down matrix, used by CLASS)."""
        return 1.0 - self.flipup_normalized

    def instance_matrices(self, target: Tensor) -> Tensor:
        """Instance correlation matrices ``(N, K, K)`` for targets ``(N, K)``."""
        if target.ndim != 2 or target.shape[1] != self.num_labels:
            raise fail("Correlations.instance_matrices", "target", f"of shape (N, {self.num_labels})", target)
        return instance_correlation_matrices(self.flipup_normalized, target)


def measure_correlations(
    model: nn.Module | MultiLabelModel,
    x: Tensor,
    *,
    eps: float = 0.005,
    y: Tensor | None = None,
    measure_flipdown: bool = False,
    label_names: list[str] | None = None,
    model_fingerprint: str | None = None,
    seed: int | None = None,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Correlations:
    """Flip-up matrix (and optionally the measured flip-down matrix) as a :class:`Correlations` artefact.

    Args:
        x: ``n`` images (the paper: 100); use held-out data.
        y: ground truth ``(n, K)`` selecting the images of each label's flip-down row (optional).
    """
    up = flipup_matrix(model, x, eps=eps, batch_size=batch_size, progress=progress)
    down = None
    if measure_flipdown:
        down, _ = flipdown_matrix(model, x, y, eps=eps, batch_size=batch_size)
    return Correlations(
        flipup=up,
        eps=float(eps),
        num_samples=int(x.shape[0]),
        label_names=list(label_names or []),
        flipdown_measured=down,
        model_fingerprint=model_fingerprint,
        seed=seed,
    )

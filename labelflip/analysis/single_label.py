"""The single-label attack loop shared by the correlation matrices (Alg. 1) and per-label attackability (Table II).

Each row ``r`` attacks one label of one image: BCE MI-FGSM with weight ``e_j`` on label ``j = labels[r]`` only,
toward the row's target vector, at budget ``eps``. All rows run as the rows of one trajectory per chunk of
``batch_size`` (the authors attack one image and one label at a time; the arithmetic per row is the same).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from labelflip.attacks import MIFGSM, num_steps
from labelflip.models import MultiLabelModel

__all__ = ["attack_single_labels"]


def attack_single_labels(
    model: MultiLabelModel,
    x: Tensor,
    pairs: Tensor,
    targets: Tensor,
    eps: float,
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Adversarial confidences ``(R, K)`` (float64, CPU; exact copies of the model's outputs) of single-label
    attacks.

    Args:
        model: the wrapped classifier (already checked; ``x`` on its device and dtype).
        x: images ``(N, ...)``.
        pairs: ``(R, 2)`` int64 rows ``(image index, label index)``.
        targets: ``(R, K)`` target vectors in {0, 1} (only the attacked label's entry matters to the loss).
        eps: the budget (L-inf, pixel units).
        batch_size: rows per trajectory.
        progress: ``(rows done, rows total)`` after each chunk.
    """
    k = targets.shape[1]
    attack = MIFGSM(model, "bce")
    steps = num_steps(eps, attack.step_size(x))
    out = torch.empty(pairs.shape[0], k, dtype=torch.float64)
    with model.eval_mode():
        for lo in range(0, pairs.shape[0], batch_size):
            chunk = pairs[lo : lo + batch_size]
            onehot = torch.zeros(chunk.shape[0], k, dtype=x.dtype)
            onehot[torch.arange(chunk.shape[0]), chunk[:, 1]] = 1.0
            t = targets[lo : lo + batch_size].to(device=x.device, dtype=x.dtype)
            traj = attack.trajectory(x[chunk[:, 0]], target=t, weights=onehot.to(x.device), eps=eps)
            traj.run_to(steps)
            with torch.no_grad():
                out[lo : lo + chunk.shape[0]] = torch.sigmoid(model(traj.final())).double().cpu()
            if progress is not None:
                progress(min(lo + batch_size, pairs.shape[0]), pairs.shape[0])
    return out

"""Seeded, side-effect-free training and evaluation of the built-in models.

``train_model`` runs AdamW with a one-cycle (or cosine) learning-rate schedule on the asymmetric loss, with
random horizontal flips and small random translations as augmentation. All randomness (initialisation,
shuffling, augmentation, dropout) flows from ``TrainConfig.seed``: initialisation and dropout run inside
``torch.random.fork_rng`` seeded from it, shuffling and augmentation use a dedicated ``torch.Generator``,
so the caller's global RNG state is the same after the call as before.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from labelflip._validation import check_choice, check_float, check_int, fail
from labelflip.data import DatasetSplits, MultiLabelData
from labelflip.losses.training import asymmetric_loss
from labelflip.metrics import classification_metrics
from labelflip.models.architectures import ARCHITECTURES, build_architecture
from labelflip.models.runtime import torch_threads

__all__ = ["TRAIN_THREADS", "ProgressCallback", "TrainConfig", "evaluate_model", "predict_logits", "train_model"]

logger = logging.getLogger(__name__)

#: ``progress(info)`` is called after every epoch with ``info = {"epoch": e (1-based), "epochs": E,
#: "loss": mean training loss of the epoch, "seconds": elapsed seconds since the start}``.
ProgressCallback = Callable[[dict[str, Any]], None]

_OWNER = "TrainConfig"

TRAIN_THREADS = 2
"""torch threads the built-in models train on, on every machine: the weights depend on the thread count (a CPU
reduction's float sum order does), so fixing it gives every machine the same built-in models. Measured here: asl-cnn
trained on 1 thread and on 2 threads ends with different weights (eps_max 0.234 vs 0.223); 2 is these machines'
core count. Two such trainings side by side on 2 cores (the demo's 2 workers) took 85 s with OpenMP's passive waiting
(``OMP_WAIT_POLICY=PASSIVE``, which the local workers set) and 154 s with its default spinning, against 97 s one
after the other; a 1-core machine was not measured."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_model`; equal configs give bit-identical models on one machine.

    The loss is ASL with ``gamma_neg``, ``gamma_pos`` and probability margin ``clip`` (``clip=0`` is the
    simplified ASL used by Query2Label).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    schedule: str = "onecycle"  # "onecycle" or "cosine"
    warmup_frac: float = 0.2  # fraction of steps spent warming up (one-cycle only)
    gamma_neg: float = 4.0
    gamma_pos: float = 0.0
    clip: float = 0.05
    hflip: bool = True
    max_shift: int = 2  # random translation in pixels (reflect-free: zero-filled roll), 0 disables
    grad_clip: float = 5.0  # max global gradient norm, 0 disables

    def __post_init__(self) -> None:
        check_int(_OWNER, "epochs", self.epochs, low=1, fix="train for at least one epoch.")
        check_int(_OWNER, "batch_size", self.batch_size, low=1, fix="e.g. batch_size=64.")
        check_float(_OWNER, "lr", self.lr, low=0.0, low_inclusive=False, fix="e.g. lr=3e-3.")
        check_float(_OWNER, "weight_decay", self.weight_decay, low=0.0, fix="e.g. weight_decay=1e-4.")
        check_int(_OWNER, "seed", self.seed, low=0, fix="pass a non-negative integer seed.")
        check_choice(_OWNER, "schedule", self.schedule, ("onecycle", "cosine"))
        check_float(_OWNER, "warmup_frac", self.warmup_frac, low=0.0, high=1.0, high_inclusive=False)
        check_float(_OWNER, "gamma_neg", self.gamma_neg, low=0.0, fix="e.g. gamma_neg=4.")
        check_float(_OWNER, "gamma_pos", self.gamma_pos, low=0.0, fix="e.g. gamma_pos=0.")
        check_float(_OWNER, "clip", self.clip, low=0.0, high=1.0, high_inclusive=False, fix="0.05 or 0.")
        if not isinstance(self.hflip, bool):
            raise fail(_OWNER, "hflip", "a bool", self.hflip)
        check_int(_OWNER, "max_shift", self.max_shift, low=0, fix="e.g. max_shift=2 pixels, 0 to disable.")
        check_float(_OWNER, "grad_clip", self.grad_clip, low=0.0, fix="e.g. grad_clip=5.0, 0 to disable.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (used for fingerprints)."""
        return asdict(self)


def _augment(x: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and zero-filled shifts of a batch ``(B, C, H, W)`` (all shapes are h-symmetric)."""
    if config.hflip:
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    s = config.max_shift
    if s > 0:
        dx, dy = torch.randint(-s, s + 1, (2,), generator=gen).tolist()  # one shift per batch: cheap
        x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    return x


def _schedule(opt: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=total_steps, pct_start=max(config.warmup_frac, 1e-3)
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)


def train_model(
    arch_name: str,
    data: DatasetSplits | MultiLabelData,
    config: TrainConfig | None = None,
    progress: ProgressCallback | None = None,
    *,
    arch_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Train a fresh ``arch_name`` model (a key of :data:`ARCHITECTURES`) on ``data`` (its train split).

    Args:
        arch_name: ``"asl_convnet"`` or ``"query_label_net"``.
        data: a :class:`DatasetSplits` (its ``train`` split is used) or a :class:`MultiLabelData`, with
            images ``(N, 3, H, W)`` in ``[0, 1]`` and labels ``(N, K)`` in ``{0, 1}``.
        config: hyper-parameters (default :class:`TrainConfig`).
        progress: optional per-epoch callback, see :data:`ProgressCallback`.
        arch_kwargs: extra constructor arguments of the architecture.

    Returns:
        The trained module, in ``eval()`` mode, on the CPU. The global RNG state and torch's thread count are
        unchanged; training runs on :data:`TRAIN_THREADS` threads whatever the machine, so the weights are the same
        bits on every machine (with the same CPU instruction set).
    """
    owner = "train_model"
    check_choice(owner, "arch_name", arch_name, tuple(ARCHITECTURES.list()))
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise fail(owner, "config", "a TrainConfig or None", config)
    train = data.train if isinstance(data, DatasetSplits) else data
    if not isinstance(train, MultiLabelData) or len(train) == 0:
        raise fail(owner, "data", "a DatasetSplits or a non-empty MultiLabelData", data)
    kwargs = dict(arch_kwargs or {})
    x_all, y_all = train.x.float(), train.y.float()
    n = len(train)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    gen = torch.Generator().manual_seed(config.seed * 2 + 1)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(TRAIN_THREADS):
        torch.manual_seed(config.seed)
        model = build_architecture(arch_name, train.num_labels, **kwargs)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = _schedule(opt, config, total)
        model.train()
        for epoch in range(config.epochs):
            perm = torch.randperm(n, generator=gen)
            running = 0.0
            for i in range(steps_per_epoch):
                idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                xb = _augment(x_all[idx], config, gen)
                loss = asymmetric_loss(
                    model(xb),
                    y_all[idx],
                    gamma_neg=config.gamma_neg,
                    gamma_pos=config.gamma_pos,
                    clip=config.clip,
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
                sched.step()
                running += float(loss.detach())
            info = {
                "epoch": epoch + 1,
                "epochs": config.epochs,
                "loss": running / steps_per_epoch,
                "seconds": time.perf_counter() - start,
            }
            logger.info(
                "%s epoch %d/%d loss %.4f (%.1fs)", arch_name, epoch + 1, config.epochs, info["loss"], info["seconds"]
            )
            if progress is not None:
                progress(info)
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Logits ``(N, K)`` of ``model`` on images ``x`` ``(N, C, H, W)``, in eval mode (previous mode restored)."""
    check_int("predict_logits", "batch_size", batch_size, low=1)
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, 0)


def evaluate_model(model: nn.Module, data: MultiLabelData, *, threshold: float = 0.5) -> dict[str, float]:
    """Ground-truth metrics of ``model`` on ``data``: ``{"map", "micro_f1", "macro_f1"}`` in ``[0, 1]``.

    Predictions are ``sigmoid(logit) > threshold``. The model is evaluated in ``eval()`` mode and its previous
    mode is restored.
    """
    if not isinstance(data, MultiLabelData) or len(data) == 0:
        raise fail("evaluate_model", "data", "a non-empty MultiLabelData", data, "pass e.g. splits.test.")
    logits = predict_logits(model, data.x)
    return classification_metrics(logits, data.y, threshold=threshold)

"""Regularised multi-label training: one loop for every regulariser, with early stopping on the validation split,
a per-epoch progress callback and cached safetensors checkpoints identified by a fingerprint.

``train_robust("linear_multilabel", splits, RobustTrainConfig(loss="hinge", regulariser="nuclear:0.001"))``
builds the architecture (seeded, the global RNG untouched), minimises ``loss + λ R`` (Eq. 15 for ARM-SAE) with
Adam or SGD on the training split, evaluates Micro-F1 / Macro-F1 and the data loss on the validation split after
every epoch, keeps the best epoch (``monitor``) and stops after ``patience`` epochs without improvement. With
``checkpoint_dir`` the result is saved as ``<arch>-<fingerprint>.safetensors`` (weights + JSON metadata via
:mod:`labelflip.models.checkpoints`) and a later call with the same data, config, architecture and code loads it
instead of training.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labelflip._validation import check_choice, check_float, check_int, fail
from labelflip.data import DatasetSplits, MultiLabelData
from labelflip.estimators.gradients import math_attention
from labelflip.metrics import f1_scores
from labelflip.models import MultiLabelModel
from labelflip.models.architectures import ARCHITECTURES, build_architecture
from labelflip.models.checkpoints import fingerprint, load_checkpoint, save_checkpoint
from labelflip.robust.linear import LOSSES, classification_loss, tabular_model
from labelflip.robust.regularisers import REGULARISERS, create_regulariser

__all__ = ["ProgressCallback", "RobustTrainConfig", "TrainedModel", "load_trained", "train_robust", "wrap_for_data"]

logger = logging.getLogger(__name__)
_OWNER = "RobustTrainConfig"
_SOURCES = ("robust/linear.py", "robust/regularisers.py", "robust/trainer.py", "estimators/gradients.py")

#: ``progress(info)`` after every epoch: ``{"epoch", "epochs", "loss", "penalty", "val_loss", "val_micro_f1",
#: "val_macro_f1", "best_epoch", "seconds", "stopped"}`` (``stopped``: early stopping triggered).
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RobustTrainConfig:
    """Hyper-parameters of :func:`train_robust`; equal configs give identical models on one machine.

    Attributes:
        epochs: maximum epochs. batch_size: samples per step. lr: learning rate. optimizer: ``"adam"`` or ``"sgd"``
            (momentum 0.9). weight_decay: the optimiser's own decay (0: use the ``l2`` regulariser instead).
        loss: ``"hinge"`` (linear SVM), ``"logistic"`` (BCE) or ``"asl"``.
        regulariser: a regulariser spec (``"none"``, ``"l2:0.001"``, ``"nuclear:0.001"``, ``"arm-primal:0.001"``,
            ``"arm-sae:0.01,alpha=0.1"``, ``"arm-single:0.001"``).
        reg_samples: evaluate the regulariser on the first ``reg_samples`` samples of each batch only (a separate
            forward pass; 0: the whole batch). Cuts the cost of ARM-SAE / ARM-Single on deep models.
        patience: early stopping after this many epochs without improvement of ``monitor`` (0: never).
        monitor: ``"micro_f1"`` (maximised) or ``"loss"`` (validation data loss, minimised): the best epoch is
            kept; ``"last"``: the last epoch is kept and there is no early stopping (fixed training length, so
            regularisers are compared at equal training effort).
        seed: initialisation and shuffling. grad_clip: max global gradient norm (0: off).
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-2
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss: str = "hinge"
    regulariser: str = "none"
    reg_samples: int = 0
    patience: int = 10
    monitor: str = "micro_f1"
    seed: int = 0
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        check_int(_OWNER, "epochs", self.epochs, low=1, fix="e.g. epochs=100.")
        check_int(_OWNER, "batch_size", self.batch_size, low=1, fix="e.g. batch_size=64.")
        check_float(_OWNER, "lr", self.lr, low=0.0, low_inclusive=False, fix="e.g. lr=0.01.")
        check_choice(_OWNER, "optimizer", self.optimizer, ("adam", "sgd"))
        check_float(_OWNER, "weight_decay", self.weight_decay, low=0.0)
        check_choice(_OWNER, "loss", self.loss, LOSSES)
        if not isinstance(self.regulariser, str):
            raise fail(_OWNER, "regulariser", "a regulariser spec string", self.regulariser, "e.g. 'nuclear:0.001'.")
        REGULARISERS.parse(self.regulariser)  # refuse a bad spec before any work
        check_int(_OWNER, "reg_samples", self.reg_samples, low=0, fix="0 for the whole batch.")
        check_int(_OWNER, "patience", self.patience, low=0, fix="0 disables early stopping.")
        check_choice(_OWNER, "monitor", self.monitor, ("micro_f1", "loss", "last"))
        check_int(_OWNER, "seed", self.seed, low=0)
        check_float(_OWNER, "grad_clip", self.grad_clip, low=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with the canonical regulariser spec (fingerprints)."""
        return {**asdict(self), "regulariser": str(REGULARISERS.parse(self.regulariser))}


@dataclass
class TrainedModel:
    """A trained model and what is known about it.

    Attributes:
        module: the network in eval mode (CPU). model: it wrapped for attacks and estimators (:func:`wrap_for_data`).
        arch, arch_kwargs: how to rebuild it. fingerprint: 16 hex chars over data, config, architecture and code.
        history: one dict per epoch (see :data:`ProgressCallback`). best_epoch: the epoch kept (1-based).
        metrics: ``val_micro_f1``, ``val_macro_f1``, ``test_micro_f1``, ``test_macro_f1`` (clean data).
        path: the checkpoint file, if saved or loaded. cached: loaded from the checkpoint instead of trained.
    """

    module: nn.Module
    model: MultiLabelModel
    arch: str
    arch_kwargs: dict[str, Any]
    fingerprint: str
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    cached: bool = False


def wrap_for_data(module: nn.Module, x: torch.Tensor) -> MultiLabelModel:
    """The wrapper for a model of inputs like ``x``: tabular bounds for ``(N, D)`` features, ``[0, 1]`` for images."""
    if x.ndim == 2:
        return tabular_model(module)
    return MultiLabelModel(module, num_labels=getattr(module, "num_labels", None))


def _source_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for rel in _SOURCES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes().replace(b"\r\n", b"\n") + b"\0")
    return h.hexdigest()[:16]


def _data_config(splits: DatasetSplits) -> Any:
    config = splits.config
    if hasattr(config, "to_dict") or isinstance(config, Mapping):
        return config
    raise fail(
        "train_robust",
        "data",
        "DatasetSplits whose config has to_dict() (for the fingerprint)",
        config,
        "build the data with a registered loader, or give DatasetSplits a config mapping.",
    )


@torch.no_grad()
def _evaluate(module: nn.Module, data: MultiLabelData, loss: str, batch_size: int = 512) -> dict[str, float]:
    was = module.training
    module.eval()
    try:
        logits = torch.cat([module(data.x[i : i + batch_size]) for i in range(0, len(data), batch_size)])
    finally:
        module.train(was)
    micro, macro = f1_scores(logits > 0, data.y)
    return {"loss": float(classification_loss(loss, logits, data.y)), "micro_f1": micro, "macro_f1": macro}


def train_robust(
    arch: str,
    splits: DatasetSplits,
    config: RobustTrainConfig | None = None,
    *,
    arch_kwargs: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    retrain: bool = False,
) -> TrainedModel:
    """Train architecture ``arch`` on ``splits.train`` with the configured loss and regulariser.

    Args:
        arch: a registered architecture: ``"linear_multilabel"`` / ``"mlp_multilabel"`` (tabular; ``num_features``
            is filled in from the data) or an image architecture (``"asl_convnet"``, ``"query_label_net"``).
        splits: train / val / test data; ``val`` drives early stopping, ``test`` is only evaluated.
        config: :class:`RobustTrainConfig` (default: 100 epochs of Adam, hinge loss, no regulariser).
        arch_kwargs: architecture options. progress: per-epoch callback (:data:`ProgressCallback`).
        checkpoint_dir: save ``<arch>-<fingerprint>.safetensors`` there, or load it if it exists (unless
            ``retrain``).

    Returns:
        :class:`TrainedModel` with the best-epoch weights in eval mode. The global RNG state is unchanged.
    """
    owner = "train_robust"
    check_choice(owner, "arch", arch, tuple(ARCHITECTURES.list()))
    config = RobustTrainConfig() if config is None else config
    if not isinstance(config, RobustTrainConfig):
        raise fail(owner, "config", "a RobustTrainConfig or None", config)
    if not isinstance(splits, DatasetSplits) or len(splits.train) == 0 or len(splits.val) == 0:
        raise fail(owner, "splits", "a DatasetSplits with non-empty train and val splits", splits)
    train = splits.train
    kwargs = dict(arch_kwargs or {})
    if arch in ("linear_multilabel", "mlp_multilabel"):
        kwargs.setdefault("num_features", int(math.prod(train.x.shape[1:])))
    fp = fingerprint(_data_config(splits), {"train": config.to_dict(), "robust": _source_hash()}, arch, kwargs)
    path = Path(checkpoint_dir) / f"{arch}-{fp}.safetensors" if checkpoint_dir is not None else None
    if path is not None and path.is_file() and not retrain:
        loaded = load_trained(path)
        if loaded.fingerprint == fp:
            return loaded
    regulariser = create_regulariser(config.regulariser)
    start = time.perf_counter()
    history: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(config.seed * 2 + 1)
    sign = 1.0 if config.monitor == "micro_f1" else -1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = build_architecture(arch, train.num_labels, **kwargs)
        params = [p for p in module.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
        best_score, best_state, best_epoch, stale = -math.inf, copy.deepcopy(module.state_dict()), 0, 0
        n = len(train)
        for epoch in range(1, config.epochs + 1):
            module.train()
            perm = torch.randperm(n, generator=gen)
            total, total_pen, steps = 0.0, 0.0, 0
            for i in range(0, n, config.batch_size):
                idx = perm[i : i + config.batch_size]
                loss, pen = _step(module, train.x[idx].float(), train.y[idx].float(), config, regulariser, opt)
                total, total_pen, steps = total + loss, total_pen + pen, steps + 1
            val = _evaluate(module, splits.val, config.loss)
            score = sign * (val["micro_f1"] if config.monitor == "micro_f1" else val["loss"])
            if config.monitor == "last" or score > best_score:
                best_score, best_state, best_epoch, stale = score, copy.deepcopy(module.state_dict()), epoch, 0
            else:
                stale += 1
            stopped = config.monitor != "last" and config.patience > 0 and stale >= config.patience
            info = {
                "epoch": epoch,
                "epochs": config.epochs,
                "loss": total / steps,
                "penalty": total_pen / steps,
                "val_loss": val["loss"],
                "val_micro_f1": val["micro_f1"],
                "val_macro_f1": val["macro_f1"],
                "best_epoch": best_epoch,
                "seconds": time.perf_counter() - start,
                "stopped": stopped,
            }
            history.append(info)
            logger.info(
                "%s %s epoch %d loss %.4f val micro-F1 %.4f",
                arch,
                config.regulariser,
                epoch,
                info["loss"],
                val["micro_f1"],
            )
            if progress is not None:
                progress(info)
            if stopped:
                break
    module.load_state_dict(best_state)
    module.eval()
    val, test = _evaluate(module, splits.val, config.loss), _evaluate(module, splits.test, config.loss)
    metrics = {
        "val_micro_f1": val["micro_f1"],
        "val_macro_f1": val["macro_f1"],
        "test_micro_f1": test["micro_f1"],
        "test_macro_f1": test["macro_f1"],
        "best_epoch": best_epoch,
    }
    result = TrainedModel(module, wrap_for_data(module, train.x), arch, kwargs, fp, history, best_epoch, metrics)
    if path is not None:
        meta = {
            "fingerprint": fp,
            "metrics": metrics,
            "data_config": _data_config(splits),
            "train_config": config.to_dict(),
            "history": history,
            "best_epoch": best_epoch,
            "input_ndim": train.x.ndim,
        }
        result.path = save_checkpoint(
            path, module, arch=arch, num_labels=train.num_labels, arch_kwargs=kwargs, metadata=meta
        )
    return result


def _step(
    module: nn.Module,
    xb: torch.Tensor,
    yb: torch.Tensor,
    config: RobustTrainConfig,
    regulariser: Any,
    opt: torch.optim.Optimizer,
) -> tuple[float, float]:
    """One optimiser step on a batch: ``(data loss, penalty)`` as floats."""
    sub = regulariser.needs_input_grad and 0 < config.reg_samples < xb.shape[0]
    if regulariser.needs_input_grad and not sub:
        xb = xb.clone().requires_grad_(True)
    with torch.enable_grad(), math_attention():
        logits = module(xb)
        data_loss = classification_loss(config.loss, logits, yb)
        if sub:
            xr = xb[: config.reg_samples].clone().requires_grad_(regulariser.needs_input_grad)
            pen = regulariser.penalty(module, xr, module(xr), yb[: config.reg_samples])
        else:
            pen = regulariser.penalty(module, xb, logits, yb)
        loss = data_loss + pen
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
    opt.step()
    regulariser.after_step(module, float(opt.param_groups[0]["lr"]))
    return float(data_loss.detach()), float(pen.detach())


def load_trained(path: str | os.PathLike[str]) -> TrainedModel:
    """Load a checkpoint written by :func:`train_robust` (safetensors only; no code runs)."""
    module, meta = load_checkpoint(path)
    ndim = int(meta.get("input_ndim", 4))
    probe = torch.zeros((1,) * ndim)
    return TrainedModel(
        module,
        wrap_for_data(module, probe),
        str(meta["arch"]),
        dict(meta.get("arch_kwargs", {})),
        str(meta.get("fingerprint", "")),
        list(meta.get("history", [])),
        int(meta.get("best_epoch", 0)),
        dict(meta.get("metrics", {})),
        Path(path),
        cached=True,
    )

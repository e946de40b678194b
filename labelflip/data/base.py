"""Dataset containers shared by every loader: one split (:class:`MultiLabelData`), the three splits of a dataset
(:class:`DatasetSplits`), label co-occurrence, and the dataset registry.

A registered dataset's factory returns a :class:`DatasetSplits`; ``create_dataset("synthetic")`` builds the
built-in one. Plugins register theirs with ``@DATASETS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from labelflip._registry import Registry
from labelflip._validation import fail

__all__ = ["DATASETS", "DatasetSplits", "MultiLabelData", "cooccurrence_matrix", "create_dataset", "list_datasets"]


@dataclass
class MultiLabelData:
    """One split of a multi-label dataset.

    Attributes:
        x: float32 images ``(N, C, H, W)`` in ``[0, 1]``, or tabular features ``(N, D)``.
        y: float32 labels ``(N, K)`` in ``{0, 1}``.
        label_names: ``K`` human-readable names, in label-index order.
    """

    x: torch.Tensor
    y: torch.Tensor
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = "MultiLabelData"
        if not isinstance(self.x, torch.Tensor) or self.x.dim() not in (2, 4):
            raise fail(
                owner, "x", "a 4-D tensor (N, C, H, W) or a 2-D tensor (N, D)", self.x, "stack images as (N, C, H, W)."
            )
        if not isinstance(self.y, torch.Tensor) or self.y.dim() != 2 or self.y.shape[0] != self.x.shape[0]:
            raise fail(
                owner,
                "y",
                f"a 2-D tensor (N, K) with N = {self.x.shape[0]}",
                self.y,
                "pass one row of 0/1 labels per image.",
            )
        if self.label_names and len(self.label_names) != self.y.shape[1]:
            raise fail(
                owner,
                "label_names",
                f"a list of {self.y.shape[1]} names (one per label column)",
                self.label_names,
                "pass one name per column of y, or none.",
            )
        if not self.label_names:
            self.label_names = [f"label_{k}" for k in range(self.y.shape[1])]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_labels(self) -> int:
        """K, the number of labels."""
        return int(self.y.shape[1])

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray | slice) -> MultiLabelData:
        """The rows ``indices`` (ints, a slice, or a boolean mask) as a new :class:`MultiLabelData`."""
        if isinstance(indices, slice):
            return MultiLabelData(self.x[indices], self.y[indices], list(self.label_names))
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise fail("MultiLabelData.subset", "indices", f"a bool mask of length {len(self)}", idx)
            idx = idx.nonzero().flatten()
        idx = idx.long().flatten()
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise fail(
                "MultiLabelData.subset",
                "indices",
                f"indices in [0, {len(self)})",
                idx,
                "index rows that exist.",
            )
        return MultiLabelData(self.x[idx], self.y[idx], list(self.label_names))

    def label_frequencies(self) -> torch.Tensor:
        """Fraction of images carrying each label: float32 ``(K,)`` in ``[0, 1]``."""
        if len(self) == 0:
            return torch.zeros(self.num_labels)
        return self.y.float().mean(dim=0)


@dataclass
class DatasetSplits:
    """The train / val / test splits of one dataset, with the config that produced them."""

    train: MultiLabelData
    val: MultiLabelData
    test: MultiLabelData
    config: Any
    label_names: list[str]


def cooccurrence_matrix(y: torch.Tensor) -> torch.Tensor:
    """Conditional co-occurrence ``C[i, j] = P(label j | label i)`` estimated from labels ``y``.

    Args:
        y: ``(N, K)`` labels in ``{0, 1}`` (any real dtype or bool).

    Returns:
        float32 ``(K, K)`` in ``[0, 1]``: ``C[i, j] = count(i and j) / count(i)``; the diagonal is 1 for
        labels that occur, and rows of labels that never occur are 0. Raw counts are ``y.T @ y``.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 2:
        raise fail("cooccurrence_matrix", "y", "a 2-D tensor (N, K) of 0/1 labels", y)
    yf = y.detach().to(torch.float64)
    counts = yf.T @ yf
    diag = counts.diagonal().clone()
    cond = counts / diag.clamp(min=1.0).unsqueeze(1)
    cond[diag == 0] = 0.0
    return cond.to(torch.float32)


DATASETS: Registry[DatasetSplits] = Registry("dataset")


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a shell-style pattern."""
    return DATASETS.list(pattern)


def create_dataset(spec: str, **options: Any) -> DatasetSplits:
    """Build the registered dataset ``spec`` (options are passed to its factory)."""
    return DATASETS.create(spec, **options)

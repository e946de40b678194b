"""Tabular multi-label data: the seeded split and training-set standardisation shared by the tabular loaders, and
a seeded synthetic generator whose label correlation is a knob (registered as ``synthetic-tabular``).

The split follows the SAE paper (seed 004, §5.1): a random 50 % / 30 % / 20 % train / validation / test split of
the instances, here drawn from ``numpy.random.default_rng(seed)``. Features are standardised with the mean and
standard deviation of the **training** split only (a constant feature keeps scale 1), so no test statistic leaks
into training.

The synthetic generator draws ``x ~ N(0, I_D)`` and one unit decision direction per label,
``w_j ∝ sqrt(rho) u_g(j) + sqrt(1 - rho) v_j`` (``u_g`` shared by the labels of group ``g``, ``v_j`` label-specific),
and sets ``y_j = 1[w_j·x + noise > t_j]`` with ``t_j`` chosen for the requested positive rate. ``rho`` =
``correlation`` is the expected cosine between the directions of two labels of one group, so it controls both
the label correlation in the data and the alignment of the decision boundaries a model learns from it (the SAE
paper's Fig. 1: aligned boundaries make an attack transfer across labels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import ndtri

from labelflip._registry import Param
from labelflip._validation import check_float, check_int, fail
from labelflip.data.base import DATASETS, DatasetSplits, MultiLabelData

__all__ = ["PAPER_FRACTIONS", "TabularConfig", "make_tabular", "split_and_standardise", "split_indices"]

PAPER_FRACTIONS: tuple[float, float, float] = (0.5, 0.3, 0.2)
"""Train / validation / test fractions of the SAE paper (seed 004, §5.1)."""


def split_indices(n: int, seed: int, fractions: tuple[float, float, float] = PAPER_FRACTIONS) -> list[np.ndarray]:
    """A seeded random partition of ``range(n)`` into train / val / test index arrays (int64, each sorted).

    Sizes are ``round(f_train * n)``, ``round(f_val * n)`` and the rest; every split gets at least one row.
    """
    owner = "split_indices"
    check_int(owner, "n", n, low=3, fix="a dataset needs at least 3 rows to fill train, val and test.")
    check_int(owner, "seed", seed, low=0, fix="pass a non-negative integer seed.")
    if len(fractions) != 3 or any(not (0 < float(f) < 1) for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise fail(owner, "fractions", "three fractions in (0, 1) summing to 1", fractions, "e.g. (0.5, 0.3, 0.2).")
    n_train = min(max(round(fractions[0] * n), 1), n - 2)
    n_val = min(max(round(fractions[1] * n), 1), n - n_train - 1)
    perm = np.random.default_rng(seed).permutation(n)
    cuts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return [np.sort(c).astype(np.int64) for c in cuts]


def split_and_standardise(
    x: np.ndarray,
    y: np.ndarray,
    label_names: list[str],
    config: Any,
    *,
    seed: int,
    fractions: tuple[float, float, float] = PAPER_FRACTIONS,
    standardise: bool = True,
) -> DatasetSplits:
    """Split ``(x, y)`` with :func:`split_indices` and standardise the features on the training split.

    Args:
        x: ``(N, D)`` finite real features. y: ``(N, K)`` labels in ``{0, 1}``.
        label_names: ``K`` names. config: stored as ``DatasetSplits.config`` (give it a ``to_dict()``).

    Returns:
        :class:`DatasetSplits` of :class:`MultiLabelData` with float32 ``x`` ``(n, D)`` (zero mean, unit std on
        the training split when ``standardise``) and float32 ``y`` ``(n, K)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    parts = split_indices(x.shape[0], seed, fractions)
    if standardise:
        train = x[parts[0]]
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # a constant feature keeps scale 1
        x = (x - mean) / std
    splits = [
        MultiLabelData(
            torch.from_numpy(x[idx].astype(np.float32)), torch.from_numpy(y[idx].astype(np.float32)), list(label_names)
        )
        for idx in parts
    ]
    return DatasetSplits(splits[0], splits[1], splits[2], config, list(label_names))


@dataclass(frozen=True)
class TabularConfig:
    """Everything that determines the synthetic tabular dataset (equal configs give identical data).

    Attributes:
        seed: the generator seed (data and split).
        n: instances before the 50/30/20 split.
        num_features: D. num_labels: K.
        correlation: rho in ``[0, 1]``: expected cosine between the decision directions of two labels of one group
            (0: unrelated labels, 1: the labels of a group share one boundary up to the threshold).
        groups: labels are assigned round-robin to this many groups (1: every label shares one direction).
        positive_rate: the fraction of positives per label, in ``(0, 1)``.
        noise: std of the Gaussian noise added to the decision score (Bayes error; 0: separable).
    """

    seed: int = 0
    n: int = 2000
    num_features: int = 20
    num_labels: int = 8
    correlation: float = 0.5
    groups: int = 2
    positive_rate: float = 0.3
    noise: float = 0.3

    def __post_init__(self) -> None:
        owner = "TabularConfig"
        check_int(owner, "seed", self.seed, low=0, fix="pass a non-negative integer seed.")
        check_int(owner, "n", self.n, low=10, fix="e.g. n=2000.")
        check_int(owner, "num_features", self.num_features, low=1, fix="e.g. num_features=20.")
        check_int(owner, "num_labels", self.num_labels, low=2, fix="e.g. num_labels=8.")
        check_float(owner, "correlation", self.correlation, low=0.0, high=1.0, fix="a cosine in [0, 1].")
        check_int(owner, "groups", self.groups, low=1, fix="e.g. groups=2.")
        if self.groups > self.num_labels:
            raise fail(owner, "groups", f"<= num_labels = {self.num_labels}", self.groups)
        check_float(
            owner,
            "positive_rate",
            self.positive_rate,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
            fix="e.g. 0.3.",
        )
        check_float(owner, "noise", self.noise, low=0.0, fix="e.g. noise=0.3 (0: noiseless).")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (fingerprints)."""
        return {"kind": "synthetic-tabular", **asdict(self)}


def label_directions(config: TabularConfig) -> np.ndarray:
    """The ground-truth unit decision directions ``(K, D)`` float64 of the labels (see the module docstring)."""
    rng = np.random.default_rng([config.seed, 1])
    shared = rng.standard_normal((config.groups, config.num_features))
    own = rng.standard_normal((config.num_labels, config.num_features))
    shared /= np.linalg.norm(shared, axis=1, keepdims=True)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    group = np.arange(config.num_labels) % config.groups
    w = np.sqrt(config.correlation) * shared[group] + np.sqrt(1.0 - config.correlation) * own
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def make_tabular(config: TabularConfig | None = None) -> DatasetSplits:
    """Generate the synthetic tabular dataset of ``config`` (default :class:`TabularConfig`), split 50/30/20 and
    standardised on the training split. No global RNG is used."""
    config = TabularConfig() if config is None else config
    if not isinstance(config, TabularConfig):
        raise fail("make_tabular", "config", "a TabularConfig or None", config)
    w = label_directions(config)
    rng = np.random.default_rng([config.seed, 2])
    x = rng.standard_normal((config.n, config.num_features))
    # w·x ~ N(0, 1); the noisy score is rescaled to N(0, 1) so that the threshold hits the positive rate
    noise = config.noise * rng.standard_normal((config.n, config.num_labels))
    score = (x @ w.T + noise) / np.sqrt(1.0 + config.noise**2)
    y = (score > ndtri(1.0 - config.positive_rate)).astype(np.float64)
    names = [f"y{j}" for j in range(config.num_labels)]
    return split_and_standardise(x, y, names, config, seed=config.seed)


@DATASETS.register(
    "synthetic-tabular",
    params=[
        Param("correlation", float, 0.5, "expected cosine between label directions of one group", 0.0, 1.0),
        Param("seed", int, 0, "generator and split seed", 0),
        Param("n", int, 2000, "instances before the 50/30/20 split", 10),
        Param("num_features", int, 20, "D", 1),
        Param("num_labels", int, 8, "K", 2),
        Param("groups", int, 2, "label groups sharing a direction", 1),
        Param("positive_rate", float, 0.3, "positives per label", 0.0, 1.0),
        Param("noise", float, 0.3, "decision-score noise std", 0.0),
    ],
    description="seeded synthetic tabular multi-label data; label correlation is a knob (SAE paper Fig. 1)",
)
def synthetic_tabular_dataset(**options: Any) -> DatasetSplits:
    """``create_dataset("synthetic-tabular:0.9")``: :func:`make_tabular` with :class:`TabularConfig` fields."""
    try:
        return make_tabular(TabularConfig(**options))
    except TypeError as exc:
        raise fail("the synthetic-tabular dataset", "options", "TabularConfig fields", sorted(options)) from exc

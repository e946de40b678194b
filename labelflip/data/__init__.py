"""Datasets: containers and the dataset registry (:mod:`~labelflip.data.base`) and the built-in synthetic dataset."""

from labelflip.data.base import (
    DATASETS,
    DatasetSplits,
    MultiLabelData,
    cooccurrence_matrix,
    create_dataset,
    list_datasets,
)
from labelflip.data.synthetic import LABEL_CATALOGUE, SyntheticConfig, default_dataset, make_synthetic

__all__ = [
    "DATASETS",
    "LABEL_CATALOGUE",
    "DatasetSplits",
    "MultiLabelData",
    "SyntheticConfig",
    "cooccurrence_matrix",
    "create_dataset",
    "default_dataset",
    "list_datasets",
    "make_synthetic",
]

"""Datasets: containers and the dataset registry (:mod:`~labelflip.data.base`) and the built-in synthetic dataset."""

from labelflip.data import coco as _coco  # noqa: F401  (registers coco)
from labelflip.data import folder_csv as _folder_csv  # noqa: F401  (registers csv, folder)
from labelflip.data import nuswide as _nuswide  # noqa: F401  (registers nuswide)
from labelflip.data import voc as _voc  # noqa: F401  (registers voc)
from labelflip.data.base import (
    DATASETS,
    DatasetSplits,
    MultiLabelData,
    cooccurrence_matrix,
    create_dataset,
    list_datasets,
)
from labelflip.data.mulan import MulanConfig, load_mulan  # registers mulan
from labelflip.data.synthetic import LABEL_CATALOGUE, SyntheticConfig, default_dataset, make_synthetic
from labelflip.data.tabular import TabularConfig, make_tabular  # registers synthetic-tabular

__all__ = [
    "DATASETS",
    "LABEL_CATALOGUE",
    "DatasetSplits",
    "MulanConfig",
    "MultiLabelData",
    "SyntheticConfig",
    "TabularConfig",
    "cooccurrence_matrix",
    "create_dataset",
    "default_dataset",
    "list_datasets",
    "load_mulan",
    "make_synthetic",
    "make_tabular",
]

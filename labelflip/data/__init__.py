"""Datasets: the built-in synthetic multi-label image dataset and its containers."""

from labelflip.data.synthetic import (
    LABEL_CATALOGUE,
    DatasetSplits,
    MultiLabelData,
    SyntheticConfig,
    cooccurrence_matrix,
    make_synthetic,
)

__all__ = [
    "LABEL_CATALOGUE",
    "DatasetSplits",
    "MultiLabelData",
    "SyntheticConfig",
    "cooccurrence_matrix",
    "make_synthetic",
]

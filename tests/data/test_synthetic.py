"""The synthetic default dataset: determinism, shapes, label statistics, splits, validation."""

from __future__ import annotations

import functools

import pytest
import torch

from labelflip._validation import LabelflipError
from labelflip.data import (
    LABEL_CATALOGUE,
    DatasetSplits,
    MultiLabelData,
    SyntheticConfig,
    cooccurrence_matrix,
    make_synthetic,
)

TINY = SyntheticConfig(seed=3, n_train=64, n_val=16, n_test=16)


@functools.lru_cache(maxsize=1)
def _default() -> DatasetSplits:
    return make_synthetic()


def test_same_seed_identical_different_seed_different() -> None:
    a, b = make_synthetic(TINY), make_synthetic(TINY)
    c = make_synthetic(SyntheticConfig(seed=4, n_train=64, n_val=16, n_test=16))
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    assert not torch.equal(a.train.x, c.train.x)


def test_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    make_synthetic(TINY)
    assert torch.equal(state, torch.get_rng_state())


def test_prefix_stable_in_split_size() -> None:
    small = make_synthetic(SyntheticConfig(seed=3, n_train=10, n_val=0, n_test=0))
    big = make_synthetic(TINY)
    assert torch.equal(small.train.x, big.train.x[:10])


def test_shapes_dtypes_ranges_and_at_least_one_label() -> None:
    d = make_synthetic(SyntheticConfig(n_train=40, n_val=8, n_test=4, image_size=24, num_labels=10))
    assert d.train.x.shape == (40, 3, 24, 24) and d.train.y.shape == (40, 10)
    assert len(d.val) == 8 and len(d.test) == 4
    for part in (d.train, d.val, d.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.float32
        assert part.x.min() >= 0 and part.x.max() <= 1
        assert set(part.y.unique().tolist()) <= {0.0, 1.0}
        assert (part.y.sum(dim=1) >= 1).all()
    assert d.label_names == list(LABEL_CATALOGUE[:10]) == d.train.label_names


def test_default_dataset_statistics() -> None:
    d = _default()
    assert (len(d.train), len(d.val), len(d.test)) == (6000, 1000, 1000)
    assert d.train.x.shape[1:] == (3, 32, 32) and d.train.num_labels == 24
    assert (d.train.y.sum(dim=1) >= 1).all()
    freq = d.train.label_frequencies()
    assert freq.min() > 0
    assert freq.max() / freq.min() >= 5, "long-tailed label frequencies"
    assert 0.3 <= freq.max() <= 0.5 and freq.min() <= 0.04
    # co-occurrence: some pairs are far more frequent together than independence predicts
    cond = cooccurrence_matrix(d.train.y)
    lift = cond / freq.unsqueeze(0)  # P(j | i) / P(j)
    lift.fill_diagonal_(0)
    assert lift.max() > 3.0
    names = d.label_names
    car, light, cup, bowl = (names.index(n) for n in ("car", "traffic_light", "cup", "bowl"))
    assert cond[light, car] > 2 * freq[car]
    assert cond[cup, bowl] > 2 * freq[bowl]


def test_splits_are_disjoint() -> None:
    d = _default()
    flat = {split: getattr(d, split).x.flatten(1) for split in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        dist = torch.cdist(flat[a][:2000], flat[b]).min()
        assert dist > 1.0, f"{a} and {b} share an image"


def test_cooccurrence_matrix_hand_example() -> None:
    y = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0]], dtype=torch.float32)
    c = cooccurrence_matrix(y)
    assert c.shape == (3, 3)
    assert c[0, 1] == pytest.approx(2 / 3) and c[1, 0] == pytest.approx(1.0)
    assert c[0, 0] == 1 and c[2].abs().sum() == 0


def test_multilabeldata_subset_and_frequencies() -> None:
    d = make_synthetic(TINY).train
    s = d.subset([0, 2, 5])
    assert len(s) == 3 and torch.equal(s.x[1], d.x[2]) and s.label_names == d.label_names
    assert torch.equal(d.subset(slice(0, 4)).y, d.y[:4])
    mask = torch.zeros(len(d), dtype=torch.bool)
    mask[1] = True
    assert torch.equal(d.subset(mask).x, d.x[1:2])
    assert torch.allclose(d.label_frequencies(), d.y.mean(0))
    with pytest.raises(LabelflipError, match="'indices'"):
        d.subset([len(d)])


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"seed": -1}, "seed"),
        ({"n_train": 0}, "n_train"),
        ({"image_size": 8}, "image_size"),
        ({"num_labels": 1}, "num_labels"),
        ({"num_labels": 999}, "num_labels"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"min_radius": 0.3, "max_radius": 0.2}, "max_radius"),
        ({"n_val": 1.5}, "n_val"),
    ],
)
def test_bad_configs_name_the_parameter(kwargs: dict, param: str) -> None:
    with pytest.raises(LabelflipError, match=f"'{param}'.*Fix:"):
        SyntheticConfig(**kwargs)


def test_bad_data_containers() -> None:
    with pytest.raises(LabelflipError, match="'y'"):
        MultiLabelData(torch.zeros(2, 3, 4, 4), torch.zeros(3, 2))
    with pytest.raises(LabelflipError, match="'config'"):
        make_synthetic({"seed": 0})  # type: ignore[arg-type]


def test_config_to_dict_round_trips() -> None:
    assert SyntheticConfig(**TINY.to_dict()) == TINY

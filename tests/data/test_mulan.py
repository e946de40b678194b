"""MULAN ARFF loader: the real emotions / yeast files (skipped where ../shared is absent) and small files written
here: dense and sparse, plain and gzip, and malformed ones that must fail with a clear error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from labelflip import LabelflipError
from labelflip.data import DATASETS, create_dataset
from labelflip.data.mulan import find_mulan, load_mulan, read_arff, read_label_names
from labelflip.data.tabular import TabularConfig, make_tabular, split_indices

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "mulan"
needs_shared = pytest.mark.skipif(
    not (SHARED / "yeast.arff.gz").is_file(), reason="../shared/data/mulan is absent (real MULAN files)"
)

XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="l1"></label>
<label name="l0"></label>
</labels>
"""
HEADER = """% a comment
@relation toy
@attribute f0 numeric
@attribute l0 {0,1}
@attribute f1 real
@attribute f2 {0,1}
@attribute l1 {0,1}
@data
"""
ROWS = [
    [0.5, 1, -1.0, 1, 0],
    [1.5, 0, 2.0, 0, 1],
    [-0.5, 1, 0.0, 0, 1],
    [2.5, 0, 0.0, 1, 0],
    [0.0, 0, 3.0, 0, 0],
    [1.0, 1, -2.0, 1, 1],
]


def _dense_text() -> str:
    return HEADER + "".join(",".join(f"{v:g}" for v in row) + "\n" for row in ROWS)


def _sparse_text() -> str:
    lines = []
    for row in ROWS:
        items = [f"{i} {v:g}" for i, v in enumerate(row) if v != 0]
        lines.append("{" + ", ".join(items) + "}\n")
    return HEADER + "".join(lines)


def _write(tmp: Path, name: str, arff: str, xml: str = XML, gz: bool = False) -> Path:
    path = tmp / (name + (".arff.gz" if gz else ".arff"))
    data = arff.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    (tmp / f"{name}.xml").write_text(xml)
    return path


def test_dense_file_labels_from_xml_in_attribute_order(tmp_path: Path) -> None:
    splits = load_mulan(_write(tmp_path, "toy", _dense_text()), standardise=False)
    assert splits.label_names == ["l0", "l1"]  # ARFF order, not XML order
    x = torch.cat([splits.train.x, splits.val.x, splits.test.x])
    y = torch.cat([splits.train.y, splits.val.y, splits.test.y])
    assert x.shape == (6, 3) and x.dtype == torch.float32 and y.shape == (6, 2)
    expected = {(r[0], r[2], r[3], r[1], r[4]) for r in ROWS}
    got = {tuple(float(v) for v in torch.cat([a, b]).tolist()) for a, b in zip(x, y, strict=True)}
    assert got == expected


def test_sparse_and_gzip_files_equal_the_dense_one(tmp_path: Path) -> None:
    dense = load_mulan(_write(tmp_path, "dense", _dense_text()), seed=3)
    sparse = load_mulan(_write(tmp_path, "sparse", _sparse_text()), seed=3)
    zipped = load_mulan(_write(tmp_path, "zipped", _sparse_text(), gz=True), seed=3)
    for other in (sparse, zipped):
        for a, b in ((dense.train, other.train), (dense.val, other.val), (dense.test, other.test)):
            assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert read_arff(tmp_path / "sparse.arff").sparse and not read_arff(tmp_path / "dense.arff").sparse


def test_split_is_seeded_50_30_20_and_standardised_on_train_only() -> None:
    a, b = split_indices(100, 0), split_indices(100, 0)
    assert [len(p) for p in a] == [50, 30, 20] and all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[0], split_indices(100, 1)[0])
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(100))
    d = make_tabular(TabularConfig(n=400, seed=2))
    assert torch.allclose(d.train.x.mean(0), torch.zeros(d.train.x.shape[1]), atol=1e-5)
    assert torch.allclose(d.train.x.std(0, correction=0), torch.ones(d.train.x.shape[1]), atol=1e-4)
    assert d.test.x.mean(0).abs().max() > 1e-3  # test statistics were not used


def test_missing_label_attribute_is_named(tmp_path: Path) -> None:
    xml = XML.replace('name="l1"', 'name="missing_label"')
    with pytest.raises(LabelflipError, match="missing_label"):
        load_mulan(_write(tmp_path, "toy", _dense_text(), xml=xml))


def test_non_numeric_features_are_refused(tmp_path: Path) -> None:
    nominal = HEADER.replace("@attribute f2 {0,1}", "@attribute f2 {red,green}")
    text = nominal + "".join(
        ",".join(["red" if i == 3 and v else "green" if i == 3 else f"{v:g}" for i, v in enumerate(r)]) + "\n"
        for r in ROWS
    )
    with pytest.raises(LabelflipError, match="f2"):
        load_mulan(_write(tmp_path, "nominal", text))
    bad_number = _dense_text().replace("2.5,", "abc,")
    with pytest.raises(LabelflipError, match="parse"):
        load_mulan(_write(tmp_path, "badnum", bad_number))
    string_attr = HEADER.replace("@attribute f1 real", "@attribute f1 string")
    with pytest.raises(LabelflipError, match="numeric and nominal"):
        load_mulan(_write(tmp_path, "string", string_attr + _dense_text().split("@data\n")[1]))


def test_empty_and_truncated_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="empty"):
        load_mulan(_write(tmp_path, "empty", ""))
    with pytest.raises(LabelflipError, match="@data"):
        load_mulan(_write(tmp_path, "nodata", "@relation r\n@attribute a numeric\n"))
    with pytest.raises(LabelflipError, match="at least 3 data rows"):
        load_mulan(_write(tmp_path, "norows", HEADER))
    with pytest.raises(LabelflipError, match="existing file"):
        load_mulan(tmp_path / "absent.arff")


def test_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="index"):
        load_mulan(_write(tmp_path, "sparse_bad", HEADER + "{0 1, 9 1}\n" * 4))
    with pytest.raises(LabelflipError, match="missing"):
        load_mulan(_write(tmp_path, "missing", _dense_text().replace("2.5,", "?,")))
    bad_label = HEADER.replace("@attribute l1 {0,1}", "@attribute l1 numeric") + "1,0,1,0,2\n" * 4
    with pytest.raises(LabelflipError, match="label"):
        load_mulan(_write(tmp_path, "label2", bad_label))
    (tmp_path / "broken.xml").write_text("<labels><label></labels>")
    with pytest.raises(LabelflipError, match="xml"):
        read_label_names(tmp_path / "broken.xml")


def test_registry_options(tmp_path: Path) -> None:
    assert "mulan" in DATASETS and "synthetic-tabular" in DATASETS
    path = _write(tmp_path, "toy", _dense_text())
    by_path = create_dataset("mulan", path=str(path))
    by_name = create_dataset("mulan:name=toy", data_dir=str(tmp_path))
    assert torch.equal(by_path.train.x, by_name.train.x)
    with pytest.raises(LabelflipError, match="name"):
        create_dataset("mulan:name=nothing_here", data_dir=str(tmp_path))
    with pytest.raises(LabelflipError, match="exactly one"):
        create_dataset("mulan")


def test_synthetic_tabular_correlation_knob() -> None:
    def mean_abs_corr(rho: float) -> float:
        y = create_dataset(f"synthetic-tabular:{rho},n=3000,groups=1").train.y
        c = torch.corrcoef(y.T)
        return float((c.sum() - c.diagonal().sum()).abs() / (c.numel() - c.shape[0]))

    low, high = mean_abs_corr(0.0), mean_abs_corr(0.9)
    assert high > low + 0.3
    d1, d2 = make_tabular(TabularConfig(seed=4, n=200)), make_tabular(TabularConfig(seed=4, n=200))
    assert torch.equal(d1.train.x, d2.train.x) and torch.equal(d1.test.y, d2.test.y)
    assert abs(float(d1.train.y.mean()) - 0.3) < 0.08


@needs_shared
def test_real_emotions_and_yeast() -> None:
    arff, xml = find_mulan("emotions", SHARED)
    emo = load_mulan(arff, xml)
    assert [len(emo.train), len(emo.val), len(emo.test)] == [296, 178, 119]
    assert emo.train.x.shape[1] == 72 and len(emo.label_names) == 6
    assert set(emo.label_names) == set(read_label_names(xml))
    yeast = create_dataset("mulan:name=yeast", data_dir=str(SHARED))
    n = len(yeast.train) + len(yeast.val) + len(yeast.test)
    assert n == 2417 and yeast.train.x.shape[1] == 103 and yeast.train.num_labels == 14
    y = torch.cat([yeast.train.y, yeast.val.y, yeast.test.y])
    assert abs(float(y.sum(1).mean()) - 4.237) < 0.01  # the published label cardinality of yeast
    assert yeast.label_names[:3] == ["Class1", "Class2", "Class3"]
    assert torch.allclose(yeast.train.x.mean(0), torch.zeros(103), atol=1e-5)

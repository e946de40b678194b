"""Real-image datasets on tiny trees built with Pillow: COCO, VOC, NUS-WIDE, CSV and image folders, the lazily
decoded split, the image cache and the DataLoader, and the errors users get for broken datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labelflip._validation import LabelflipError
from labelflip.data import DatasetSplits, create_dataset
from labelflip.data.coco import COCO_LABELS
from labelflip.data.images import ImageCache, ImageSplit, decode_image
from labelflip.data.nuswide import NUSWIDE_LABELS, parse_label_list
from labelflip.data.voc import VOC_LABELS

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _img(path: Path, color: tuple[int, int, int] = RED, size: tuple[int, int] = (30, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _coco(root: Path, split: str = "val2014", *, extra: dict | None = None) -> Path:
    # category ids deliberately listed out of order: labels follow category-id order
    cats = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]
    images = [
        {"id": 12, "file_name": "d.png"},
        {"id": 5, "file_name": "a.jpg"},
        {"id": 7, "file_name": "b.jpg"},
        {"id": 9, "file_name": "c.jpg"},  # no annotation
    ]
    anns = [
        {"image_id": 5, "category_id": 1},
        {"image_id": 5, "category_id": 3},
        {"image_id": 7, "category_id": 2},
        {"image_id": 12, "category_id": 3, "iscrowd": 1},
    ]
    doc = {"images": images, "annotations": anns, "categories": cats, **(extra or {})}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    for im, color in zip(images, (BLUE, RED, GREEN, RED), strict=True):
        _img(root / split / im["file_name"], color)
    return root


# ----------------------------------------------------------------------------------------------------- COCO
def test_coco_labels_order_and_pixels(tmp_path: Path) -> None:
    data = create_dataset(f"coco:{_coco(tmp_path / 'coco')}", image_size=16)
    assert isinstance(data, DatasetSplits)
    test = data.test
    assert data.label_names == ["person", "bicycle", "car"] == test.label_names
    assert len(test) == 3 and test.num_labels == 3  # the unannotated image is dropped (ASL)
    assert [p.name for p in test.paths] == ["a.jpg", "b.jpg", "d.png"]  # image-id order
    assert test.y.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    x = test.x[torch.tensor([0, 2])]
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert x[0, 0].mean() > 0.95 and x[0, 2].mean() < 0.05  # a.jpg is red
    assert x[1, 2].mean() > 0.95  # d.png is blue (lossless)
    assert test.x[1].shape == (3, 16, 16) and test.x[:2].shape == (2, 3, 16, 16)
    assert test.x.shape == (3, 3, 16, 16)
    assert torch.allclose(test.label_frequencies(), torch.tensor([1 / 3, 1 / 3, 2 / 3]))
    assert data.train is data.test  # no train2014 on disk: the attacked split stands in
    assert json.dumps(data.config.to_dict())


def test_coco_keep_unannotated_and_train_split(tmp_path: Path) -> None:
    root = _coco(tmp_path / "coco")
    _coco(root, "train2014")
    data = create_dataset(f"coco:{root}", image_size=8, drop_unannotated=False)
    assert len(data.test) == 4 and data.test.y[2].sum() == 0  # c.jpg, id 9, kept with no labels
    assert data.train is not data.test and data.config.splits["train"] == "train2014"


def test_coco_label_names_match_published() -> None:
    assert len(COCO_LABELS) == 80 and COCO_LABELS[0] == "person" and COCO_LABELS[-1] == "toothbrush"


def test_coco_errors(tmp_path: Path) -> None:
    root = _coco(tmp_path / "coco")
    with pytest.raises(LabelflipError, match=r"val2014.*[Dd]id you mean|available: val2014"):
        create_dataset(f"coco:{root}", split="val2017")
    bad = _coco(tmp_path / "bad", extra={"annotations": [{"image_id": 5, "category_id": 99}]})
    with pytest.raises(LabelflipError, match="category id 99"):
        create_dataset(f"coco:{bad}")
    ann = root / "annotations" / "instances_val2014.json"
    ann.write_text(ann.read_text()[:50])  # truncated download
    with pytest.raises(LabelflipError, match=r"malformed.*not valid JSON"):
        create_dataset(f"coco:{root}")
    empty = _coco(tmp_path / "empty", extra={"annotations": []})
    with pytest.raises(LabelflipError, match="has no images"):
        create_dataset(f"coco:{empty}")
    gone = _coco(tmp_path / "gone")
    (gone / "val2014" / "b.jpg").unlink()
    with pytest.raises(LabelflipError, match=r"missing: .*b\.jpg"):
        create_dataset(f"coco:{gone}")
    with pytest.raises(LabelflipError, match="drop_unannotated"):
        create_dataset(f"coco:{gone}", drop_unanotated=True)  # typo: the accepted options are listed


def test_unreadable_and_missing_image_named(tmp_path: Path) -> None:
    root = _coco(tmp_path / "coco")
    (root / "val2014" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = create_dataset(f"coco:{root}", image_size=8)
    assert data.test.x[0].shape == (3, 8, 8)
    with pytest.raises(LabelflipError, match=r"b\.jpg cannot be read"):
        data.test.x[torch.tensor([0, 1])]
    good = _img(tmp_path / "t.jpg", size=(64, 64))
    good.write_bytes(good.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(LabelflipError, match=r"t\.jpg cannot be read"):
        decode_image(good, (8, 8))
    with pytest.raises(LabelflipError, match="does not exist"):
        decode_image(tmp_path / "nope.jpg", (8, 8))


# ------------------------------------------------------------------------------------------ split interface
def test_lazy_split_indexing_subset_materialize_and_loader(tmp_path: Path) -> None:
    paths = [_img(tmp_path / f"{i}.png", (10 * i, 0, 0)) for i in range(5)]
    y = np.eye(5, 3, dtype=np.uint8)
    split = ImageSplit(paths, y, ["a", "b", "c"], image_size=(8, 12), threads=2, name="toy")
    assert split.x[torch.tensor([4, 0])].shape == (2, 3, 8, 12)
    mask = torch.tensor([True, False, True, False, False])
    assert torch.equal(split.x[mask], split.x[[0, 2]])
    assert torch.equal(split.x[-1], split.x[4])
    sub = split.subset([3, 1])
    assert len(sub) == 2 and sub.y.tolist() == [[0, 0, 0], [0, 1, 0]] and sub.paths == (paths[3], paths[1])
    mem = split.materialize()
    assert mem.x.shape == (5, 3, 8, 12) and torch.equal(mem.x, split.x[:])
    with pytest.raises(LabelflipError, match="indices in"):
        split.x[torch.tensor([5])]
    batches = list(split.loader(batch_size=2, num_workers=2))
    xs = torch.cat([b[0] for b in batches])
    assert xs.shape == (5, 3, 8, 12) and torch.equal(xs, mem.x)
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.arange(5))
    assert torch.equal(torch.cat([b[1] for b in batches]), split.y)


def test_image_cache_hits_and_invalidates(tmp_path: Path) -> None:
    img = _img(tmp_path / "a.jpg", RED, (40, 40))
    cache = ImageCache(tmp_path / "cache")
    first = cache.load(img, (16, 16))
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert len(entries) == 1 and torch.equal(first, decode_image(img, (16, 16)))
    np.save(entries[0], np.full((3, 16, 16), 7, dtype=np.uint8))  # prove the next read comes from the cache
    assert int(cache.load(img, (16, 16))[0, 0, 0]) == 7
    _img(img, BLUE, (40, 40))
    os.utime(img, ns=(1, 1))  # a changed file (mtime/size) is a new entry
    assert cache.load(img, (16, 16))[2].float().mean() > 250
    entries[0].write_bytes(b"garbage")  # a damaged entry is decoded again
    assert cache.load(img, (16, 16), "bicubic").shape == (3, 16, 16)
    root = _coco(tmp_path / "coco")
    data = create_dataset(f"coco:{root}", image_size=8, cache=tmp_path / "c2")
    assert torch.equal(data.test.x[:], data.test.x[:])
    assert len(list((tmp_path / "c2").rglob("*.npy"))) == 3
    assert len(list((tmp_path / "c2" / "annotations").glob("*.npz"))) == 1
    again = create_dataset(f"coco:{root}", image_size=8, cache=tmp_path / "c2")  # parsed labels from the cache
    assert torch.equal(again.test.y, data.test.y) and again.label_names == data.label_names


# ------------------------------------------------------------------------------------------------------ VOC
def _voc(base: Path) -> Path:
    root = base / "VOCdevkit" / "VOC2007"
    objects = {
        "000001": [("dog", 0), ("person", 1)],
        "000002": [("cat", 0)],
        "000003": [("tvmonitor", 1)],
    }
    for image_id, objs in objects.items():
        body = "".join(f"<object><name>{n}</name><difficult>{d}</difficult></object>" for n, d in objs)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
        _img(root / "JPEGImages" / f"{image_id}.jpg", GREEN)
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "test.txt").write_text("000001\n000002\n000003\n")
    (main / "trainval.txt").write_text("000002\n")
    return root


def test_voc_xml_difficult_switch_and_roots(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    data = create_dataset(f"voc:{tmp_path / 'VOCdevkit'}", image_size=8)
    assert data.label_names == list(VOC_LABELS) and len(VOC_LABELS) == 20
    k = {n: i for i, n in enumerate(VOC_LABELS)}
    y = data.test.y
    assert y[0, k["dog"]] == 1 and y[0, k["person"]] == 1 and y[2, k["tvmonitor"]] == 1  # difficult: positive
    assert len(data.train) == 1 and data.config.splits["train"] == "trainval"
    neg = create_dataset(f"voc:{root}", image_size=8, difficult="negative")
    assert neg.test.y[0, k["person"]] == 0 and neg.test.y[2].sum() == 0 and neg.test.y[0, k["dog"]] == 1
    with pytest.raises(LabelflipError, match="'positive', 'negative'"):
        create_dataset(f"voc:{root}", difficult="maybe")


def test_voc_imagesets_source(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    main = root / "ImageSets" / "Main"
    for name in VOC_LABELS:
        marks = {"dog": ["1", "-1", "-1"], "person": ["0", "-1", "-1"], "cat": ["-1", "1", "-1"]}.get(name, ["-1"] * 3)
        (main / f"{name}_test.txt").write_text("".join(f"00000{i + 1} {m}\n" for i, m in enumerate(marks)))
    xml = create_dataset(f"voc:{root}", image_size=8, train_split=None, source="xml")
    sets = create_dataset(f"voc:{root}", image_size=8, train_split=None, source="imagesets")
    k = {n: i for i, n in enumerate(VOC_LABELS)}
    assert sets.test.y[0, k["person"]] == 1 and sets.test.y[1, k["cat"]] == 1
    assert torch.equal(sets.test.y[:2], xml.test.y[:2])
    (main / "cat_test.txt").write_text("000001 yes\n")
    with pytest.raises(LabelflipError, match=r"cat_test\.txt, line 1"):
        create_dataset(f"voc:{root}", source="imagesets", train_split=None)


def test_voc_errors(tmp_path: Path) -> None:
    root = _voc(tmp_path)
    (root / "Annotations" / "000002.xml").write_text("<annotation><object><name>kat</name></object></annotation>")
    with pytest.raises(LabelflipError, match=r"unknown class 'kat'.*[Dd]id you mean 'cat'"):
        create_dataset(f"voc:{root}")
    (root / "Annotations" / "000002.xml").write_text("<annotation><object>")
    with pytest.raises(LabelflipError, match=r"000002\.xml cannot be read"):
        create_dataset(f"voc:{root}")
    with pytest.raises(LabelflipError, match=r"trainval, test|test, trainval"):
        create_dataset(f"voc:{root}", split="val")
    with pytest.raises(LabelflipError, match="ImageSets"):
        create_dataset(f"voc:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------------------------------------- NUS-WIDE
def test_nuswide_asl_csv(tmp_path: Path) -> None:
    rows = [
        ("images/0001_a.jpg", "['clouds', 'sky']", "train"),
        ("images/0002_b.jpg", "['water']", "val"),
        ("images/0003_c.jpg", "[]", "val"),
    ]
    for p, _, _ in rows:
        _img(tmp_path / p, BLUE)
    text = "filepath,label,split_name\n" + "".join(f'{p},"{lab}",{s}\n' for p, lab, s in rows)
    (tmp_path / "nus_wid_data.csv").write_text(text)
    data = create_dataset(f"nuswide:{tmp_path}", image_size=8)
    assert len(NUSWIDE_LABELS) == 81 and list(NUSWIDE_LABELS) == sorted(NUSWIDE_LABELS)
    assert data.label_names == list(NUSWIDE_LABELS)
    assert len(data.test) == 2 and len(data.train) == 1
    assert data.test.y[0, NUSWIDE_LABELS.index("water")] == 1 and data.test.y[1].sum() == 0
    assert data.train.y[0].sum() == 2
    assert parse_label_list("clouds, sky") == ["clouds", "sky"] and parse_label_list("[]") == []
    with pytest.raises(LabelflipError, match=r"splits found: train, val"):
        create_dataset(f"nuswide:{tmp_path}", split="test")
    (tmp_path / "nus_wid_data.csv").write_text(text + "images/0001_a.jpg,\"['skyy']\",val\n")
    with pytest.raises(LabelflipError, match=r"line 5: unknown NUS-WIDE label 'skyy'.*[Dd]id you mean 'sky'"):
        create_dataset(f"nuswide:{tmp_path}")


# ----------------------------------------------------------------------------------------------- CSV, folder
def test_csv_tag_strings_planet_style(tmp_path: Path) -> None:
    for name, color in (("train_0", RED), ("train_1", GREEN), ("train_2", BLUE)):
        _img(tmp_path / "train-jpg" / f"{name}.jpg", color)
    (tmp_path / "train_v2.csv").write_text("image_name,tags\ntrain_0,haze primary\ntrain_1,clear\ntrain_2,primary\n")
    data = create_dataset(f"csv:{tmp_path / 'train_v2.csv'}", image_dir=str(tmp_path / "train-jpg"), image_size=8)
    assert data.label_names == ["clear", "haze", "primary"]
    assert data.test.y.tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 1]]
    assert data.test is data.train and data.test.x[1][1].mean() > 0.9  # train_1 is green
    with pytest.raises(LabelflipError, match=r"line 2: unknown class 'haze'"):
        create_dataset(
            f"csv:{tmp_path / 'train_v2.csv'}", image_dir=str(tmp_path / "train-jpg"), label_names=["clear", "primary"]
        )


def test_csv_one_hot_columns_with_splits(tmp_path: Path) -> None:
    for i in range(4):
        _img(tmp_path / f"im{i}.png", RED)
    text = "file,cat,dog,split\nim0.png,1,0,train\nim1.png,0,1,test\nim2.png,1,1,test\nim3.png,0,0,val\n"
    (tmp_path / "labels.csv").write_text(text)
    data = create_dataset(f"csv:{tmp_path / 'labels.csv'}", image_size=8)
    assert data.label_names == ["cat", "dog"]
    assert (len(data.train), len(data.val), len(data.test)) == (1, 1, 2)
    assert data.test.y.tolist() == [[0, 1], [1, 1]]
    (tmp_path / "labels.csv").write_text(text.replace("im1.png,0,1", "im1.png,0,yes"))
    with pytest.raises(LabelflipError, match=r"line 3, column 'dog': 'yes' is not 0 or 1"):
        create_dataset(f"csv:{tmp_path / 'labels.csv'}")
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(LabelflipError, match=r"[Dd]id you mean 'test'"):
        create_dataset(f"csv:{tmp_path / 'labels.csv'}", split="tset")


def test_folder_subfolders_and_labels_csv(tmp_path: Path) -> None:
    _img(tmp_path / "photos" / "dog" / "x.jpg", RED)
    _img(tmp_path / "photos" / "person" / "x.jpg", RED)  # same file name: one sample, two labels
    _img(tmp_path / "photos" / "person" / "y.png", BLUE)
    _img(tmp_path / "photos" / "z.jpg", GREEN)  # no label
    data = create_dataset(f"folder:{tmp_path / 'photos'}", image_size=8)
    assert data.label_names == ["dog", "person"]
    assert data.test.y.tolist() == [[1, 1], [0, 1], [0, 0]]
    (tmp_path / "photos" / "labels.csv").write_text("image,tags\nz.jpg,person|dog\nperson/y.png,\n")
    lab = create_dataset(f"folder:{tmp_path / 'photos'}", labels="labels.csv", image_size=8)
    assert lab.label_names == ["dog", "person"] and lab.test.y.tolist() == [[1, 1], [0, 0]]
    _img(tmp_path / "photos" / "cat" / "w.jpg")
    with pytest.raises(LabelflipError, match=r"folder of unknown class 'cat'"):
        create_dataset(f"folder:{tmp_path / 'photos'}", label_names=["dog", "person"])
    (tmp_path / "flat").mkdir()
    _img(tmp_path / "flat" / "a.jpg")
    with pytest.raises(LabelflipError, match="no label subfolders and no labels CSV"):
        create_dataset(f"folder:{tmp_path / 'flat'}")


def test_bad_image_size_refused_before_work(tmp_path: Path) -> None:
    with pytest.raises(LabelflipError, match="image_size"):
        create_dataset(f"coco:{tmp_path}", image_size=2)

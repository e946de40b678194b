"""PASCAL VOC 2007 / 2012 as a multi-label dataset (20 classes, :data:`VOC_LABELS`), registered as ``voc``.

Labels come from ``Annotations/<id>.xml`` (the image ids of ``ImageSets/Main/<split>.txt``) or, when the XML
files are absent (or ``source="imagesets"``), from ``ImageSets/Main/<class>_<split>.txt`` (``1`` present,
``-1`` absent, ``0`` only difficult instances). ``difficult="positive"`` (default) counts a class whose only
instances are marked difficult as present, as the ML-GCN / ASL VOC loaders do; ``"negative"`` counts it as
absent. Images: ``JPEGImages/<id>.jpg``.

``path`` may be ``VOCdevkit/VOC2007`` itself, ``VOCdevkit`` or its parent (``year`` picks ``VOC<year>``, 2007 by
default). Roles: ``test`` = ``split`` (default ``"test"``), ``val`` = ``val_split`` (default ``split``), ``train``
= ``train_split`` (``"auto"``: ``trainval`` when listed, else ``split``).
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._registry import REQUIRED, Param
from labelflip._validation import LabelflipError, check_choice, did_you_mean, fail
from labelflip.data.base import DATASETS, DatasetSplits
from labelflip.data.images import ImageSplit, _hw, build_splits, check_options, require_nonempty

__all__ = ["VOC_LABELS", "load_voc_split", "voc_dataset", "voc_root"]

log = logging.getLogger(__name__)

#: The 20 PASCAL VOC classes in the standard (alphabetical) order of the published VOC models.
VOC_LABELS: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_root(path: str | os.PathLike[str], year: int | None = None) -> Path:
    """The ``VOC<year>`` directory (with ``ImageSets/``) for ``path`` = that directory, ``VOCdevkit`` or its parent."""
    p = Path(path).expanduser()
    candidates = [p] if year is None else []
    candidates += [p / f"VOC{year or 2007}", p / "VOCdevkit" / f"VOC{year or 2007}"]
    for c in candidates:
        if (c / "ImageSets").is_dir():
            return c
    raise fail(
        "the voc dataset",
        "path",
        "a VOC<year> directory with ImageSets/ (or VOCdevkit, or its parent)",
        str(p),
        "point it at the extracted VOCdevkit/VOC2007 (pass year=2012 for VOC2012).",
    )


def _ids(root: Path, split: str) -> list[str]:
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        have = sorted(f.stem for f in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in f.stem)
        raise fail(
            "the voc dataset",
            "split",
            f"a split listed in ImageSets/Main ({', '.join(have) or 'none found'})",
            split,
            "e.g. split='test' (VOC2007) or 'val' (VOC2012)." + did_you_mean(split, have),
        )
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def _from_xml(root: Path, ids: list[str], difficult: str) -> np.ndarray:
    index = {name: k for k, name in enumerate(VOC_LABELS)}
    y = np.zeros((len(ids), len(VOC_LABELS)), dtype=np.uint8)
    for r, image_id in enumerate(ids):
        xml = root / "Annotations" / f"{image_id}.xml"
        try:
            objects = ET.parse(xml).getroot().findall("object")
        except (ET.ParseError, OSError) as exc:
            raise LabelflipError(
                f"The VOC annotation {xml} cannot be read ({type(exc).__name__}: {exc}). Fix: extract the VOC "
                "archive again (the file is missing, truncated or not XML)."
            ) from exc
        for obj in objects:
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise LabelflipError(
                    f"The VOC annotation {xml} has an object of unknown class {name!r} (VOC has "
                    f"{len(VOC_LABELS)} classes).{did_you_mean(name, VOC_LABELS)} Fix: correct the <name> of the "
                    "object, or use the csv dataset for other label sets."
                )
            hard = (obj.findtext("difficult") or "0").strip() == "1"
            if not hard or difficult == "positive":
                y[r, index[name]] = 1
    return y


def _from_imagesets(root: Path, ids: list[str], split: str, difficult: str) -> np.ndarray:
    row = {image_id: r for r, image_id in enumerate(ids)}
    y = np.zeros((len(ids), len(VOC_LABELS)), dtype=np.uint8)
    for k, name in enumerate(VOC_LABELS):
        listing = root / "ImageSets" / "Main" / f"{name}_{split}.txt"
        if not listing.is_file():
            raise LabelflipError(f"{listing} is missing. Fix: extract the VOC archive again (or use source='xml').")
        for n, line in enumerate(listing.read_text().splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("1", "-1", "0") or parts[0] not in row:
                raise LabelflipError(
                    f"{listing}, line {n}: {line!r} is not '<image id of {split}> <1|-1|0>'. Fix: extract the VOC "
                    f"archive again (the class lists must match ImageSets/Main/{split}.txt)."
                )
            if parts[1] == "1" or (parts[1] == "0" and difficult == "positive"):
                y[row[parts[0]], k] = 1
    return y


def load_voc_split(
    path: str | os.PathLike[str],
    split: str = "test",
    *,
    year: int | None = None,
    image_size: int | tuple[int, int] = 448,
    difficult: str = "positive",
    source: str = "auto",
    cache: Any = None,
    resample: str = "bilinear",
    check_files: bool = True,
) -> ImageSplit:
    """One VOC split as a lazily decoded :class:`ImageSplit` (see the module docstring)."""
    owner = "the voc dataset"
    check_choice(owner, "difficult", difficult, ("positive", "negative"))
    check_choice(owner, "source", source, ("auto", "xml", "imagesets"))
    root = voc_root(path, year)
    ids = _ids(root, split)
    if source == "auto":
        source = "xml" if (root / "Annotations").is_dir() else "imagesets"
    y = _from_xml(root, ids, difficult) if source == "xml" else _from_imagesets(root, ids, split, difficult)
    out = ImageSplit(
        [root / "JPEGImages" / f"{i}.jpg" for i in ids],
        y,
        VOC_LABELS,
        image_size=image_size,
        resample=resample,
        cache=cache,
        name=f"voc {root.name} {split}",
        check_files=check_files,
    )
    return require_nonempty(out, f"VOC split {split!r} of {root}", f"check ImageSets/Main/{split}.txt.")


@DATASETS.register(
    "voc",
    params=[
        Param("path", str, REQUIRED, help="VOCdevkit/VOC2007 (or VOCdevkit, or its parent)"),
        Param("split", str, "test", help="the split attacked (the 'test' role)"),
        Param("image_size", int, 448, help="resize to image_size x image_size", low=8),
    ],
    description="PASCAL VOC 2007/2012 (XML or ImageSets labels), 20 classes, resized to image_size",
    input_size=None,
    num_labels=20,
)
def voc_dataset(
    path: str,
    split: str = "test",
    image_size: int = 448,
    *,
    train_split: str | None = "auto",
    val_split: str | None = None,
    year: int | None = None,
    **options: Any,
) -> DatasetSplits:
    """VOC splits (roles as in the module docstring); other options go to :func:`load_voc_split`."""
    _hw(image_size, "the voc dataset")
    check_options("the voc dataset", options, load_voc_split)
    root = voc_root(path, year)
    if train_split == "auto":
        train_split = "trainval" if (root / "ImageSets" / "Main" / "trainval.txt").is_file() else split
    roles = {"test": split, "val": val_split or split, "train": train_split or split}

    def load(disk: str) -> ImageSplit:
        return load_voc_split(root, disk, image_size=image_size, **options)

    return build_splits("voc", root, roles, load, {k: str(v) for k, v in options.items()})

"""NUS-WIDE in the CSV layout the ASL authors published (``nus_wid_data.csv``), registered as ``nuswide``.

The CSV has a header and three columns: the image path relative to the dataset root (``filepath``), the label
list as a Python-style list string (``label``, e.g. ``"['clouds', 'sky']"``; ``"[]"`` for none) and the split
(``split_name``: ``train`` or ``val``). Labels: the 81 NUS-WIDE concepts in sorted order (:data:`NUSWIDE_LABELS`,
the order the published models use). Roles: ``test`` = ``split`` (default ``"val"``), ``val`` = ``val_split``
(default ``split``), ``train`` = ``train_split`` (default ``"train"``).
"""

from __future__ import annotations

import ast
import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._registry import REQUIRED, Param
from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.data.base import DATASETS, DatasetSplits
from labelflip.data.images import ImageSplit, _hw, build_splits, check_options, require_nonempty

__all__ = ["NUSWIDE_LABELS", "load_nuswide_split", "nuswide_dataset", "parse_label_list"]

#: The 81 NUS-WIDE concepts, sorted (the label order of the published NUS-WIDE models).
NUSWIDE_LABELS: tuple[str, ...] = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars", "castle", "cat",
    "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog", "earthquake", "elk", "fire", "fish",
    "flags", "flowers", "food", "fox", "frost", "garden", "glacier", "grass", "harbor", "horses", "house", "lake",
    "leaf", "map", "military", "moon", "mountain", "nighttime", "ocean", "person", "plane", "plants", "police",
    "protest", "railroad", "rainbow", "reflection", "road", "rocks", "running", "sand", "sign", "sky", "snow",
    "soccer", "sports", "statue", "street", "sun", "sunset", "surf", "swimmers", "tattoo", "temple", "tiger",
    "tower", "town", "toy", "train", "tree", "valley", "vehicle", "water", "waterfall", "wedding", "whales",
    "window", "zebra",
)  # fmt: skip

_PATH_COLUMNS = ("filepath", "file_path", "filename", "file_name", "path", "image", "image_path")
_LABEL_COLUMNS = ("label", "labels", "tags")
_SPLIT_COLUMNS = ("split_name", "split", "subset")


def parse_label_list(text: str) -> list[str]:
    """``"['clouds', 'sky']"`` (or ``"clouds, sky"``) -> ``["clouds", "sky"]``; ``"[]"`` / ``""`` -> ``[]``."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return [v.strip() for v in value if v.strip()]
        except (ValueError, SyntaxError):
            pass
    return [t.strip(" []'\"") for t in text.split(",") if t.strip(" []'\"")]


def _column(header: list[str], names: tuple[str, ...], fallback: int) -> int:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), fallback)


def load_nuswide_split(
    path: str | os.PathLike[str],
    split: str = "val",
    *,
    csv_file: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    image_size: int | tuple[int, int] = 448,
    cache: Any = None,
    resample: str = "bilinear",
    check_files: bool = True,
) -> ImageSplit:
    """One NUS-WIDE split (``train`` / ``val``) as a lazily decoded :class:`ImageSplit`.

    ``csv_file`` defaults to ``<path>/nus_wid_data.csv``; image paths in it are relative to ``image_dir``
    (default ``path``).
    """
    owner = "the nuswide dataset"
    root = Path(path).expanduser()
    table = Path(csv_file).expanduser() if csv_file is not None else root / "nus_wid_data.csv"
    if not table.is_file():
        raise fail(
            owner,
            "csv_file",
            "the ASL split file nus_wid_data.csv",
            str(table),
            "download nus_wid_data.csv (linked from Alibaba-MIIL/ASL MODEL_ZOO.md) into the dataset root, or pass "
            "csv_file=...",
        )
    images = Path(image_dir).expanduser() if image_dir is not None else root
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise LabelflipError(f"{table} is empty. Fix: download nus_wid_data.csv again.")
    header = [h.strip().lower() for h in rows[0]]
    has_header = any(h in (*_LABEL_COLUMNS, *_SPLIT_COLUMNS) for h in header)
    c_path = _column(header, _PATH_COLUMNS, 0) if has_header else 0
    c_label = _column(header, _LABEL_COLUMNS, 1) if has_header else 1
    c_split = _column(header, _SPLIT_COLUMNS, 2) if has_header else 2
    index = {name: k for k, name in enumerate(NUSWIDE_LABELS)}
    paths, labels, seen = [], [], set()
    for n, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if not row:
            continue
        if len(row) <= max(c_path, c_label, c_split):
            raise LabelflipError(
                f"{table}, line {n}: {row!r} has {len(row)} columns, expected filepath, label list and split. "
                "Fix: use the unmodified nus_wid_data.csv."
            )
        seen.add(row[c_split].strip())
        if row[c_split].strip() != split:
            continue
        vec = np.zeros(len(NUSWIDE_LABELS), dtype=np.uint8)
        for tag in parse_label_list(row[c_label]):
            if tag not in index:
                raise LabelflipError(
                    f"{table}, line {n}: unknown NUS-WIDE label {tag!r}.{did_you_mean(tag, NUSWIDE_LABELS)} Fix: "
                    "use the 81 concepts of nus_wid_data.csv, or the csv dataset for other label sets."
                )
            vec[index[tag]] = 1
        paths.append(images / row[c_path].strip())
        labels.append(vec)
    if not paths:
        raise LabelflipError(
            f"The NUS-WIDE split {split!r} has no images in {table} (splits found: "
            f"{', '.join(sorted(seen)) or 'none'}). Fix: pick one of them, e.g. split='val'.{did_you_mean(split, seen)}"
        )
    y = np.stack(labels) if labels else np.zeros((0, len(NUSWIDE_LABELS)), dtype=np.uint8)
    out = ImageSplit(
        paths,
        y,
        NUSWIDE_LABELS,
        image_size=image_size,
        resample=resample,
        cache=cache,
        name=f"nuswide {split}",
        check_files=check_files,
    )
    return require_nonempty(out, f"NUS-WIDE split {split!r}", "check the split column of the CSV.")


@DATASETS.register(
    "nuswide",
    params=[
        Param("path", str, REQUIRED, help="the NUS-WIDE root holding nus_wid_data.csv and the images"),
        Param("split", str, "val", help="the split attacked (the 'test' role): train or val"),
        Param("image_size", int, 448, help="resize to image_size x image_size", low=8),
    ],
    description="NUS-WIDE in ASL's CSV layout (nus_wid_data.csv), 81 labels, resized to image_size",
    input_size=None,
    num_labels=81,
)
def nuswide_dataset(
    path: str,
    split: str = "val",
    image_size: int = 448,
    *,
    train_split: str | None = "train",
    val_split: str | None = None,
    **options: Any,
) -> DatasetSplits:
    """NUS-WIDE splits (roles as in the module docstring); other options go to :func:`load_nuswide_split`."""
    _hw(image_size, "the nuswide dataset")
    check_options("the nuswide dataset", options, load_nuswide_split)
    root = Path(path).expanduser()
    roles = {"test": split, "val": val_split or split, "train": train_split or split}

    def load(disk: str) -> ImageSplit:
        return load_nuswide_split(root, disk, image_size=image_size, **options)

    return build_splits("nuswide", root, roles, load, {k: str(v) for k, v in options.items()})

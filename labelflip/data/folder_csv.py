"""Generic multi-label image datasets: a CSV label table (``csv``) and an image folder (``folder``).

**CSV** (``create_dataset("csv:labels.csv", image_dir="images/")``): one row per image, with a header. The image
column is ``image_column`` or the first of image / path / file / filename / image_name / id (else the first
column); a value without a file extension gets ``extension`` (e.g. ``".jpg"`` for Kaggle Planet's
``image_name``) or the first existing image extension. Labels are either

* a **tag string** column (``tags_column``, or one named tags / labels / label / classes): tags separated by
  ``separator`` (default: ``|``, ``;`` or ``,`` when the column uses it, else whitespace), or a Python-style list
  ``"['a', 'b']"``; label names are the sorted set of tags unless ``label_names`` fixes them (a list, or a text
  file with one name per line; then an unknown tag is an error); or
* **one 0/1 column per label** (every other column, in file order; ``label_names`` may select them).

An optional split column (``split_column``, or one named split / split_name / subset / set / fold) holds the
split of each row; ``split`` (default ``test``, else ``val``) is the attacked ``test`` role, ``val_split``
(default ``val`` when present, else ``split``) and ``train_split`` (default ``train`` when present, else
``split``) the others. Without a split column every role is all rows.

**Folder** (``create_dataset("folder:photos/", labels="labels.csv")``): with ``labels`` (a CSV as above, paths
relative to the folder) it is the CSV loader with ``image_dir`` = the folder. Without it, every subfolder is a
label and the images directly in it carry that label; an image file name found in several label folders is one
sample with all those labels (files directly in the root are samples with no label). ``split`` selects a
subfolder ``<path>/<split>/`` when it exists.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._registry import REQUIRED, Param
from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.data.base import DATASETS, DatasetSplits
from labelflip.data.images import IMAGE_EXTENSIONS, ImageSplit, _hw, build_splits, require_nonempty
from labelflip.data.nuswide import parse_label_list

__all__ = ["csv_dataset", "folder_dataset", "read_label_table"]

_IMAGE = ("image", "path", "file", "filename", "file_name", "image_name", "image_id", "img", "filepath", "id")
_TAGS = ("tags", "labels", "label", "classes", "categories")
_SPLIT = ("split", "split_name", "subset", "set", "fold")
_BOOL = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0, "": 0}


def _names(label_names: Sequence[str] | str | os.PathLike[str] | None) -> list[str] | None:
    if label_names is None:
        return None
    if isinstance(label_names, (str, os.PathLike)):
        p = Path(label_names).expanduser()
        if not p.is_file():
            raise fail("the csv dataset", "label_names", "a list of names or a text file, one name a line", str(p))
        return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(n) for n in label_names]


def _pick(header: list[str], given: str | None, choices: tuple[str, ...], what: str, table: Path) -> str | None:
    if given is not None:
        if given not in header:
            raise LabelflipError(
                f"{table} has no {what} column {given!r} (columns: {', '.join(header)}).{did_you_mean(given, header)} "
                "Fix: name an existing column."
            )
        return given
    lowered = {h.lower(): h for h in header}
    return next((lowered[c] for c in choices if c in lowered), None)


def _image_path(image_dir: Path, value: str, extension: str | None) -> Path:
    p = image_dir / value
    if extension:
        return p if p.suffix.lower() == extension.lower() else p.with_name(p.name + extension)
    if p.suffix or p.is_file():
        return p
    return next((q for e in IMAGE_EXTENSIONS if (q := p.with_name(p.name + e)).is_file()), p)


def read_label_table(
    table: str | os.PathLike[str],
    *,
    image_dir: str | os.PathLike[str] | None = None,
    image_column: str | None = None,
    tags_column: str | None = None,
    split_column: str | None = None,
    separator: str | None = None,
    label_names: Sequence[str] | str | os.PathLike[str] | None = None,
    extension: str | None = None,
) -> dict[str, Any]:
    """Parse a label CSV (see the module docstring) into ``{"paths", "y" uint8 (N, K), "label_names",
    "splits" (per row, or None)}``."""
    path = Path(table).expanduser()
    if not path.is_file():
        raise fail("the csv dataset", "path", "an existing CSV file", str(path))
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
        header = list(rows[0].keys()) if rows else []
    if not rows:
        raise LabelflipError(f"{path} has no rows. Fix: the CSV needs a header and one row per image.")
    img_col = _pick(header, image_column, _IMAGE, "image", path) or header[0]
    split_col = _pick(header, split_column, _SPLIT, "split", path)
    tag_col = _pick(header, tags_column, _TAGS, "tags", path)
    fixed = _names(label_names)
    root = Path(image_dir).expanduser() if image_dir is not None else path.parent
    if tag_col is not None:
        texts = [r[tag_col] or "" for r in rows]
        sep = separator or next((s for s in ("|", ";", ",") if any(s in t for t in texts)), None)
        tags = [
            parse_label_list(t) if t.strip().startswith("[") else [x for x in t.split(sep) if x.strip()] for t in texts
        ]
        tags = [[x.strip() for x in row] for row in tags]
        names = fixed if fixed is not None else sorted({x for row in tags for x in row})
        index = {n: k for k, n in enumerate(names)}
        y = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for r, row in enumerate(tags):
            for tag in row:
                if tag not in index:
                    raise LabelflipError(
                        f"{path}, line {r + 2}: unknown class {tag!r} (not among the {len(names)} label names)."
                        f"{did_you_mean(tag, names)} Fix: add it to label_names or correct the row."
                    )
                y[r, index[tag]] = 1
    else:
        columns = [h for h in header if h not in (img_col, split_col)]
        names = fixed if fixed is not None else columns
        for n in names:
            if n not in columns:
                raise LabelflipError(
                    f"{path} has no column for class {n!r}.{did_you_mean(n, columns)} Fix: label_names must name "
                    "0/1 columns of the CSV."
                )
        if not names:
            raise LabelflipError(f"{path} has no label columns. Fix: add a tags column or one 0/1 column per label.")
        y = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for r, row in enumerate(rows):
            for k, n in enumerate(names):
                value = (row[n] or "").strip().lower()
                if value not in _BOOL:
                    raise LabelflipError(
                        f"{path}, line {r + 2}, column {n!r}: {row[n]!r} is not 0 or 1. Fix: one 0/1 column per "
                        "label, or name the tags column with tags_column=..."
                    )
                y[r, k] = _BOOL[value]
    paths = [_image_path(root, (r[img_col] or "").strip(), extension) for r in rows]
    splits = [(r[split_col] or "").strip() for r in rows] if split_col else None
    return {"paths": paths, "y": y, "label_names": list(names), "splits": splits}


def _roles(
    splits: list[str] | None, split: str | None, val: str | None, train: str | None, what: str
) -> dict[str, str]:
    if splits is None:
        if split is not None or val is not None or train is not None:
            raise fail(f"the {what} dataset", "split", "None: the CSV has no split column", split or val or train)
        return {"test": "all", "val": "all", "train": "all"}
    have = sorted(set(splits))
    test = split or next((s for s in ("test", "val") if s in have), None)
    if test is None or test not in have:
        raise fail(
            f"the {what} dataset", "split", f"one of the CSV's splits {have}", split, did_you_mean(str(split), have)
        )
    return {
        "test": test,
        "val": val or ("val" if "val" in have else test),
        "train": train or ("train" if "train" in have else test),
    }


def _split_from_table(parsed: dict[str, Any], disk: str, name: str, options: dict[str, Any]) -> ImageSplit:
    rows = (
        [i for i, s in enumerate(parsed["splits"] or []) if s == disk] if disk != "all" else range(len(parsed["paths"]))
    )
    rows = list(rows)
    out = ImageSplit(
        [parsed["paths"][i] for i in rows], parsed["y"][rows], parsed["label_names"], name=f"{name} {disk}", **options
    )
    return require_nonempty(out, f"{name} split {disk!r}", "check the CSV's split column and rows.")


_TABLE_OPTIONS = ("image_column", "tags_column", "split_column", "separator", "label_names", "extension")
_SPLIT_OPTIONS = ("resample", "cache", "check_files", "threads")


def _separate(owner: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    unknown = [k for k in options if k not in (*_TABLE_OPTIONS, *_SPLIT_OPTIONS)]
    if unknown:
        raise fail(owner, unknown[0], "one of the options " + ", ".join((*_TABLE_OPTIONS, *_SPLIT_OPTIONS)), unknown[0])
    return {k: v for k, v in options.items() if k in _TABLE_OPTIONS}, {
        k: v for k, v in options.items() if k in _SPLIT_OPTIONS
    }


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (bool, int, float)) or v is None else str(v) for k, v in options.items()}


_PARAMS = [Param("split", str, "", help="the split attacked (a value of the split column/subfolder); '' = default")]


@DATASETS.register(
    "csv",
    params=[Param("path", str, REQUIRED, help="the label CSV"), *_PARAMS, Param("image_size", int, 448, low=8)],
    description="images listed in a CSV with a tag string or one 0/1 column per label, resized to image_size",
    input_size=None,
)
def csv_dataset(
    path: str,
    split: str = "",
    image_size: int = 448,
    *,
    image_dir: str | None = None,
    val_split: str | None = None,
    train_split: str | None = None,
    **options: Any,
) -> DatasetSplits:
    """Images listed in a label CSV (see the module docstring); ``image_dir`` defaults to the CSV's folder."""
    table, split_opts = _separate("the csv dataset", options)
    parsed = read_label_table(path, image_dir=image_dir, **table)
    roles = _roles(parsed["splits"], split or None, val_split, train_split, "csv")
    split_opts["image_size"] = _hw(image_size, "the csv dataset")
    root = Path(path).expanduser()
    return build_splits("csv", root, roles, lambda d: _split_from_table(parsed, d, "csv", split_opts), _plain(options))


def _scan_folder(root: Path, label_names: list[str] | None) -> dict[str, Any]:
    """Class-subfolder layout -> paths and multi-hot labels (merged by file name)."""
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    names = label_names if label_names is not None else dirs
    for n in dirs:
        if n not in names:
            raise LabelflipError(
                f"{root / n} is a folder of unknown class {n!r}.{did_you_mean(n, names)} Fix: add it to label_names "
                "or move it out of the dataset folder."
            )
    samples: dict[str, tuple[Path, set[int]]] = {}
    for k, n in enumerate(names):
        for f in sorted((root / n).iterdir()) if (root / n).is_dir() else []:
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                samples.setdefault(f.name, (f, set()))[1].add(k)
    for f in sorted(root.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            samples.setdefault(f.name, (f, set()))
    y = np.zeros((len(samples), len(names)), dtype=np.uint8)
    for r, (_, ks) in enumerate(samples.values()):
        y[r, sorted(ks)] = 1
    return {"paths": [p for p, _ in samples.values()], "y": y, "label_names": list(names), "splits": None}


@DATASETS.register(
    "folder",
    params=[Param("path", str, REQUIRED, help="the image folder"), *_PARAMS, Param("image_size", int, 448, low=8)],
    description="an image folder: labels from a CSV (labels=...) or one subfolder per label, resized to image_size",
    input_size=None,
)
def folder_dataset(
    path: str, split: str = "", image_size: int = 448, *, labels: str | None = None, **options: Any
) -> DatasetSplits:
    """An image folder (see the module docstring); ``labels`` is a CSV path, relative to the folder or absolute."""
    owner = "the folder dataset"
    root = Path(path).expanduser()
    if not root.is_dir():
        raise fail(owner, "path", "an existing folder of images", str(root))
    table, split_opts = _separate(owner, options)
    split_opts["image_size"] = _hw(image_size, owner)
    if labels is not None:
        csv_path = Path(labels).expanduser()
        csv_path = csv_path if csv_path.is_absolute() else root / csv_path
        parsed = read_label_table(csv_path, image_dir=root, **table)
        roles = _roles(parsed["splits"], split or None, None, None, "folder")
    else:
        if set(table) - {"label_names"}:
            raise fail(owner, "labels", "a label CSV when CSV options are given", None, "pass labels='labels.csv'.")
        base = root / split if split and (root / split).is_dir() else root
        if split and base == root:
            raise fail(owner, "split", f"a subfolder of {root}", split, "omit split for a folder without splits.")
        parsed = _scan_folder(base, _names(table.get("label_names")))
        if not parsed["label_names"]:
            raise LabelflipError(
                f"{base} has no label subfolders and no labels CSV. Fix: pass labels='labels.csv' or put the images "
                "in one subfolder per label."
            )
        roles = {"test": "all", "val": "all", "train": "all"}
    return build_splits(
        "folder", root, roles, lambda d: _split_from_table(parsed, d, "folder", split_opts), _plain(options)
    )

"""MS-COCO as a multi-label dataset: ``annotations/instances_<split>.json`` + the image folder, registered as ``coco``.

Labels: the categories of the annotation file mapped to contiguous indices in category-id order (80 for
COCO 2014/2017: :data:`COCO_LABELS`), an image carrying a label when it has at least one instance of it (crowd
instances included), as in the ASL and Query2Label code. Images are ordered by image id. Images without any
annotation are dropped by default, as ASL's loader does (``drop_unannotated=False`` keeps them with all-zero
labels, as torchvision's ``CocoDetection`` used by Query2Label does).

Layout (``path`` = the COCO root)::

    path/annotations/instances_val2014.json
    path/val2014/COCO_val2014_000000000042.jpg     (or path/images/val2014/...)

``create_dataset("coco:/data/coco", split="val2014")``: the attacked split is ``test``; ``val`` (flip profiles,
correlations) is ``val_split`` (default: the same split); ``train`` (co-occurrence, attackability) is
``train_split``: ``"auto"`` means ``train<year>`` when its annotation file exists, else the attacked split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from labelflip._registry import REQUIRED, Param
from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.data.base import DATASETS, DatasetSplits
from labelflip.data.images import ImageSplit, _hw, build_splits, check_options, default_image_cache, require_nonempty

__all__ = ["COCO_LABELS", "coco_dataset", "load_coco_split", "read_coco_annotations"]

log = logging.getLogger(__name__)

#: The 80 MS-COCO category names in category-id order (the label order of the published COCO models).
COCO_LABELS: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


def _malformed(path: Path, what: str) -> LabelflipError:
    return LabelflipError(
        f"The COCO annotation file {path} is malformed: {what}. Fix: use an unmodified instances_<split>.json "
        "from cocodataset.org (download it again if it may be truncated)."
    )


def read_coco_annotations(path: str | os.PathLike[str], *, drop_unannotated: bool = True) -> dict[str, Any]:
    """Parse an ``instances_*.json`` file into ``{"file_names": [...], "image_ids": [...], "y": uint8 (N, K),
    "label_names": [...]}`` with images in id order and categories in id order."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise _malformed(p, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _malformed(p, "the top level is not a JSON object")
    for key in ("images", "categories", "annotations"):
        if not isinstance(doc.get(key), list):
            raise _malformed(p, f"no {key!r} list")
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in doc["categories"])
        images = sorted((int(im["id"]), str(im["file_name"])) for im in doc["images"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(p, f"a category or image entry lacks a valid id / name / file_name ({exc!r})") from exc
    if len({c for c, _ in cats}) != len(cats) or len({i for i, _ in images}) != len(images):
        raise _malformed(p, "duplicate category or image ids")
    cat_index = {cid: k for k, (cid, _) in enumerate(cats)}
    row = {iid: r for r, (iid, _) in enumerate(images)}
    y = np.zeros((len(images), len(cats)), dtype=np.uint8)
    for n, ann in enumerate(doc["annotations"]):
        try:
            iid, cid = int(ann["image_id"]), int(ann["category_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _malformed(p, f"annotation #{n} lacks image_id / category_id") from exc
        if cid not in cat_index:
            raise LabelflipError(
                f"The COCO annotation file {p}: annotation #{n} (image {iid}) uses category id {cid}, which is not "
                f"among its {len(cats)} categories. Fix: use the annotation file of one release (its 'categories' "
                "must list every category the annotations use)."
            )
        if iid not in row:
            raise _malformed(p, f"annotation #{n} refers to image id {iid}, which is not in 'images'")
        y[row[iid], cat_index[cid]] = 1
    keep = np.ones(len(images), dtype=bool) if not drop_unannotated else y.any(axis=1)
    return {
        "file_names": [f for (_, f), k in zip(images, keep, strict=True) if k],
        "image_ids": [i for (i, _), k in zip(images, keep, strict=True) if k],
        "y": y[keep],
        "label_names": [name for _, name in cats],
    }


def _cached_annotations(path: Path, drop_unannotated: bool, cache_dir: Path | None) -> dict[str, Any]:
    """:func:`read_coco_annotations`, memoised as ``.npz`` (keyed by path, mtime, size) when a cache dir is given:
    parsing the 2014 train file takes seconds and gigabytes."""
    if cache_dir is None:
        return read_coco_annotations(path, drop_unannotated=drop_unannotated)
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{drop_unannotated}".encode()).hexdigest()
    entry = cache_dir / "annotations" / f"coco-{key[:32]}.npz"
    if entry.is_file():
        try:
            with np.load(entry, allow_pickle=False) as z:
                return {
                    "file_names": z["file_names"].tolist(),
                    "image_ids": z["image_ids"].tolist(),
                    "y": z["y"],
                    "label_names": z["label_names"].tolist(),
                }
        except (OSError, ValueError, KeyError):
            log.debug("annotation cache entry %s is damaged; parsing %s again", entry, path)
    out = read_coco_annotations(path, drop_unannotated=drop_unannotated)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            file_names=np.array(out["file_names"], dtype=str),
            image_ids=np.array(out["image_ids"], dtype=np.int64),
            y=out["y"],
            label_names=np.array(out["label_names"], dtype=str),
        )
        os.replace(tmp, entry)
    except OSError as exc:
        log.warning("cannot write the annotation cache %s: %s", entry, exc)
    return out


def _annotation_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{split}.json"


def load_coco_split(
    path: str | os.PathLike[str],
    split: str = "val2014",
    *,
    image_size: int | tuple[int, int] = 448,
    drop_unannotated: bool = True,
    annotations: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    cache: Any = None,
    resample: str = "bilinear",
    check_files: bool = True,
) -> ImageSplit:
    """One COCO split as a lazily decoded :class:`ImageSplit` (see the module docstring for layout and labels).

    ``annotations`` / ``image_dir`` override the default locations; ``cache`` (``True``, a directory or ``None``)
    also memoises the parsed annotation file.
    """
    owner = "the coco dataset"
    root = Path(path).expanduser()
    if not root.is_dir():
        raise fail(owner, "path", "the COCO root directory (with annotations/ and the image folders)", str(root))
    ann = Path(annotations).expanduser() if annotations is not None else _annotation_file(root, split)
    if not ann.is_file():
        have = sorted(f.stem.removeprefix("instances_") for f in (root / "annotations").glob("instances_*.json"))
        raise fail(
            owner,
            "split",
            f"a split with an annotation file {ann.name} under {ann.parent}"
            + (f" (available: {', '.join(have)})" if have else ""),
            split,
            "download the 2014 train/val annotations from cocodataset.org into <path>/annotations/."
            + did_you_mean(split, have),
        )
    if image_dir is not None:
        images = Path(image_dir).expanduser()
    else:
        tried = [root / split, root / "images" / split]
        images = next((d for d in tried if d.is_dir()), tried[0])
        if not images.is_dir():
            raise fail(
                owner,
                "image_dir",
                "the folder holding the split's images",
                f"none of {', '.join(map(str, tried))}",
                f"extract {split}.zip into {root} or pass image_dir=...",
            )
    cache_dir = None if cache in (None, False) else (default_image_cache() if cache is True else Path(cache))
    parsed = _cached_annotations(ann, drop_unannotated, cache_dir)
    split_obj = ImageSplit(
        [images / f for f in parsed["file_names"]],
        parsed["y"],
        parsed["label_names"],
        image_size=image_size,
        resample=resample,
        cache=cache,
        name=f"coco {split}",
        check_files=check_files,
    )
    return require_nonempty(
        split_obj, f"COCO split {split!r} ({ann})", "check the annotation file, or pass drop_unannotated=False."
    )


@DATASETS.register(
    "coco",
    params=[
        Param("path", str, REQUIRED, help="the COCO root (annotations/, val2014/, ...)"),
        Param("split", str, "val2014", help="the split attacked (the 'test' role)"),
        Param("image_size", int, 448, help="resize to image_size x image_size", low=8),
    ],
    description="MS-COCO (instances_*.json + images), 80 labels in category-id order, resized to image_size",
    input_size=None,
    num_labels=80,
)
def coco_dataset(
    path: str,
    split: str = "val2014",
    image_size: int = 448,
    *,
    train_split: str | None = "auto",
    val_split: str | None = None,
    **options: Any,
) -> DatasetSplits:
    """MS-COCO splits: ``test`` = ``split``, ``val`` = ``val_split`` (default ``split``), ``train`` =
    ``train_split`` (``"auto"``: ``train<year>`` if annotated on disk, else ``split``; ``None``: ``split``).
    Other options go to :func:`load_coco_split` (``drop_unannotated``, ``cache``, ``resample``, ...)."""
    _hw(image_size, "the coco dataset")
    check_options("the coco dataset", options, load_coco_split)
    root = Path(path).expanduser()
    if train_split == "auto":
        year = split[-4:] if split[-4:].isdigit() else ""
        guess = f"train{year}"
        train_split = guess if year and _annotation_file(root, guess).is_file() else split
        if train_split == split and guess != split:
            log.warning("coco: no %s annotations under %s; the train role uses %s", guess, root, split)
    roles = {"test": split, "val": val_split or split, "train": train_split or split}

    def load(disk: str) -> ImageSplit:
        return load_coco_split(root, disk, image_size=image_size, **options)

    return build_splits("coco", root, roles, load, {k: str(v) for k, v in options.items()})

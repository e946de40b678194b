"""Images on disk: decoding with Pillow, an optional on-disk cache of decoded images, and a lazily decoded split.

:class:`ImageSplit` is what the real-dataset loaders (``coco``, ``voc``, ``nuswide``, ``csv``, ``folder``) put in a
:class:`~labelflip.data.DatasetSplits`. It has the interface studies use of :class:`~labelflip.data.MultiLabelData`
without holding the images in memory:

* ``len(split)``, ``split.y`` (float32 ``(N, K)`` in ``{0, 1}``), ``split.label_names``, ``split.num_labels``,
  ``split.label_frequencies()``, ``split.subset(indices)``;
* ``split.x``: an :class:`ImageSource`; ``split.x[idx]`` with an int, a slice, a list, a LongTensor or a bool mask
  decodes those images and returns float32 ``(n, 3, H, W)`` in ``[0, 1]`` (``(3, H, W)`` for an int);
  ``split.x.shape`` is ``(N, 3, H, W)``;
* ``split.loader(batch_size, num_workers)``: a ``DataLoader`` with worker processes for full passes;
* ``split.materialize()``: a :class:`MultiLabelData` with every image decoded (small splits only).

Images are converted to RGB and resized to the model's resolution (``image_size``, 448 for the paper's models)
with ``resample`` (``"bilinear"``: torchvision's ``Resize`` on PIL images, as Query2Label and ASL's validation
use), then scaled to ``[0, 1]``. With a cache directory, decoded resized images are stored as uint8 ``.npy`` files
keyed by file path, mtime, size, resolution and resampling, so a study does not decode a JPEG hundreds of times.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from labelflip._validation import LabelflipError, check_choice, did_you_mean, fail
from labelflip.data.base import DatasetSplits, MultiLabelData

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageCache",
    "ImageDataset",
    "ImageDatasetConfig",
    "ImageSource",
    "ImageSplit",
    "decode_image",
    "default_image_cache",
]

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
RESAMPLE = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


def _hw(image_size: int | Sequence[int], owner: str) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and s >= 8 for s in size)):
        raise fail(owner, "image_size", "an int >= 8 or a pair (H, W)", image_size, "e.g. 448 for the paper's models.")
    return int(size[0]), int(size[1])


def decode_image(path: str | os.PathLike[str], size: tuple[int, int], resample: str = "bilinear") -> Tensor:
    """Decode ``path`` to uint8 ``(3, H, W)``: RGB, resized to ``size = (H, W)`` with Pillow's ``resample`` filter.

    Raises :class:`LabelflipError` naming the file for a missing or unreadable (corrupt, truncated, not an image)
    file.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise LabelflipError(
            f"Image {p} does not exist. Fix: check the dataset path and that the image folder is complete (the "
            "annotation file lists this image)."
        )
    filt = getattr(Image.Resampling, resample.upper())
    try:
        with Image.open(p) as im:
            rgb = im.convert("RGB")
            if rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), resample=filt)
            arr = np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise LabelflipError(
            f"Image {p} cannot be read ({type(exc).__name__}: {exc}). Fix: the file is corrupt, truncated or not an "
            "image; download or extract it again, or remove it from the annotations."
        ) from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def default_image_cache() -> Path:
    """``$LABELFLIP_CACHE/images`` if ``LABELFLIP_CACHE`` is set, else ``~/.cache/labelflip/images``."""
    env = os.environ.get("LABELFLIP_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "labelflip") / "images"


class ImageCache:
    """Decoded, resized uint8 images as ``.npy`` files under ``directory``, keyed by absolute path, mtime, file size,
    resolution and resampling filter (an edited image gets a new entry). Writes are atomic; a damaged entry is
    decoded again."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()

    def _file(self, path: Path, size: tuple[int, int], resample: str) -> Path:
        st = path.stat()
        text = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{size[0]}x{size[1]}|{resample}"
        key = hashlib.sha256(text.encode()).hexdigest()
        return self.directory / key[:2] / f"{key}.npy"

    def load(self, path: str | os.PathLike[str], size: tuple[int, int], resample: str = "bilinear") -> Tensor:
        """uint8 ``(3, H, W)`` from the cache, decoding and storing it on a miss."""
        p = Path(path)
        if not p.is_file():
            return decode_image(p, size, resample)  # raises the missing-image error
        entry = self._file(p, size, resample)
        if entry.is_file():
            try:
                arr = np.load(entry, allow_pickle=False)
                if arr.shape == (3, *size) and arr.dtype == np.uint8:
                    return torch.from_numpy(arr)
            except (OSError, ValueError):
                pass
            log.debug("cache entry %s is damaged; decoding %s again", entry, p)
        img = decode_image(p, size, resample)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, img.numpy(), allow_pickle=False)
            os.replace(tmp, entry)
        except OSError as exc:  # a read-only or full cache must not stop the study
            log.warning("cannot write the image cache %s: %s", self.directory, exc)
        return img


class ImageSource:
    """A split's images, decoded on demand: indexes like a read-only float32 ``(N, 3, H, W)`` tensor in ``[0, 1]``.

    Args:
        paths: image files, in sample order.
        size: ``(H, W)`` every image is resized to.
        resample: Pillow filter (``"bilinear"``, ``"bicubic"``, ...).
        cache: an :class:`ImageCache` or ``None``.
        threads: decoding threads for multi-image indexing (Pillow releases the GIL while decoding).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        size: tuple[int, int],
        resample: str = "bilinear",
        cache: ImageCache | None = None,
        threads: int = 4,
    ) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.size = size
        self.resample = check_choice("ImageSource", "resample", resample, RESAMPLE)
        self.cache = cache
        self.threads = max(1, int(threads))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, *self.size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def ndim(self) -> int:
        return 4

    def _load(self, i: int) -> Tensor:
        if self.cache is not None:
            return self.cache.load(self.paths[i], self.size, self.resample)
        return decode_image(self.paths[i], self.size, self.resample)

    def indices(self, index: Any) -> list[int]:
        """Sample indices selected by an int, slice, sequence, tensor / array of ints or a bool mask."""
        n = len(self)
        if isinstance(index, slice):
            return list(range(n))[index]
        idx = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor) else index)
        if idx.dtype == torch.bool:
            if idx.shape != (n,):
                raise fail("ImageSource", "index", f"a bool mask of length {n}", idx)
            idx = idx.nonzero().flatten()
        if idx.is_floating_point() or idx.is_complex():
            raise fail("ImageSource", "index", "integer indices", idx)
        flat = idx.long().flatten()
        if flat.numel() and (int(flat.min()) < -n or int(flat.max()) >= n):
            raise fail("ImageSource", "index", f"indices in [-{n}, {n})", index, "index images that exist.")
        return [int(i) % n for i in flat.tolist()]

    def uint8(self, index: Any) -> Tensor:
        """The selected images as uint8 ``(n, 3, H, W)`` (decoded in ``threads`` threads)."""
        rows = self.indices(index)
        if not rows:
            return torch.zeros(0, 3, *self.size, dtype=torch.uint8)
        if len(rows) == 1 or self.threads == 1:
            return torch.stack([self._load(i) for i in rows])
        with ThreadPoolExecutor(min(self.threads, len(rows))) as pool:
            return torch.stack(list(pool.map(self._load, rows)))

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            return self.uint8([int(index)])[0].float().div_(255.0)
        return self.uint8(index).float().div_(255.0)


class ImageDataset(torch.utils.data.Dataset):
    """``dataset[i] -> (image float32 (3, H, W) in [0, 1], labels float32 (K,), i)`` for a ``DataLoader``."""

    def __init__(self, source: ImageSource, y: Tensor) -> None:
        self.source = source
        self.y = y

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.source[int(i)], self.y[int(i)], int(i)


@dataclass
class ImageDatasetConfig:
    """How a real dataset was read: loader name, root, the on-disk split behind each role, resolution, options."""

    name: str
    root: str
    splits: dict[str, str]
    image_size: tuple[int, int]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out


class ImageSplit:
    """One split of an on-disk dataset, decoded lazily (see the module docstring for the interface).

    Args:
        paths: image files, one per sample.
        y: labels ``(N, K)`` in ``{0, 1}`` (any numeric dtype; stored as float32).
        label_names: K names.
        image_size: int or ``(H, W)``.
        resample, cache, threads: see :class:`ImageSource`; ``cache`` may be ``None``/``False`` (no cache),
            ``True`` (:func:`default_image_cache`), a directory, or an :class:`ImageCache`.
        name: a description used in messages (``"coco val2014"``).
        check_files: verify up front that every image file exists (one ``stat`` per image).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        y: Tensor | np.ndarray,
        label_names: Sequence[str],
        *,
        image_size: int | Sequence[int] = 448,
        resample: str = "bilinear",
        cache: Any = None,
        threads: int = 4,
        name: str = "images",
        check_files: bool = True,
    ) -> None:
        owner = f"the {name} split"
        size = _hw(image_size, owner)
        labels = torch.as_tensor(np.asarray(y), dtype=torch.float32) if not isinstance(y, Tensor) else y.float()
        if labels.dim() != 2 or labels.shape[0] != len(paths) or labels.shape[1] != len(label_names):
            raise fail(owner, "y", f"a ({len(paths)}, {len(label_names)}) label matrix", labels)
        if cache is True:
            cache = ImageCache(default_image_cache())
        elif cache is not None and cache is not False and not isinstance(cache, ImageCache):
            cache = ImageCache(cache)
        self.name = name
        self.x = ImageSource([Path(p) for p in paths], size, resample, cache or None, threads)
        self.y = labels
        self.label_names = list(label_names)
        if check_files:
            missing = [p for p in self.x.paths if not p.is_file()]
            if missing:
                listed = ", ".join(str(p) for p in missing[:3])
                raise LabelflipError(
                    f"{len(missing)} of {len(paths)} images of {name} are missing: {listed}"
                    f"{' ...' if len(missing) > 3 else ''}. Fix: check the dataset path and image folder (images must "
                    "be extracted next to the annotations), or pass check_files=False to fail only when one is used."
                )

    @property
    def paths(self) -> tuple[Path, ...]:
        return self.x.paths

    def __len__(self) -> int:
        return len(self.x)

    def __repr__(self) -> str:
        return f"ImageSplit({self.name!r}, n={len(self)}, K={self.num_labels}, size={self.x.size})"

    @property
    def num_labels(self) -> int:
        """K, the number of labels."""
        return len(self.label_names)

    def label_frequencies(self) -> Tensor:
        """Fraction of images carrying each label: float32 ``(K,)`` in ``[0, 1]``."""
        return self.y.mean(dim=0) if len(self) else torch.zeros(self.num_labels)

    def subset(self, indices: Any) -> ImageSplit:
        """The rows ``indices`` (ints, a slice or a bool mask) as a new lazily decoded split."""
        rows = self.x.indices(indices)
        out = object.__new__(ImageSplit)
        out.name = self.name
        out.x = ImageSource([self.x.paths[i] for i in rows], self.x.size, self.x.resample, self.x.cache, self.x.threads)
        out.y = self.y[rows]
        out.label_names = list(self.label_names)
        return out

    def materialize(self) -> MultiLabelData:
        """Decode every image into an in-memory :class:`MultiLabelData` (``N * 3 * H * W * 4`` bytes)."""
        return MultiLabelData(self.x[:], self.y.clone(), list(self.label_names))

    def dataset(self) -> ImageDataset:
        return ImageDataset(self.x, self.y)

    def loader(
        self, batch_size: int = 32, num_workers: int = 2, *, shuffle: bool = False, seed: int = 0
    ) -> torch.utils.data.DataLoader:
        """Batches ``(x (B, 3, H, W) float32 in [0, 1], y (B, K), indices (B,))`` decoded by ``num_workers``
        worker processes (0: in this process). Shuffling uses its own generator seeded with ``seed``."""
        return torch.utils.data.DataLoader(
            self.dataset(),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed),
        )


def check_options(owner: str, options: dict[str, Any], loader: Any) -> None:
    """Refuse options that ``loader`` (a ``load_*_split`` function) does not take, naming the accepted ones."""
    import inspect

    accepted = [n for n, p in inspect.signature(loader).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for key in options:
        if key not in accepted:
            raise fail(owner, key, "one of the options " + ", ".join(accepted), key, did_you_mean(key, accepted))


def require_nonempty(split: ImageSplit, what: str, fix: str) -> ImageSplit:
    """``split`` if it has images, else a :class:`LabelflipError` naming ``what`` and ``fix``."""
    if len(split) == 0:
        raise LabelflipError(f"The {what} has no images. Fix: {fix}")
    return split


def build_splits(name: str, root: Path, roles: dict[str, str], load: Any, config: dict[str, Any]) -> DatasetSplits:
    """A :class:`DatasetSplits` whose ``test``/``val``/``train`` roles are the on-disk splits ``roles`` names;
    ``load(split_name) -> ImageSplit`` is called once per distinct split. Label names must agree across splits."""
    loaded: dict[str, ImageSplit] = {}
    for disk in dict.fromkeys(roles[r] for r in ("test", "val", "train")):
        loaded[disk] = load(disk)
    names = loaded[roles["test"]].label_names
    for disk, split in loaded.items():
        if split.label_names != names:
            raise LabelflipError(
                f"The {name} splits {roles['test']!r} and {disk!r} have different label sets. Fix: use annotation "
                "files of one release (same categories in the same order)."
            )
    cfg = ImageDatasetConfig(name, str(root), dict(roles), loaded[roles["test"]].x.size, config)
    return DatasetSplits(loaded[roles["train"]], loaded[roles["val"]], loaded[roles["test"]], cfg, list(names))

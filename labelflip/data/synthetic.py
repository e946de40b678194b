"""The built-in default dataset: procedurally rendered, seeded multi-label images (no downloads).

Every label is a visual object class with its own shape x colour x texture combination (a red striped
disc, a blue checkered ring, ...). Images are COCO-like in the ways that matter for multi-label attacks:

- **Long-tailed label frequencies** (``person`` is in ~40% of images, ``stop_sign`` in ~2%).
- **Co-occurrence**: every image is drawn from a scene template (street, kitchen, park, living room, beach)
  that makes its labels correlated (``car`` with ``traffic_light``, ``cup`` with ``bowl``), plus the odd
  out-of-context extra label.
- **Clutter**: a tinted background gradient with a low-frequency texture, non-label distractor shapes (in
  neutral colours, or saturated "confusers" whose (shape, colour) pair no label uses, so a label is a
  conjunction of features), objects occluding each other, colour jitter and Gaussian pixel noise.

A label is positive iff its object is at least ``min_visible`` visible after occlusion, so the labels
describe what is in the picture and every image has at least one label (the last object drawn is never
occluded). Rendering is vectorised with torch over blocks of images; all randomness comes from
:class:`torch.Generator` objects seeded from ``(seed, split, block)``, so the data are bit-identical for a
given config, splits use disjoint streams, and the first ``n`` images of a split do not depend on ``n``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from labelflip._validation import check_float, check_int, fail
from labelflip.data.base import DATASETS, DatasetSplits, MultiLabelData
from labelflip.data.catalogue import COLOURS, LABEL_CATALOGUE, SCENES, SHAPES, TEXTURES, label_appearance

__all__ = [
    "LABEL_CATALOGUE",
    "SCENES",
    "SyntheticConfig",
    "default_dataset",
    "make_synthetic",
    "synthetic_dataset",
]

logger = logging.getLogger(__name__)

_OWNER = "SyntheticConfig"
_BLOCK = 256  # images rendered per block; each block has its own generator (prefix stability)


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the synthetic dataset; equal configs give bit-identical data.

    Sizes are in images; geometric sizes are fractions of the image side; intensities are in [0, 1] pixel units.
    """

    seed: int = 0
    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 1000
    image_size: int = 32
    num_labels: int = 24
    noise_std: float = 0.04  # Gaussian pixel noise
    max_objects: int = 5  # labelled objects per image, at most
    max_distractors: int = 3  # non-label clutter shapes per image, 0..max_distractors
    extra_label_prob: float = 0.25  # chance of one out-of-scene label per image
    min_radius: float = 0.13
    max_radius: float = 0.22
    min_visible: float = 0.35  # fraction of an object's area that must stay visible for its label to count
    colour_jitter: float = 0.08
    confuser_prob: float = 0.5  # chance that a distractor is a saturated non-label (shape, colour) pair

    def __post_init__(self) -> None:
        check_int(_OWNER, "seed", self.seed, low=0, fix="pass a non-negative integer seed.")
        check_int(_OWNER, "n_train", self.n_train, low=1, fix="ask for at least one training image.")
        check_int(_OWNER, "n_val", self.n_val, low=0, fix="pass 0 for no validation split.")
        check_int(_OWNER, "n_test", self.n_test, low=0, fix="pass 0 for no test split.")
        check_int(_OWNER, "image_size", self.image_size, low=16, fix="use image_size >= 16, e.g. 32.")
        check_int(_OWNER, "num_labels", self.num_labels, low=2, fix="use 2 <= num_labels <= 32.")
        if self.num_labels > len(LABEL_CATALOGUE):
            raise fail(
                _OWNER,
                "num_labels",
                f"an int <= {len(LABEL_CATALOGUE)}",
                self.num_labels,
                f"the catalogue has {len(LABEL_CATALOGUE)} object classes; use num_labels <= that.",
            )
        check_float(_OWNER, "noise_std", self.noise_std, low=0.0, high=0.5, fix="e.g. noise_std=0.04.")
        check_int(_OWNER, "max_objects", self.max_objects, low=1, fix="e.g. max_objects=5.")
        check_int(_OWNER, "max_distractors", self.max_distractors, low=0, fix="e.g. max_distractors=3.")
        check_float(_OWNER, "extra_label_prob", self.extra_label_prob, low=0.0, high=1.0, fix="a probability.")
        check_float(_OWNER, "min_radius", self.min_radius, low=0.02, high=0.45, fix="e.g. min_radius=0.13.")
        check_float(
            _OWNER,
            "max_radius",
            self.max_radius,
            low=self.min_radius,
            high=0.45,
            fix="use min_radius <= max_radius <= 0.45 (fractions of the image side).",
        )
        check_float(_OWNER, "min_visible", self.min_visible, low=0.0, high=1.0, fix="e.g. min_visible=0.35.")
        check_float(_OWNER, "colour_jitter", self.colour_jitter, low=0.0, high=0.5, fix="e.g. 0.08.")
        check_float(_OWNER, "confuser_prob", self.confuser_prob, low=0.0, high=1.0, fix="a probability.")

    def to_dict(self) -> dict[str, int | float]:
        """Plain JSON-able dict of every field (used for fingerprints)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------- rendering


def _split_seed(seed: int, split: int, block: int) -> int:
    """A 63-bit seed for (seed, split, block) from numpy's SeedSequence (independent streams)."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=(split, block)).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def _scene_tables(num_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene priors ``(S,)`` and label-given-scene probabilities ``(S, K)`` for the first K labels.

    Catalogue labels that belong to no scene template (only possible when editing the tables) fall back
    to the out-of-scene extras.
    """
    names = LABEL_CATALOGUE[:num_labels]
    index = {n: i for i, n in enumerate(names)}
    priors = torch.tensor([s[1] for s in SCENES], dtype=torch.float64)
    probs = torch.zeros(len(SCENES), num_labels, dtype=torch.float64)
    for s, (_, _, table) in enumerate(SCENES):
        for name, p in table.items():
            if name in index:
                probs[s, index[name]] = p
    keep = probs.sum(dim=1) > 0
    priors = priors[keep] / priors[keep].sum()
    return priors, probs[keep]


def _shape_mask(shape: int, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Boolean mask of one shape kind; ``dx, dy`` are (B, H, W) offsets from the centre, ``r`` (B, 1, 1)."""
    ax, ay = dx.abs(), dy.abs()
    if shape == 0:  # disc
        return dx * dx + dy * dy <= r * r
    if shape == 1:  # square
        return torch.maximum(ax, ay) <= 0.8 * r
    if shape == 2:  # upward triangle
        return (dy <= 0.75 * r) & (ax <= 0.6 * (dy + r))
    if shape == 3:  # ring
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    if shape == 4:  # cross
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == 5:  # diamond
        return ax + ay <= r
    if shape == 6:  # horizontal bar
        return (ax <= r) & (ay <= 0.38 * r)
    # 7: hollow square frame
    m = torch.maximum(ax, ay)
    return (m <= 0.85 * r) & (m >= 0.5 * r)


def _texture(texture: int, dx: torch.Tensor, dy: torch.Tensor, period: float) -> torch.Tensor:
    """Brightness factor (B, H, W) in (0, 1] for a texture kind (solid, vertical stripes, checker)."""
    if texture == 0:
        return torch.ones_like(dx)
    sx = torch.sin(2 * math.pi * dx / period) >= 0
    if texture == 1:
        return torch.where(sx, 1.0, 0.45)
    sy = torch.sin(2 * math.pi * dy / period) >= 0
    return torch.where(sx ^ sy, 1.0, 0.45)


def _paint(
    img: torch.Tensor,
    gx: torch.Tensor,
    gy: torch.Tensor,
    shapes: torch.Tensor,
    textures: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    r: torch.Tensor,
    colour: torch.Tensor,
    active: torch.Tensor,
    period: float,
) -> torch.Tensor:
    """Paint one object per image in place; returns its bool mask ``(B, H, W)`` (False where not active).

    ``img`` (B, 3, H, W); ``gx, gy`` (H, W) pixel-centre coordinates in [0, 1]; per-image ``shapes``,
    ``textures`` (B,) long, ``cx, cy, r`` (B,), ``colour`` (B, 3), ``active`` (B,) bool.
    """
    b, _, h, w = img.shape
    mask = torch.zeros(b, h, w, dtype=torch.bool)
    for s in torch.unique(shapes[active]).tolist():
        for t in torch.unique(textures[active & (shapes == s)]).tolist():
            idx = (active & (shapes == s) & (textures == t)).nonzero().flatten()
            dx = gx.unsqueeze(0) - cx[idx].view(-1, 1, 1)
            dy = gy.unsqueeze(0) - cy[idx].view(-1, 1, 1)
            m = _shape_mask(s, dx, dy, r[idx].view(-1, 1, 1))
            tex = _texture(t, dx, dy, period)
            paint = colour[idx].view(-1, 3, 1, 1) * tex.unsqueeze(1)
            img[idx] = torch.where(m.unsqueeze(1), paint, img[idx])
            mask[idx] = m
    return mask


def _unused_appearances(num_labels: int) -> torch.Tensor:
    """(shape, colour) pairs ``(U, 2)`` that no label among the first ``num_labels`` uses (confusers)."""
    used = {label_appearance(i)[:2] for i in range(num_labels)}
    pairs = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)) if (s, c) not in used]
    return torch.tensor(pairs, dtype=torch.long)


def _render_block(config: SyntheticConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``_BLOCK`` images with generator ``gen``: x float32 (B, 3, H, W) in [0, 1], y float32 (B, K)."""
    b, k, size = _BLOCK, config.num_labels, config.image_size
    period = 3.5 / 32.0  # texture period, a fraction of the image side (3.5 px at 32 x 32)

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float32)

    # ---- which labels: a scene, its labels, an occasional out-of-scene extra, at least one label
    priors, probs = _scene_tables(k)
    scene = torch.multinomial(priors.expand(b, -1), 1, generator=gen).squeeze(1)
    p = probs[scene].float()
    want = u(b, k) < p
    extra = u(b) < config.extra_label_prob
    extra_label = torch.randint(0, k, (b,), generator=gen)
    want[extra.nonzero().flatten(), extra_label[extra]] = True
    empty = ~want.any(dim=1)
    fallback = torch.multinomial(p + 1e-6, 1, generator=gen).squeeze(1)
    want[empty.nonzero().flatten(), fallback[empty]] = True
    # ---- draw order: random over wanted labels, at most max_objects (the rest are dropped)
    keys = torch.where(want, u(b, k), torch.full((b, k), 2.0))
    order = keys.argsort(dim=1)[:, : min(config.max_objects, k)]  # (B, M) label ids, wanted first
    present = torch.gather(keys, 1, order) < 1.5  # (B, M)
    n_obj = present.sum(dim=1)
    m_slots = order.shape[1]

    # ---- background: tinted grey + linear gradient + low-frequency texture
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    base = 0.25 + 0.5 * u(b, 1) + 0.08 * (2 * u(b, 3) - 1)  # (B, 3)
    angle = 2 * math.pi * u(b)
    amp = 0.35 * u(b)
    ramp = (gx - 0.5) * torch.cos(angle).view(-1, 1, 1) + (gy - 0.5) * torch.sin(angle).view(-1, 1, 1)
    freq = 1.0 + 3.0 * u(b, 2)
    phase = 2 * math.pi * u(b, 2)
    wave = torch.sin(2 * math.pi * freq[:, :1, None] * gx + phase[:, :1, None]) * torch.sin(
        2 * math.pi * freq[:, 1:, None] * gy + phase[:, 1:, None]
    )
    img = base.view(b, 3, 1, 1) + (amp.view(-1, 1, 1) * ramp + 0.06 * wave).unsqueeze(1)

    # ---- distractors (behind the objects): neutral-coloured shapes, and "confusers" that share a shape
    # or a colour with the label classes but are no label (a (shape, colour) pair no label uses), so the
    # model must learn conjunctions of shape and colour
    unused = _unused_appearances(k)  # (U, 2) (shape, colour) pairs
    n_dis = torch.randint(0, config.max_distractors + 1, (b,), generator=gen)
    palette = torch.tensor(COLOURS, dtype=torch.float32)
    for d in range(config.max_distractors):
        grey = (0.2 + 0.6 * u(b, 1)) + 0.07 * (2 * u(b, 3) - 1)
        pick = unused[torch.randint(0, unused.shape[0], (b,), generator=gen)]
        confuser = u(b) < config.confuser_prob
        colour = torch.where(confuser.unsqueeze(1), palette[pick[:, 1]] * (0.8 + 0.25 * u(b, 1)), grey)
        shape = torch.where(confuser, pick[:, 0], torch.randint(0, len(SHAPES), (b,), generator=gen))
        r = config.min_radius * (0.6 + 0.6 * u(b))
        cx = r + (1 - 2 * r) * u(b)
        cy = r + (1 - 2 * r) * u(b)
        tex = torch.randint(0, len(TEXTURES), (b,), generator=gen)
        _paint(img, gx, gy, shape, tex, cx, cy, r, colour.clamp(0.0, 1.0), n_dis > d, period)

    # ---- labelled objects, later slots occlude earlier ones; more objects -> slightly smaller
    app = torch.tensor([label_appearance(i) for i in range(k)], dtype=torch.long)  # (K, 3)
    owner = torch.full((b, size, size), -1, dtype=torch.long)
    area = torch.zeros(b, m_slots)
    shrink = (2.0 / n_obj.clamp(min=2).float()) ** 0.3
    for m in range(m_slots):
        lab = order[:, m]
        shape, col, tex = app[lab, 0], app[lab, 1], app[lab, 2]
        r = (config.min_radius + (config.max_radius - config.min_radius) * u(b)) * shrink
        cx = r + (1 - 2 * r) * u(b)
        cy = r + (1 - 2 * r) * u(b)
        bright = 0.8 + 0.25 * u(b, 1)
        jitter = config.colour_jitter * (2 * u(b, 3) - 1)
        colour = (palette[col] * bright + jitter).clamp(0.0, 1.0)
        mask = _paint(img, gx, gy, shape, tex, cx, cy, r, colour, present[:, m], period)
        owner[mask] = m
        area[:, m] = mask.flatten(1).sum(dim=1).float()
    visible = torch.stack([(owner == m).flatten(1).sum(dim=1) for m in range(m_slots)], dim=1).float()
    shown = present & (area > 0) & (visible >= config.min_visible * area)
    y = torch.zeros(b, k)
    y.scatter_(1, order, shown.float())  # duplicates impossible: labels in a row are distinct

    noise = torch.randn(b, 3, size, size, generator=gen) * config.noise_std
    x = (img + noise).clamp_(0.0, 1.0)
    return x, y


def _render_split(config: SyntheticConfig, split: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for block in range(math.ceil(n / _BLOCK)):
        gen = torch.Generator().manual_seed(_split_seed(config.seed, split, block))
        x, y = _render_block(config, gen)
        xs.append(x)
        ys.append(y)
    if not xs:
        return (
            torch.zeros(0, 3, config.image_size, config.image_size),
            torch.zeros(0, config.num_labels),
        )
    return torch.cat(xs)[:n].contiguous(), torch.cat(ys)[:n].contiguous()


def make_synthetic(config: SyntheticConfig | None = None) -> DatasetSplits:
    """Generate the train / val / test splits described by ``config`` (default :class:`SyntheticConfig`).

    Returns:
        :class:`DatasetSplits` whose splits hold float32 images ``(N, 3, S, S)`` in ``[0, 1]`` and float32
        labels ``(N, K)`` in ``{0, 1}`` with at least one positive per row. Deterministic for a given config;
        the global RNG is not touched.
    """
    if config is None:
        config = SyntheticConfig()
    if not isinstance(config, SyntheticConfig):
        raise fail("make_synthetic", "config", "a SyntheticConfig or None", config)
    names = list(LABEL_CATALOGUE[: config.num_labels])
    parts = []
    for split, n in enumerate((config.n_train, config.n_val, config.n_test)):
        x, y = _render_split(config, split, n)
        parts.append(MultiLabelData(x, y, list(names)))
    logger.debug("generated synthetic dataset %s", config.to_dict())
    return DatasetSplits(parts[0], parts[1], parts[2], config, names)


@functools.lru_cache(maxsize=1)
def default_dataset() -> DatasetSplits:
    """The default synthetic dataset (``make_synthetic(SyntheticConfig())``), built once per process.

    Shared by every caller: treat its tensors as read-only.
    """
    return make_synthetic(SyntheticConfig())


@DATASETS.register("synthetic", description="built-in seeded synthetic images: 24 labels, 32x32, 6000/1000/1000")
def synthetic_dataset(**config: Any) -> DatasetSplits:
    """The built-in dataset; keyword options override :class:`SyntheticConfig` fields (none: the default)."""
    if not config:
        return default_dataset()
    try:
        return make_synthetic(SyntheticConfig(**config))
    except TypeError as exc:
        raise fail("the synthetic dataset", "config", "SyntheticConfig fields", sorted(config), str(exc)) from exc

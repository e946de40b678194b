"""The synthetic dataset's catalogue: label classes, scene templates (co-occurrence) and the shape x colour x
texture appearance of every label. Plain data; :mod:`labelflip.data.synthetic` renders images from it."""

from __future__ import annotations

__all__ = ["COLOURS", "LABEL_CATALOGUE", "SCENES", "SHAPES", "TEXTURES", "label_appearance"]

#: Names of the available label classes, in label-index order. ``num_labels=K`` uses the first K.
LABEL_CATALOGUE: tuple[str, ...] = (
    "person",
    "car",
    "bicycle",
    "traffic_light",
    "bus",
    "stop_sign",
    "cup",
    "bowl",
    "bottle",
    "oven",
    "tree",
    "dog",
    "bench",
    "bird",
    "kite",
    "chair",
    "couch",
    "tv",
    "book",
    "laptop",
    "cat",
    "umbrella",
    "boat",
    "surfboard",
    "truck",
    "fork",
    "horse",
    "clock",
    "sink",
    "frisbee",
    "train",
    "vase",
)

#: Scene templates: (name, probability of the scene, {label: probability of the label given the scene}).
SCENES: tuple[tuple[str, float, dict[str, float]], ...] = (
    (
        "street",
        0.30,
        {
            "person": 0.55,
            "car": 0.60,
            "bicycle": 0.22,
            "traffic_light": 0.35,
            "bus": 0.14,
            "stop_sign": 0.05,
            "truck": 0.20,
            "bench": 0.04,
            "dog": 0.04,
            "umbrella": 0.04,
        },
    ),
    (
        "kitchen",
        0.18,
        {
            "cup": 0.50,
            "bowl": 0.42,
            "bottle": 0.45,
            "oven": 0.22,
            "person": 0.20,
            "fork": 0.20,
            "sink": 0.25,
            "vase": 0.05,
            "book": 0.04,
        },
    ),
    (
        "park",
        0.20,
        {
            "tree": 0.65,
            "dog": 0.28,
            "bench": 0.22,
            "bird": 0.18,
            "kite": 0.08,
            "person": 0.40,
            "frisbee": 0.06,
            "horse": 0.04,
            "bicycle": 0.08,
            "umbrella": 0.03,
        },
    ),
    (
        "living_room",
        0.20,
        {
            "chair": 0.50,
            "couch": 0.32,
            "tv": 0.32,
            "book": 0.26,
            "laptop": 0.16,
            "cat": 0.12,
            "person": 0.25,
            "clock": 0.10,
            "vase": 0.08,
            "cup": 0.08,
            "bottle": 0.06,
            "dog": 0.05,
        },
    ),
    (
        "beach",
        0.12,
        {
            "umbrella": 0.38,
            "boat": 0.32,
            "surfboard": 0.14,
            "person": 0.50,
            "bird": 0.20,
            "kite": 0.11,
            "dog": 0.03,
            "train": 0.02,
        },
    ),
)

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross", "diamond", "bar", "frame")
COLOURS: tuple[tuple[float, float, float], ...] = (
    (0.92, 0.14, 0.10),  # red
    (0.10, 0.72, 0.18),  # green
    (0.16, 0.30, 0.95),  # blue
    (0.96, 0.86, 0.10),  # yellow
    (0.86, 0.18, 0.86),  # magenta
    (0.08, 0.84, 0.90),  # cyan
)
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker")


def label_appearance(label: int) -> tuple[int, int, int]:
    """(shape, colour, texture) indices of a label class; unique per label for up to 48 labels.

    Labels sharing a shape differ in colour (and texture), labels sharing a colour differ in shape.
    """
    shape = label % len(SHAPES)
    q = label // len(SHAPES)
    return shape, (q + shape) % len(COLOURS), q % len(TEXTURES)

"""Attack methods by name: one registry turning a method spec string into an attack callable.

Spec strings (case-insensitive), as used by the CLI and study configs:

=====================  =========================================================  ===========================
spec                   attack                                                     needs
=====================  =========================================================  ===========================
``bce``                MI-FGSM, BCE on all labels (the paper's baseline)          --
``linear``             MI-FGSM, Linear loss                                       --
``hinge``, ``mse``     MI-FGSM, the authors' extra losses                         --
``slam`` / ``slam:q``  MI-FGSM, SLAM with q (default 0.5)                         profile
``random``             BCE on a random subset of k labels per sample              profile
``class:g``            BCE on the CLASS subset, gamma = g (Z normalised, paper)   profile, correlations
``class-raw:g``        CLASS with raw Z sums (the code behind the tables)         profile, correlations
``top-n:n``            BCE on the n labels closest to the threshold               --
=====================  =========================================================  ===========================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from labelflip._validation import LabelflipError, did_you_mean, fail
from labelflip.attacks.mifgsm import MIFGSM
from labelflip.attacks.result import AttackResult
from labelflip.attacks.subsets import ClassAttack, ClosestSubsetAttack, RandomSubsetAttack
from labelflip.losses import SLAMLoss, create_loss
from labelflip.model import MultiLabelModel

__all__ = ["METHOD_KINDS", "MethodSpec", "build_attack", "parse_method"]

METHOD_KINDS = ("bce", "linear", "hinge", "mse", "slam", "random", "class", "class-raw", "top-n")
_LABELS = {"bce": "BCE", "linear": "Linear", "hinge": "Hinge", "mse": "MSE", "random": "Random"}


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method: ``kind`` from :data:`METHOD_KINDS` and its optional parameter."""

    kind: str
    param: float | None = None

    @property
    def label(self) -> str:
        """Row label in tables, e.g. ``"CLASS(γ=0.5)"``."""
        if self.kind == "slam":
            return "SLAM" if self.param in (None, 0.5) else f"SLAM(q={self.param:g})"
        if self.kind in ("class", "class-raw"):
            raw = ", raw Z" if self.kind == "class-raw" else ""
            return f"CLASS(γ={self.param:g}{raw})"
        if self.kind == "top-n":
            return f"Top-{int(self.param or 0)}"
        return _LABELS[self.kind]

    @property
    def needs_profile(self) -> bool:
        return self.kind in ("slam", "random", "class", "class-raw")

    @property
    def needs_correlations(self) -> bool:
        return self.kind in ("class", "class-raw")

    def __str__(self) -> str:
        return self.kind if self.param is None else f"{self.kind}:{self.param:g}"


def parse_method(text: str) -> MethodSpec:
    """Parse ``"class:0.5"``-style specs; errors name the spec and suggest the closest kind."""
    if not isinstance(text, str) or not text.strip():
        raise fail("parse_method", "method", "a method spec such as 'bce' or 'class:0.5'", text)
    kind, _, arg = text.strip().lower().partition(":")
    if kind not in METHOD_KINDS:
        raise fail(
            "parse_method",
            "method",
            "one of " + ", ".join(METHOD_KINDS),
            text,
            "e.g. bce, slam, class:0.5, top-n:5." + did_you_mean(kind, METHOD_KINDS),
        )
    param: float | None = None
    if arg:
        try:
            param = float(arg)
        except ValueError as exc:
            raise fail("parse_method", "method", f"'{kind}:<number>'", text) from exc
    if kind in ("class", "class-raw"):
        if param is None or not 0 <= param <= 1:
            raise fail("parse_method", "method", f"'{kind}:<gamma in [0, 1]>'", text, "e.g. class:0.5.")
    elif kind == "top-n":
        if param is None or param < 0 or param != int(param):
            raise fail("parse_method", "method", "'top-n:<integer n >= 0>'", text, "e.g. top-n:5.")
    elif kind == "slam":
        if param is not None and not 0 <= param <= 1:
            raise fail("parse_method", "method", "'slam' or 'slam:<q in [0, 1]>'", text)
    elif param is not None:
        raise fail("parse_method", "method", f"'{kind}' without a parameter", text)
    return MethodSpec(kind, param)


def build_attack(
    spec: MethodSpec | str,
    model: MultiLabelModel,
    *,
    profile: Any | None = None,
    correlations: Any | None = None,
    seed: int = 0,
    **mifgsm: Any,
) -> Callable[[Tensor, list[float]], AttackResult]:
    """An attack callable ``(x, budgets) -> AttackResult`` for a method spec."""
    spec = parse_method(spec) if isinstance(spec, str) else spec
    if spec.needs_profile and profile is None:
        raise LabelflipError(f"Method {spec} needs a flip profile. Fix: pass profile=... (probe_profile).")
    if spec.needs_correlations and correlations is None:
        raise LabelflipError(
            f"Method {spec} needs label correlations. Fix: pass correlations=... (measure_correlations)."
        )
    if spec.kind in ("bce", "linear", "hinge", "mse"):
        return MIFGSM(model, create_loss(spec.kind), **mifgsm)
    if spec.kind == "slam":
        return MIFGSM(model, SLAMLoss(profile=profile, q=0.5 if spec.param is None else spec.param), **mifgsm)
    if spec.kind == "random":
        return RandomSubsetAttack(model, profile, seed=seed, **mifgsm)
    if spec.kind == "top-n":
        return ClosestSubsetAttack(model, int(spec.param or 0), **mifgsm)
    return ClassAttack(
        model, profile, correlations, gamma=float(spec.param or 0.0), normalize_z=spec.kind == "class", **mifgsm
    )

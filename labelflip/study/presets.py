"""Presets: one switch for a named set of settings (SPEC.md: "the preset ``paper`` reproduces the authors'
published behaviour, and the defaults are what a careful user should get").

:data:`PRESETS` maps a preset name to dotted settings. ``profile.*`` and ``attack.*`` keys are study-spec
settings (the same keys as ``--set``); ``methods.<name>`` renames a method family (``class:<γ>`` runs as
``class-raw:<γ>``). A study applies a preset between the defaults and the file (``preset: paper``; the file and
the command line still override single settings); ``labelflip attack --preset paper`` applies the same.

``paper`` changes exactly these settings, each to the behaviour of the code behind the published tables
(SPEC-reference-code):

* ``profile.curve``: ``max`` (the paper's text) -> ``bce``: fit the BCE curve only (the authors' ``max(bce, bce)``,
  §4);
* ``attack.bce_formulation``: ``stable`` (on logits) -> ``authors``: BCE on probabilities with logs clamped at -100,
  whose gradient is zero once sigmoid rounds to 1 (§2, §11); applies to BCE, SLAM's BCE term, the subset attacks
  and the profile probe;
* ``attack.clip``: ``final`` -> ``bounds``: one clamp to the bounds at the end and no eps-box (L-inf; the box only
  moves float drift, up to about 2e-6 when eps is a multiple of alpha, §1.1);
* ``attack.l2_mode``: ``project`` -> ``paper``: the unprojected raw-momentum L2 update (only matters with
  ``norm: l2``; its perturbation exceeds eps, §1.2);
* methods: ``class:<γ>`` (normalised Z, Alg. 3) -> ``class-raw:<γ>`` (raw Z sums, §6); ``class-auto`` ->
  ``class-raw-auto``.

Unchanged because labelflip's default already equals the authors' runs: ``alpha = 1/2560``, ``n = floor(eps /
alpha)``, ``mu = 1``, per-sample normalisation (= their batch size 1), SLAM ``q = 0.5`` with ``p = 1`` from
``eps >= eps_max``, the profile's 1 % rule and order 4, the budget grid, CLASS ``b = d = 4``. Not reproduced: the
authors' Query2Label dropout left on, their batch-coupling bugs, the global RNG; the correlation and attackability
probes keep the stable BCE.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from labelflip._validation import fail

__all__ = ["PRESETS", "chosen_preset", "preset_methods", "preset_settings", "with_preset"]

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "profile.curve": "bce",
        "attack.bce_formulation": "authors",
        "attack.clip": "bounds",
        "attack.l2_mode": "paper",
        "methods.class": "class-raw",
        "methods.class-auto": "class-raw-auto",
    },
}
"""Named presets: dotted settings (see the module docstring for what ``paper`` changes)."""


def _get(name: str | None, owner: str, param: str) -> Mapping[str, Any]:
    if name is None:
        return {}
    if name not in PRESETS:
        raise fail(owner, param, "a preset: " + ", ".join(sorted(PRESETS)) + " (or none)", name)
    return PRESETS[name]


def preset_settings(name: str | None, *, owner: str = "study spec", param: str = "preset") -> dict[str, Any]:
    """The preset's spec settings as nested sections, ``{"profile": {...}, "attack": {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in _get(name, owner, param).items():
        section, _, sub = key.partition(".")
        if section != "methods":
            out.setdefault(section, {})[sub] = value
    return out


def preset_methods(
    name: str | None, methods: list[str], *, owner: str = "study spec", param: str = "preset"
) -> list[str]:
    """``methods`` with the preset's method renames applied (``class:0.5`` -> ``class-raw:0.5`` under ``paper``)."""
    renames = {k.split(".", 1)[1]: v for k, v in _get(name, owner, param).items() if k.startswith("methods.")}
    out = []
    for m in methods:
        head, sep, rest = str(m).partition(":")
        out.append(renames.get(head.strip(), head) + sep + rest if head.strip() in renames else str(m))
    return out


def chosen_preset(data: Mapping[str, Any], overrides: Mapping[str, Any] | None, sets: Sequence[str]) -> Any:
    """The preset a study names last: ``--set preset=...`` > ``overrides["preset"]`` > the file's ``preset``."""
    import yaml

    chosen = data.get("preset")
    if overrides and overrides.get("preset") is not None:
        chosen = overrides["preset"]
    for item in sets:
        key, _, raw = item.partition("=")
        if key.strip() == "preset":
            chosen = yaml.safe_load(raw)
    return chosen


def with_preset(defaults: Mapping[str, Any], name: Any) -> dict[str, Any]:
    """A copy of the study ``defaults`` with a preset's settings applied (the file and the command line override
    them) and ``preset`` set."""
    if name is not None and not isinstance(name, str):
        raise fail("study spec", "preset", "a preset name: " + ", ".join(sorted(PRESETS)), name)
    d = copy.deepcopy(dict(defaults))
    for section, values in preset_settings(name).items():
        d[section].update(values)
    d["preset"] = name
    return d

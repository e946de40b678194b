"""The attack registry: every attack labelflip can run by name (CLI ``--methods``, study specs, ``labelflip methods``).

An attack is registered with one decorator on its class (see :class:`labelflip._registry.Registry`)::

    @ATTACKS.register("my-attack", params=[Param("steps", int, 10)], label="Mine")
    class MyAttack(FixedBudgetAttack):
        def run(self, batch, budgets): ...

and then works everywhere a method is named, with no other edit. :func:`create_attack` supplies what an attack
``requires`` (a flip profile, label correlations) and, for ``stochastic`` attacks, the seed.
"""

from __future__ import annotations

from typing import Any

from labelflip._registry import Registry, Spec
from labelflip._validation import LabelflipError
from labelflip.models import MultiLabelModel

__all__ = ["ATTACKS", "attack_info", "create_attack", "list_attacks", "parse_attack", "split_method_list"]

ATTACKS: Registry[Any] = Registry("attack")
"""All registered attacks (``list_attacks()``); the entries' factories are :class:`~labelflip.attacks.Attack`
subclasses, whose ``kind``, ``requires`` and ``stochastic`` class attributes describe them."""

_HOW = {
    "profile": "a flip profile (probe_profile, or `labelflip profile`)",
    "correlations": "label correlations (measure_correlations, or `labelflip correlations`)",
    "heldout": "held-out inputs (M, ...) disjoint from the evaluation samples, e.g. the profile's probe samples",
}


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching a shell-style pattern, e.g. ``list_attacks("class*")``."""
    return ATTACKS.list(pattern)


def parse_attack(spec: str | Spec) -> Spec:
    """Parse a method spec (``"class:0.5"``, ``"slam:q=0.3"``) into a canonical :class:`Spec`."""
    return ATTACKS.parse(spec)


def attack_info(spec: str | Spec) -> dict[str, Any]:
    """What is known about an attack without building it: ``kind``, ``requires``, ``stochastic``, ``label``."""
    parsed = parse_attack(spec)
    cls = parsed.entry.factory
    return {
        "name": str(parsed),
        "label": parsed.label,
        "kind": getattr(cls, "kind", "fixed-budget"),
        "requires": frozenset(getattr(cls, "requires", frozenset())),
        "stochastic": bool(getattr(cls, "stochastic", False)),
    }


def create_attack(
    spec: str | Spec,
    model: MultiLabelModel,
    *,
    profile: Any | None = None,
    correlations: Any | None = None,
    seed: int = 0,
    heldout: Any | None = None,
    **options: Any,
) -> Any:
    """Build the attack a method spec names, giving it what it requires.

    Args:
        spec: a method spec string or parsed :class:`Spec`.
        model: the wrapped model.
        profile, correlations: analysis artefacts, passed only to attacks that require them (an error names the
            missing one otherwise).
        seed: passed to stochastic attacks only.
        heldout: held-out inputs, passed only to attacks that require them (``class-auto``'s gamma search).
        **options: common attack options (``norm``, ``batch_size``, ``return_adv``, MI-FGSM settings).
    """
    parsed = parse_attack(spec)
    info = attack_info(parsed)
    given = {"profile": profile, "correlations": correlations, "heldout": heldout}
    kwargs: dict[str, Any] = {}
    for need in sorted(info["requires"]):
        if given.get(need) is None:
            raise LabelflipError(f"Method {parsed} needs {_HOW.get(need, need)}. Fix: pass {need}=....")
        kwargs[need] = given[need]
    if info["stochastic"]:
        kwargs["seed"] = seed
    return ATTACKS.create(parsed, model, **kwargs, **options)


def split_method_list(text: str) -> list[str]:
    """Split a comma-separated method list (``"bce,class:0.5,depth=2,slam"``): a ``name=value`` item without a
    ``:`` continues the previous method's parameters."""
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if out and "=" in item and ":" not in item:
            out[-1] += "," + item
        else:
            out.append(item)
    return out

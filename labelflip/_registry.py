"""One registry type for everything a user can name: attacks, losses, models, architectures and datasets.

Pattern (timm's ``_registry.py``): a decorator registers a factory under a name; ``list(pattern)`` lists names
matching a shell-style pattern; ``create(spec, ...)`` builds an object from a **spec string** that may carry
parameters::

    "class:0.5"            the entry's first declared parameter, positionally   -> gamma=0.5
    "slam:q=0.3"           a named parameter                                     -> q=0.3
    "top-n:5,depth=2"      both

Values are parsed as YAML scalars (``0.5`` -> float, ``5`` -> int, ``true`` -> bool, anything else -> str) and
converted to each parameter's declared type. Unknown names and parameters answer with "did you mean". A spec has
one **canonical** string (parameters equal to their default are left out, a required parameter always appears,
floats print with ``:g``), so ``slam`` and ``slam:0.5`` are the same method.

Third-party packages register entries without forking labelflip through the entry-point group
``labelflip.plugins``: each entry point names a module (or a callable) that is imported (or called) once, the
first time any registry is used, and whose decorators register its entries::

    # the plugin's pyproject.toml
    [project.entry-points."labelflip.plugins"]
    my_attacks = "my_package.labelflip_plugin"
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from labelflip._validation import LabelflipError, did_you_mean, fail

__all__ = ["PLUGIN_GROUP", "REQUIRED", "Param", "Registry", "RegistryEntry", "load_plugins"]

log = logging.getLogger(__name__)
T = TypeVar("T")
PLUGIN_GROUP = "labelflip.plugins"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter that a spec string must always give (e.g. CLASS's gamma)."""


@dataclass(frozen=True)
class Param:
    """A parameter a spec string may set: its name, type (``float``, ``int``, ``bool`` or ``str``), default
    (or :data:`REQUIRED`), a one-line help text and an optional inclusive range ``[low, high]``, checked when the
    spec is parsed (so a bad value is refused before any work; the factory validates again)."""

    name: str
    type: type = float
    default: Any = REQUIRED
    help: str = ""
    low: float | None = None
    high: float | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def convert(self, owner: str, value: Any) -> Any:
        """``value`` (already YAML-parsed) as this parameter's type; bools and ints are not silently floats."""
        t = self.type
        if t is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and abs(number) < float("inf"):  # finite only (NaN fails too)
                value = number
        ok = (
            (t is bool and isinstance(value, bool))
            or (t is int and isinstance(value, int) and not isinstance(value, bool))
            or (t is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (t is str and isinstance(value, (str, int, float)) and not isinstance(value, bool))
        )
        if not ok:
            raise fail(owner, self.name, f"a {t.__name__}", value, self.help or None)
        out = t(value)
        if (self.low is not None and out < self.low) or (self.high is not None and out > self.high):
            bounds = (
                f"in [{self.low}, {self.high}]"
                if self.low is not None and self.high is not None
                else (f">= {self.low}" if self.low is not None else f"<= {self.high}")
            )
            raise fail(owner, self.name, f"a {t.__name__} {bounds}", value, self.help or None)
        return out

    def format(self, value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """A registered factory and what is known about it without calling it.

    Attributes:
        name: the registered name (lower case, e.g. ``"class-raw"``).
        factory: the callable that builds the object; spec parameters are passed as keyword arguments.
        params: the parameters a spec string may set, in positional order.
        fixed: keyword arguments always passed to the factory (e.g. ``normalize_z=False`` for ``class-raw``).
        label: a display label: a format string over the parameters (``"CLASS(γ={gamma:g})"``) or a callable.
        description: one line for listings (``labelflip methods``).
        meta: free-form facts for the registry's users (an attack's kind, requirements, stochasticity, ...).
    """

    name: str
    factory: Callable[..., T]
    params: tuple[Param, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    label: str | Callable[[dict[str, Any]], str] | None = None
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if not p.required}

    def display(self, params: Mapping[str, Any]) -> str:
        full = {**self.defaults(), **params}
        if self.label is None:
            return str(self.name)
        if callable(self.label):
            return self.label(full)
        return self.label.format(**full)

    def signature(self) -> str:
        """``"class:<gamma>[,branches=4,...]"``-style usage string for listings."""
        parts = [f"<{p.name}>" if p.required else f"{p.name}={p.format(p.default)}" for p in self.params]
        return self.name + (":" + ",".join(parts) if parts else "")


@dataclass(frozen=True)
class Spec:
    """A parsed spec string: registry entry name and its parameters (defaults filled in)."""

    name: str
    params: Mapping[str, Any]
    entry: RegistryEntry[Any] = field(repr=False, compare=False, hash=False)

    def __str__(self) -> str:
        """The canonical spec string (defaults left out, required parameters always shown)."""
        parts = [
            (p.format(self.params[p.name]) if i == 0 else f"{p.name}={p.format(self.params[p.name])}")
            for i, p in enumerate(self.entry.params)
            if p.required or self.params[p.name] != p.default
        ]
        return self.name + (":" + ",".join(parts) if parts else "")

    def __hash__(self) -> int:
        return hash(str(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and str(self) == str(other)

    @property
    def label(self) -> str:
        """The display label (table rows), e.g. ``"CLASS(γ=0.5)"``."""
        return self.entry.display(dict(self.params))

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.entry.meta


_plugins_loaded = False


def load_plugins(*, force: bool = False) -> list[str]:
    """Import every ``labelflip.plugins`` entry point once (modules register on import; callables are called).

    A plugin that fails to load is logged and skipped, so one broken package never breaks labelflip.
    Returns the names of the entry points loaded by this call.
    """
    global _plugins_loaded
    if _plugins_loaded and not force:
        return []
    _plugins_loaded = True
    loaded = []
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type):
                obj()
            loaded.append(ep.name)
        except Exception as exc:  # a third-party failure must not break the registry
            log.warning("labelflip plugin %r (%s) failed to load: %s: %s", ep.name, ep.value, type(exc).__name__, exc)
    return loaded


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


class Registry(Generic[T]):
    """Named factories of one kind (``kind`` is used in messages: "attack", "model", ...).

    Example::

        ATTACKS = Registry("attack")

        @ATTACKS.register("my-attack", params=[Param("steps", int, 10)])
        class MyAttack(FixedBudgetAttack): ...

        ATTACKS.create("my-attack:steps=20", model)
    """

    def __init__(self, kind: str, *, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._modules = modules
        self._modules_loaded = not modules

    def _ensure(self) -> None:
        """Import the modules that register the built-in entries (once), then the plugins (once)."""
        if not self._modules_loaded:
            self._modules_loaded = True
            for module in self._modules:
                importlib.import_module(module)
        load_plugins()

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str,
        *,
        params: tuple[Param, ...] | list[Param] = (),
        fixed: Mapping[str, Any] | None = None,
        label: str | Callable[[dict[str, Any]], str] | None = None,
        description: str = "",
        override: bool = False,
        **meta: Any,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a factory (a class or a function) under ``name``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(
                name,
                factory,
                params=params,
                fixed=fixed,
                label=label,
                description=description,
                override=override,
                **meta,
            )
            return factory

        return decorator

    def add(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        params: tuple[Param, ...] | list[Param] = (),
        fixed: Mapping[str, Any] | None = None,
        label: str | Callable[[dict[str, Any]], str] | None = None,
        description: str = "",
        override: bool = False,
        **meta: Any,
    ) -> RegistryEntry[T]:
        """Register ``factory`` under ``name`` (non-decorator form). Re-registering a name needs ``override``."""
        key = name.strip().lower()
        if not key or any(c in key for c in ":,= "):
            raise fail(f"{self.kind} registry", "name", "a non-empty name without ':', ',', '=' or spaces", name)
        if key in self._entries and not override:
            raise LabelflipError(
                f"A {self.kind} named {key!r} is already registered ({self._entries[key].factory!r}). Fix: choose "
                "another name, or pass override=True to replace it on purpose."
            )
        if not description:
            doc = (getattr(factory, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        entry = RegistryEntry(key, factory, tuple(params), dict(fixed or {}), label, description, dict(meta))
        self._entries[key] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and plugins replacing one)."""
        self._entries.pop(name.strip().lower(), None)

    # ------------------------------------------------------------------ lookup
    def __contains__(self, name: object) -> bool:
        self._ensure()
        return isinstance(name, str) and name.strip().lower() in self._entries

    def __iter__(self) -> Iterator[RegistryEntry[T]]:
        self._ensure()
        return iter([self._entries[k] for k in sorted(self._entries)])

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the shell-style ``pattern``."""
        self._ensure()
        if not isinstance(pattern, str):
            raise fail(f"list ({self.kind}s)", "pattern", "a shell-style pattern string", pattern, "e.g. 'class*'.")
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern.lower()))

    def get(self, name: str) -> RegistryEntry[T]:
        """The entry registered as ``name``; unknown names answer with the list and a "did you mean"."""
        self._ensure()
        key = name.strip().lower() if isinstance(name, str) else name
        if not isinstance(key, str) or key not in self._entries:
            raise fail(
                f"the {self.kind} registry",
                self.kind,
                "one of " + ", ".join(sorted(self._entries)),
                name,
                f"pick a registered {self.kind}." + did_you_mean(str(key), self._entries),
            )
        return self._entries[key]

    def parse(self, spec: str | Spec) -> Spec:
        """Parse a spec string (``"class:0.5"``, ``"slam:q=0.3"``) into a :class:`Spec` with defaults filled in."""
        if isinstance(spec, Spec):
            return spec
        owner = f"the {self.kind} spec {spec!r}"
        if not isinstance(spec, str) or not spec.strip():
            raise fail(f"the {self.kind} registry", self.kind, f"a {self.kind} spec string such as 'name:value'", spec)
        name, _, args = spec.strip().partition(":")
        entry = self.get(name)
        given: dict[str, Any] = {}
        for i, item in enumerate(a.strip() for a in args.split(",") if a.strip()) if args else ():
            key, eq, raw = item.partition("=")
            if eq:
                p = entry.param(key.strip())
                if p is None:
                    names = [q.name for q in entry.params]
                    raise fail(
                        owner,
                        key.strip(),
                        "one of the parameters " + (", ".join(names) or "(none)"),
                        key.strip(),
                        f"usage: {entry.signature()}." + did_you_mean(key.strip(), names),
                    )
            else:
                if i != 0 or not entry.params:
                    raise fail(
                        owner,
                        "parameters",
                        "at most one positional value, first, then name=value pairs",
                        item,
                        f"usage: {entry.signature()}.",
                    )
                p, raw = entry.params[0], item
            if p.name in given:
                raise fail(owner, p.name, "given once", item)
            given[p.name] = p.convert(owner, _parse_value(raw.strip()))
        missing = [p.name for p in entry.params if p.required and p.name not in given]
        if missing:
            raise fail(owner, missing[0], "given", None, f"usage: {entry.signature()}, e.g. {entry.name}:0.5.")
        return Spec(entry.name, {**entry.defaults(), **given}, entry)

    def create(self, spec: str | Spec, *args: Any, **kwargs: Any) -> T:
        """Build the object a spec string names: ``factory(*args, **fixed, **spec params, **kwargs)``."""
        parsed = self.parse(spec)
        return parsed.entry.factory(*args, **{**parsed.entry.fixed, **parsed.params, **kwargs})

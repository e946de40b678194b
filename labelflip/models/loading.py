"""Read a checkpoint of any common format into a plain ``state_dict``, safely, and load it into a module with
errors a user can act on.

* :func:`load_state` reads safetensors, or a ``torch.save`` file (zip or legacy) with ``weights_only=True`` and a
  small allow-list of harmless metadata types (numpy scalars and dtypes, ``argparse.Namespace``). Containers are
  unwrapped (``state_dict``, ``model``, ``model_state_dict``, ...; EMA entries such as ``state_dict_ema`` on
  request) and ``module.`` / ``_orig_mod.`` prefixes stripped. Pickles that need other Python objects are refused
  unless ``trust_pickle=True``. HTML pages (a download link that returned a web page) and Git-LFS pointer files
  are recognised; truncated files are reported as such; an optional SHA-256 is checked. Class names stored in
  the checkpoint (ASL's ``idx_to_class``, ``classes``, ``label_names``) come back in the metadata.
* :func:`load_into` compares keys and shapes first and reports missing / unexpected / reshaped entries by name,
  with a "did you mean" for near misses, before touching the module. ``num_batches_tracked`` may be present or
  absent. With ``assign=True`` a module built on the ``meta`` device takes the checkpoint's tensors without
  ever being initialised (fast, no double memory).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from labelflip._validation import LabelflipError, fail

__all__ = ["LoadReport", "guess_layout", "load_into", "load_state", "sha256_file"]

log = logging.getLogger(__name__)
_OWNER = "load_state"
_STATE_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "network", "weights", "params")
_EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema_model", "ema", "params_ema")
_PREFIXES = ("module.", "_orig_mod.")
_NAME_KEYS = ("idx_to_class", "label_names", "class_names", "classes", "labels")
_SKIP_META = ("optimizer", "optimizer_state_dict", "scheduler", "lr_scheduler", "scaler", "amp")


def _safe_globals() -> list[Any]:
    """Harmless types that metadata in real checkpoints uses (numpy scalars under both numpy 1 and 2 names)."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar  # type: ignore[attr-defined]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")] if hasattr(np, "dtypes") else []
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, argparse.Namespace, *dtypes]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, streamed in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _sniff(path: Path, head: bytes, size: int) -> str:
    """``"safetensors"``, ``"torch-zip"``, ``"torch-legacy"``; raises on HTML, LFS pointers and unknown bytes."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"version https://git-lfs"):
        m = re.search(rb"size (\d+)", head)
        real = f" of a {int(m.group(1)):,}-byte file" if m else ""
        raise LabelflipError(
            f"{path} is a Git LFS pointer file ({size} bytes){real}, not the checkpoint itself. Fix: fetch the real "
            "file (`git lfs pull` in the repository it came from, or the site's download link) and pass that path."
        )
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text[:1024]:
        raise LabelflipError(
            f"{path} is an HTML/XML page ({size:,} bytes), not a checkpoint: the download link returned a web "
            "page (for example a Google Drive virus-scan confirmation, a login page or an error page). Fix: download "
            "the file itself (open the link in a browser and confirm the download, or use the direct file link) and "
            "check that its size is that of the published checkpoint (hundreds of MB for the paper's models)."
        )
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch-legacy"
    raise LabelflipError(
        f"{path} is not a checkpoint labelflip can read (first bytes {head[:16]!r}). Fix: pass a .safetensors file or "
        "a file written by torch.save (.pth, .pt, .pkl, .ckpt)."
    )


def _truncated(path: Path, size: int, exc: BaseException) -> LabelflipError:
    detail = (str(exc).splitlines() or ["unexpected end of data"])[0][:160]
    return LabelflipError(
        f"{path} is truncated or corrupt ({size:,} bytes; {type(exc).__name__}: {detail}). "
        "Fix: download it again (an interrupted download is the usual cause) and compare its size and SHA-256 with "
        "the published ones (load_state(..., sha256=...))."
    )


def _torch_load(path: Path, size: int, trust_pickle: bool) -> Any:
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" not in msg and "Unsupported" not in msg:
            raise _truncated(path, size, exc) from exc
        if not trust_pickle:
            found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", msg))) or ["an unsupported Python object"]
            raise LabelflipError(
                f"{path} is a pickle that needs Python objects beyond tensors and plain data ({', '.join(found)}); "
                "unpickling it could run arbitrary code, so a weights-only load refuses it. Fix: if you trust where "
                "the file came from, pass trust_pickle=True (CLI: --trust-pickle); better, convert it once to "
                "safetensors in a trusted environment (safetensors.torch.save_file(state_dict, 'model.safetensors'))."
            ) from exc
        log.warning("loading %s with full unpickling (trust_pickle=True): it can run code from the file", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (EOFError, RuntimeError, pickle.UnpicklingError) as exc2:
            raise _truncated(path, size, exc2) from exc2
    except (EOFError, RuntimeError, ValueError, OSError) as exc:
        raise _truncated(path, size, exc) from exc


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _find_state(obj: Any, keys: tuple[str, ...], path: str, depth: int = 0) -> tuple[Mapping[str, Tensor], str]:
    if isinstance(obj, nn.Module):
        return obj.state_dict(), path or "<module>"
    if _is_state(obj):
        return obj, path or "<top level>"
    if isinstance(obj, Mapping) and depth < 4:
        for key in keys:
            if key in obj and obj[key] is not None:
                try:
                    return _find_state(obj[key], keys, f"{path}/{key}" if path else key, depth + 1)
                except LabelflipError:
                    continue
        nested = [k for k, v in obj.items() if _is_state(v)]
        if len(nested) == 1:
            return obj[nested[0]], f"{path}/{nested[0]}" if path else str(nested[0])
    where = f" at {path!r}" if path else ""
    contents = (
        ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:12])
        if isinstance(obj, Mapping)
        else type(obj).__name__
    )
    raise LabelflipError(
        f"No state dict found in the checkpoint{where} (contents: {contents}). Fix: pass key='<entry>' naming the "
        "entry that holds the weights (a mapping of parameter names to tensors)."
    )


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-able metadata value, or ``None`` to drop it (tensors, big or exotic objects)."""
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if depth < 3 and isinstance(value, Mapping) and len(value) <= 2000:
        out = {str(k): _plain(v, depth + 1) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    if depth < 3 and isinstance(value, (list, tuple)) and len(value) <= 2000:
        items = [_plain(v, depth + 1) for v in value]
        return items if all(v is not None for v in items) else None
    return None


def _label_names(container: Mapping[str, Any]) -> list[str] | None:
    """Class names in label-index order from ``idx_to_class`` (dict index -> name, or a list) or a name list."""
    for key in _NAME_KEYS:
        value = container.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            return list(value)
        if isinstance(value, Mapping) and value:
            try:
                pairs = sorted((int(k), str(v)) for k, v in value.items())
            except (TypeError, ValueError):
                continue
            if [i for i, _ in pairs] == list(range(len(pairs))):
                return [name for _, name in pairs]
            log.warning("ignoring %r in the checkpoint: its indices are not 0..K-1", key)
    return None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _safetensors(path: Path, size: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _truncated(path, size, exc) from exc
    meta = {key: _json_or_text(text) for key, text in header.items()}
    container = {**meta, **(meta.get("labelflip") if isinstance(meta.get("labelflip"), dict) else {})}
    return state, {"extra": meta, "label_names": _label_names(container)}


def load_state(
    path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    sha256: str | None = None,
    prefer_ema: bool = False,
    key: str | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint file into ``(state_dict, metadata)``.

    Args:
        path: a ``.safetensors`` file or a ``torch.save`` file (``.pth``, ``.pt``, ``.pkl``, ``.ckpt``).
        trust_pickle: allow full unpickling of ``torch.save`` files that a weights-only load refuses. It can
            run code from the file: only for files from a source you trust.
        sha256: expected hex SHA-256 of the file; a mismatch is an error.
        prefer_ema: take EMA weights (``state_dict_ema``, ``model_ema``, ...) when the file has both.
        key: the container entry holding the weights, when the automatic search picks the wrong one.

    Returns:
        ``state_dict``: parameter name -> CPU tensor, ``module.`` / ``_orig_mod.`` prefixes removed.
        ``metadata``: ``format``, ``sha256``, ``size``, ``container`` (the entry used), ``stripped_prefixes``,
        ``label_names`` (class names in index order, or ``None``), ``num_labels`` (from ``num_classes`` /
        the names, or ``None``) and ``extra`` (the plain-data entries of the file: epoch, arch, best_mAP, ...).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        hint = " (it is a directory)" if p.is_dir() else ""
        raise fail(_OWNER, "path", "an existing checkpoint file", str(p), f"check the path{hint}.")
    size = p.stat().st_size
    if size == 0:
        raise fail(_OWNER, "path", "a non-empty checkpoint file", f"{p} (0 bytes)", "download it again.")
    digest = sha256_file(p)
    if sha256 is not None:
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256.strip()):
            raise fail(_OWNER, "sha256", "64 hex digits", sha256)
        if digest != sha256.strip().lower():
            raise LabelflipError(
                f"{p} has SHA-256 {digest}, not the expected {sha256.strip().lower()}. Fix: download the file again "
                "from the official source (it is corrupt, truncated, or a different release)."
            )
    with open(p, "rb") as fh:
        head = fh.read(4096)
    fmt = _sniff(p, head, size)
    meta: dict[str, Any] = {"format": fmt, "sha256": digest, "size": size, "path": str(p)}
    if fmt == "safetensors":
        state, info = _safetensors(p, size)
        meta.update(container="<top level>", **info)
    else:
        obj = _torch_load(p, size, trust_pickle)
        keys = (*_EMA_KEYS, *_STATE_KEYS) if prefer_ema else (*_STATE_KEYS, *_EMA_KEYS)
        if key is not None and (not isinstance(obj, Mapping) or key not in obj):
            have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise fail(_OWNER, "key", f"an entry of the checkpoint: {have}", key)
        found, where = _find_state({key: obj[key]} if key else obj, (key,) if key else keys, "")
        container = obj if isinstance(obj, Mapping) else {}
        skip = (*_STATE_KEYS, *_EMA_KEYS, *_SKIP_META)
        extra = {str(k): _plain(v) for k, v in container.items() if str(k) not in skip}
        state = dict(found)
        meta.update(container=where, extra={k: v for k, v in extra.items() if v is not None})
        meta["label_names"] = _label_names(container)
    meta["stripped_prefixes"] = []
    while state and (prefix := next((q for q in _PREFIXES if all(k.startswith(q) for k in state)), None)):
        state = {k[len(prefix) :]: v for k, v in state.items()}
        meta["stripped_prefixes"].append(prefix)
    num = meta.get("extra", {}).get("num_classes")
    names = meta.get("label_names")
    meta["num_labels"] = int(num) if isinstance(num, int) else (len(names) if names else None)
    return state, meta


def guess_layout(state: Mapping[str, Any]) -> str | None:
    """The published layout a state dict's keys look like: ``"query2label"``, ``"tresnet"``, ``"resnet"``, or None."""
    keys = set(state)
    if "fc.W" in keys or "query_embed.weight" in keys:
        return "query2label"
    if "body.conv1.0.weight" in keys or "head.fc.weight" in keys:
        return "tresnet"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "resnet"
    return None


@dataclass
class LoadReport:
    """What :func:`load_into` did: entries loaded and the problems found (empty lists when strict succeeded)."""

    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


def _optional_keys(module: nn.Module) -> set[str]:
    out = set()
    for prefix, sub in module.named_modules():
        for name in getattr(sub, "_optional_state_keys", ()):
            out.add(f"{prefix}.{name}" if prefix else name)
    return out


def _near(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _mismatch_message(module: nn.Module, report: LoadReport, state: Mapping[str, Tensor]) -> str:
    lines = [
        f"The checkpoint does not match {type(module).__name__}: {len(report.missing)} entries missing from it, "
        f"{len(report.unexpected)} unknown to the model, {len(report.mismatched)} with another shape."
    ]
    for title, names, others in (
        ("missing from the checkpoint", report.missing, report.unexpected),
        ("not in the model", report.unexpected, report.missing),
    ):
        more = f" ... and {len(names) - 8} more" if len(names) > 8 else ""
        if names:
            lines.append(f"  {title}: " + ", ".join(k + _near(k, others) for k in names[:8]) + more)
    for name, got, want in report.mismatched[:8]:
        lines.append(f"  {name}: checkpoint {list(got)} vs model {list(want)}")
    layout = guess_layout(state)
    hint = f" The checkpoint's keys look like a {layout} layout." if layout else ""
    lines.append(
        f"Fix: use the architecture (and label count) the checkpoint was trained with.{hint} strict=False loads the "
        "matching entries only (the rest stay as initialised: not for attacks)."
    )
    return "\n".join(lines)


def load_into(
    module: nn.Module, state: Mapping[str, Tensor], *, strict: bool = True, assign: bool = False
) -> LoadReport:
    """Load ``state`` into ``module`` after checking names and shapes.

    Args:
        module: the network (on any device; on ``meta`` together with ``assign=True``).
        state: parameter name -> tensor (e.g. from :func:`load_state`). Floating tensors are cast to the
            module's dtype; ``num_batches_tracked`` entries may be present or absent.
        strict: raise :class:`LabelflipError` listing every missing, unexpected and reshaped entry (with a
            "did you mean" for near misses) before anything is loaded. ``False`` loads the matching entries and
            logs the rest.
        assign: take the checkpoint's tensors instead of copying into the module's (for ``meta``-device modules).

    Returns:
        A :class:`LoadReport`.
    """
    if not isinstance(module, nn.Module):
        raise fail("load_into", "module", "a torch.nn.Module", module)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise fail("load_into", "state", "a mapping of names to tensors", type(state).__name__, "use load_state(path).")
    own = module.state_dict()
    optional = _optional_keys(module)

    def skippable(k: str) -> bool:
        return k.endswith("num_batches_tracked") or k in optional

    report = LoadReport(
        loaded=0,
        missing=[k for k in own if k not in state and not skippable(k)],
        unexpected=[k for k in state if k not in own and not k.endswith("num_batches_tracked")],
        mismatched=[
            (k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape
        ],
    )
    problems = report.missing or report.unexpected or report.mismatched
    if problems and strict:
        raise LabelflipError(_mismatch_message(module, report, state))
    if problems:
        log.warning("%s", _mismatch_message(module, report, state))
    bad = {name for name, _, _ in report.mismatched}
    filtered = {}
    for k, v in state.items():
        if k in own and k not in bad:
            filtered[k] = v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v
    module.load_state_dict(filtered, strict=False, assign=assign)
    if assign:
        _materialise_leftovers(module)
    report.loaded = len(filtered)
    return report


def _materialise_leftovers(module: nn.Module) -> None:
    """After ``assign`` into a meta module: create absent ``num_batches_tracked`` counters; anything else left on
    ``meta`` (missing with strict=False) is an error, since it has no values."""
    left = []
    for prefix, sub in module.named_modules():
        for name, buf in list(sub._buffers.items()):
            if buf is not None and buf.is_meta:
                if name == "num_batches_tracked":
                    sub._buffers[name] = torch.zeros((), dtype=torch.long)
                else:
                    left.append(f"{prefix}.{name}" if prefix else name)
        left += [f"{prefix}.{n}" if prefix else n for n, p in sub._parameters.items() if p is not None and p.is_meta]
    if left:
        raise LabelflipError(
            f"{len(left)} entries of {type(module).__name__} got no values from the checkpoint ({', '.join(left[:6])}"
            f"{' ...' if len(left) > 6 else ''}). Fix: load a complete checkpoint (strict=True shows what is missing)."
        )

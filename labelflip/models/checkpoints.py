"""Checkpoint I/O for labelflip-trained models: safetensors weights + JSON metadata, and cache fingerprints.

Loading only ever reads safetensors files (no pickle, no ``torch.load``), so a checkpoint cannot run code.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from labelflip._validation import fail
from labelflip._version import __version__
from labelflip.models.architectures import ARCHITECTURES, build_architecture

__all__ = [
    "CHECKPOINT_FORMAT",
    "code_hash",
    "fingerprint",
    "load_checkpoint",
    "save_checkpoint",
    "source_hash",
    "tensors_sha256",
]

CHECKPOINT_FORMAT = "labelflip-checkpoint/1"
_META_KEY = "labelflip"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
#: Source files whose text is part of every fingerprint: editing them invalidates cached models.
FINGERPRINTED_SOURCES: tuple[str, ...] = (
    "data/base.py",
    "data/catalogue.py",
    "data/synthetic.py",
    "models/architectures/builtin.py",
    "losses/training.py",
    "zoo/training.py",
)


def _to_plain(value: Any) -> Any:
    """Config dataclasses / mappings -> JSON-able plain values."""
    if hasattr(value, "to_dict"):
        return _to_plain(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def source_hash() -> str:
    """sha256 hex of the text of :data:`FINGERPRINTED_SOURCES` (line endings normalised)."""
    h = hashlib.sha256()
    for rel in FINGERPRINTED_SOURCES:
        text = (_PACKAGE_DIR / rel).read_text(encoding="utf-8").replace("\r\n", "\n")
        h.update(rel.encode())
        h.update(b"\0")
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_hash(sources: Sequence[str]) -> str:
    """16 hex chars of sha256 over the code of package modules (paths relative to ``labelflip/``; a directory
    means every ``.py`` under it): each module's syntax tree without docstrings, comments or line numbers."""
    h = hashlib.sha256()
    files: list[Path] = []
    for rel in sources:
        path = _PACKAGE_DIR / rel
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    for path in files:
        h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(ast.dump(_strip_docstrings(ast.parse(path.read_text(encoding="utf-8")))).encode() + b"\0")
    return h.hexdigest()[:16]


def fingerprint(data_config: Any, train_config: Any, arch: str, arch_kwargs: Mapping[str, Any] | None) -> str:
    """16 hex chars of sha256 over a canonical JSON of the configs, arch, version and source hash.

    Args:
        data_config: the dataset config (an object with ``to_dict()``, or a mapping).
        train_config: the training config (an object with ``to_dict()``, or a mapping).
        arch: architecture name.
        arch_kwargs: architecture constructor arguments.
    """
    payload = {
        "data": _to_plain(data_config),
        "train": _to_plain(train_config),
        "arch": arch,
        "arch_kwargs": _to_plain(dict(arch_kwargs or {})),
        "version": __version__,
        "source": source_hash(),
    }
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail("fingerprint", "data_config/train_config/arch_kwargs", "JSON-serialisable", payload) from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex of a state dict's content: every tensor's name, dtype, shape and raw bytes, in name order.

    Stored in each checkpoint's metadata (``content_sha256``) and verified on load, so flipped bytes in the
    weights (which safetensors itself loads silently) are caught."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype!s}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str],
    module: nn.Module,
    *,
    arch: str,
    num_labels: int,
    arch_kwargs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``module``'s state_dict and JSON metadata to a safetensors file, atomically.

    The stored metadata is ``{"format", "arch", "num_labels", "arch_kwargs", "labelflip_version",
    "content_sha256"}`` (:func:`tensors_sha256` of the weights, verified by :func:`load_checkpoint`) plus
    every key of ``metadata`` (e.g. ``fingerprint``, ``metrics``, ``data_config``, ``train_config``), all
    JSON-serialisable. Returns the path written.
    """
    path = Path(path)
    if arch not in ARCHITECTURES:
        raise fail("save_checkpoint", "arch", "a registered architecture name", arch)
    meta = {
        **_to_plain(dict(metadata or {})),
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "num_labels": int(num_labels),
        "arch_kwargs": _to_plain(dict(arch_kwargs or {})),
        "labelflip_version": __version__,
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    meta["content_sha256"] = tensors_sha256(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a labelflip checkpoint, without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise fail("load_checkpoint", "path", "an existing .safetensors file", str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
        meta = json.loads(raw) if raw else None
    except Exception as exc:
        raise fail(
            "load_checkpoint",
            "path",
            "a readable safetensors checkpoint",
            str(path),
            "delete the file and retrain (load_builtin(..., retrain=True)).",
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise fail(
            "load_checkpoint",
            "path",
            f"a checkpoint written by labelflip ({CHECKPOINT_FORMAT})",
            str(path),
            "save it with labelflip.models.checkpoints.save_checkpoint.",
        )
    return meta


def load_checkpoint(path: str | os.PathLike[str], *, require_hash: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the module saved at ``path`` (safetensors only) and return ``(module in eval mode, metadata)``.

    The weights are checked against the stored ``content_sha256`` (LabelflipError on a mismatch: corrupt bytes).
    Checkpoints written before labelflip stored the hash load unchecked unless ``require_hash=True``."""
    meta = read_metadata(path)
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        raise fail("load_checkpoint", "path", "a checkpoint of a registered architecture", arch)
    with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not move the global RNG
        module = build_architecture(arch, int(meta["num_labels"]), **meta.get("arch_kwargs", {}))
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            state[key] = f.get_tensor(key)
    expected = meta.get("content_sha256")
    if expected is None and require_hash:
        raise fail(
            "load_checkpoint",
            "path",
            "a checkpoint with a content hash (content_sha256, written by this labelflip)",
            str(path),
            "delete the file and retrain; it was written by an older labelflip.",
        )
    if expected is not None and tensors_sha256(state) != expected:
        raise fail(
            "load_checkpoint",
            "path",
            "a checkpoint whose weights match their stored content hash (sha256)",
            str(path),
            "the weights are corrupt (bytes changed on disk since it was written); delete the file and retrain.",
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise fail(
            "load_checkpoint",
            "path",
            f"weights matching architecture {arch!r}",
            str(path),
            "the file is stale or corrupt; delete it and retrain.",
        ) from exc
    module.eval()
    return module, meta

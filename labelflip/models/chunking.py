"""Attack chunking with out-of-memory back-off and ``batch_size="auto"`` (issue 12 item 1).

:class:`ChunkPlan` runs an attack call's chunks (:meth:`labelflip.attacks.Attack.__call__`): the start size is the
attack's ``batch_size``, else the model runtime's (:class:`labelflip.models.runtime.Runtime`); ``"auto"`` sizes it
from free CUDA memory (:func:`estimate_batch_size`; elsewhere all at once). An out-of-memory error halves the failed
chunk and retries it, keeping the chunks already done, so no sample is lost or repeated; the working size is
remembered on the model for later calls. Attack results do not depend on the chunk (per-sample normalisation and
randomness from sample ids; the conformance suite checks it), so a backed-off run equals a run with the small chunk.
Models here are :class:`~labelflip.models.MultiLabelModel` instances, typed ``Any`` (the wrapper imports the runtime,
which imports this module).
"""

from __future__ import annotations

import copy
import gc
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from labelflip._validation import LabelflipError

__all__ = ["AUTO_FILL", "AUTO_OVERHEAD", "ChunkPlan", "estimate_batch_size", "is_oom"]

log = logging.getLogger(__name__)
T = TypeVar("T")

AUTO_FILL = 0.8
"""``batch_size="auto"``: the fraction of free device memory a chunk is planned to use."""
AUTO_OVERHEAD = 1.25
"""``batch_size="auto"``: the attack's own state per sample (iterate, momentum, gradient, outputs) relative to the
measured forward+backward memory."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA/XPU ``torch.OutOfMemoryError``, MPS, a failed CPU alloc)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


def _snapshot(value: Any) -> Any:
    """A copy of the containers (dict, list, tuple) in ``value``, other objects (tensors, numbers) shared: what an
    attack's ``info`` accumulates across chunks, restored when a chunk is retried."""
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value) if type(value) in (list, tuple) else copy.copy(value)
    return value


def _release_memory(device: torch.device) -> None:
    gc.collect()  # the failed attempt's tensors may sit in reference cycles with its traceback
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measures_memory(device: torch.device) -> bool:
    return device.type == "cuda"


def _free_bytes(device: torch.device) -> int:
    """Free device memory, counting what PyTorch's caching allocator holds but does not use."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _probe_bytes(model: Any, x: Tensor) -> float:
    """Device memory one more sample costs in a forward+backward to the input (peak at 2 samples - at 1)."""
    peaks = []
    for m in (1, 2):
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        base = torch.cuda.memory_allocated(x.device)
        with torch.enable_grad():
            xs = x[:1].expand(m, *x.shape[1:]).clone().requires_grad_(True)
            torch.autograd.grad(model(xs).float().sum(), xs)
        peaks.append(torch.cuda.max_memory_allocated(x.device) - base)
    return float(peaks[1] - peaks[0] if peaks[1] > peaks[0] else peaks[1] / 2)


def estimate_batch_size(model: Any, x: Tensor, n: int, *, stack: int = 1) -> int:
    """``batch_size="auto"``: on CUDA, ``AUTO_FILL * free / (AUTO_OVERHEAD * stack * bytes per sample)`` in
    ``[1, n]`` (``stack``: copies of each sample one forward holds); elsewhere ``n`` (all at once)."""
    if not _measures_memory(x.device):
        return n
    per_sample = max(_probe_bytes(model, x), float(x[0].numel() * x.element_size()))
    return max(1, min(n, int(AUTO_FILL * _free_bytes(x.device) / (AUTO_OVERHEAD * stack * per_sample))))


class ChunkPlan:
    """Chunk sizes for one attack call over ``n`` samples, with out-of-memory back-off.

    The start size is the remembered working size for ``key`` on the model if smaller, else ``requested`` (an int;
    ``"auto"``: :func:`estimate_batch_size`; ``None``: ``n``). :meth:`run` calls ``fn(slice)`` on consecutive
    chunks; when one raises an out-of-memory error it is retried at half its length (the chunks already done are
    kept, ``state`` is restored to its value before the attempt), down to one sample, and the working size is
    remembered, so no sample is lost or repeated and the results are those of a run with the smaller chunk.
    ``backoff=False`` (attacks whose results depend on the chunk) re-raises instead.
    """

    def __init__(self, model: Any, key: tuple[Any, ...], requested: int | str | None, x: Tensor,
                 *, stack: int = 1, backoff: bool = True, owner: str = "Attack") -> None:  # fmt: skip
        self.model, self.key, self.backoff, self.owner = model, key, backoff, owner
        n = x.shape[0]
        memo = model._chunk_memo.get(key)
        if memo is not None and (requested is None or requested == "auto" or memo < requested):
            self.size = min(memo, n)
        elif requested == "auto":
            self.size = estimate_batch_size(model, x, n, stack=stack)
        else:
            self.size = n if requested is None else min(int(requested), n)
        self.device = x.device

    @classmethod
    def for_attack(cls, attack: Any, model: Any, x: Tensor, budgets: list[float]) -> ChunkPlan:
        """The plan of one call of ``attack`` (:class:`labelflip.attacks.Attack`): its ``batch_size``, else the model
        runtime's; ``stack_factor(budgets)`` copies per sample; no back-off for MI-FGSM's ``normalize="batch"``
        parity mode, whose results depend on the chunk."""
        owner, stack = type(attack).__name__, attack.stack_factor(budgets)
        requested = attack.batch_size if attack.batch_size is not None else model.runtime.batch_size
        backoff = getattr(attack, "normalize", "sample") != "batch"
        return cls(model, (owner, tuple(x.shape[1:]), stack), requested, x, stack=stack, backoff=backoff, owner=owner)

    def run(self, n: int, fn: Callable[[slice], T], state: dict[str, Any] | None = None) -> list[T]:
        """``[fn(chunk) for each chunk]`` over ``range(n)``, with the back-off described above."""
        parts: list[T] = []
        lo = 0
        while lo < n:
            sl = slice(lo, min(n, lo + self.size))
            saved = _snapshot(state)
            try:
                parts.append(fn(sl))
            except Exception as exc:
                if not is_oom(exc):
                    raise
                if not self.backoff or sl.stop - sl.start == 1:
                    why = "even one sample at a time" if self.backoff else "and its results depend on the chunk size"
                    raise LabelflipError(
                        f"{self.owner}: out of device memory on {sl.stop - sl.start} sample(s), {why} ({exc}). Fix: "
                        "precision='bf16' (half the activation memory), a smaller input resolution, or a larger "
                        "device."
                    ) from exc
            else:
                lo = sl.stop
                continue
            _release_memory(self.device)
            if state is not None and saved is not None:
                state.clear()
                state.update(saved)
            self.size = max(1, (sl.stop - sl.start) // 2)
            self.model._chunk_memo[self.key] = self.size
            log.warning("%s: out of memory on a chunk of %d samples; retrying with %d", self.owner,
                        sl.stop - sl.start, self.size)  # fmt: skip
        return parts

"""Runtime configuration of a model: device, mixed precision, channels-last, ``torch.compile``, batch sizing.

A :class:`Runtime` is carried by the :class:`~labelflip.models.MultiLabelModel` (``MultiLabelModel(net,
runtime=Runtime(...))`` or ``model.set_runtime(...)``), so every attack and analysis that uses the model runs
under it without knowing about it; the attack protocol (:class:`labelflip.attacks.Attack`) reads its batch sizing.
The default ``Runtime()`` changes nothing: the model stays where it is, fp32, eager, and the forward pass is the
plain one (bit-identical results).

* ``device``: ``None`` (leave the model where it is), ``"auto"`` (``cuda`` when available, under ``torchrun`` the
  rank's ``cuda:LOCAL_RANK``; else ``cpu``; MPS only when named), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``
  (untested: no Apple machine here). The model (network and wrapper buffers) is moved in place.
* ``precision``: ``"fp32"``, ``"bf16"`` or ``"fp16"``: the network's forward (and so its backward) runs under
  ``torch.autocast``. Everything else stays fp32: the inputs and the normalisation before the network, the logits
  (cast to float32 before any loss), the loss value, the gradient reaching the perturbation, the momentum and the
  perturbation itself (:func:`run_network`). fp16 (in eval mode, as attacks run) scales the gradient entering the
  network by :data:`FP16_GRAD_SCALE` (an exact power of two, undone at its input) so small input gradients do not
  underflow; an overflow raises instead of producing NaN steps.
* ``channels_last``: 4-D parameters and 4-D inputs in channels-last memory format (the gradient returns in the
  usual layout, so attack state is unchanged).
* ``compile``: ``torch.compile`` the network; a failure (when compiling or on a call) logs a warning and falls back
  to the eager network for good.
* ``batch_size``: samples per attack chunk when the attack sets none: an int, ``"auto"`` (on CUDA: sized from free
  device memory; elsewhere all at once, the default) or ``None`` (all at once). Whatever the start, an out-of-memory
  error halves the chunk and retries it; the working size is remembered on the model
  (:mod:`labelflip.models.chunking`).

Numerics, fp32 vs bf16 (measured 2026-11-21 with ``benchmarks/bench_gpu.py --numerics`` through CPU autocast, torch
2.13: 40 test samples of each built-in model (K = 24), BCE and SLAM at the paper's 7 budget fractions of eps_max,
280 sample x budget cells per model and method; flips per cell compared):

=========  ======  ===================  ===============  ==========================
model      method  mean abs diff/cell   identical cells  max diff of mean flips
=========  ======  ===================  ===============  ==========================
asl-cnn    BCE     0.332                72.5 %           0.300 (means 0.45..23.65)
asl-cnn    SLAM    0.293                73.9 %           0.225 (means 1.08..23.20)
q2l-cnn    BCE     0.229                78.2 %           0.150 (means 0.77..23.62)
q2l-cnn    SLAM    0.232                78.2 %           0.150 (means 1.02..23.33)
=========  ======  ===================  ===============  ==========================

The floor, fp32 run in chunks of 7 instead of 40 (same maths, other kernel batch shapes): 0.000-0.004 per cell,
99.6-100 % identical, at most 0.025. bf16 keeps 8 significant bits; MI-FGSM's ``sign`` turns the small gradient
differences into different but equally strong trajectories, so single cells differ while the table's means agree
within 0.3 flips (about 1 % of K). The documented tolerance (:data:`BF16_TOLERANCE`, asserted on the tiny test model
in ``tests/models/test_runtime.py``): mean abs difference <= 0.5 flips per cell, >= 65 % of cells identical, mean
flips of every budget within 0.5. GPU bf16 numbers are unmeasured (no GPU here). A non-fp32 precision is part of a
study's config hash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from labelflip._validation import LabelflipError, check_choice, fail
from labelflip.models.chunking import is_oom

__all__ = [
    "BF16_TOLERANCE",
    "FP16_GRAD_SCALE",
    "PRECISIONS",
    "Runtime",
    "RuntimeNetwork",
    "check_batch_size",
    "check_runtime",
    "describe_runtime",
    "resolve_device",
    "run_network",
    "torch_threads",
]

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FP16_GRAD_SCALE = 1024.0
"""fp16 only: the gradient entering the network is multiplied by this (and the one leaving it at its input divided),
so input gradients of order 1e-6 stay normal fp16 numbers; powers of two make the rescaling exact."""
BF16_TOLERANCE = {"mean_abs_diff": 0.5, "identical_fraction": 0.65, "mean_flips_diff": 0.5}
"""fp32 vs bf16 agreement (per sample x budget cell, see the module docstring for the measurement)."""
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_FIELDS = ("device", "precision", "channels_last", "compile", "batch_size")


def check_batch_size(owner: str, param: str, value: Any) -> int | str | None:
    """``None`` (all at once), ``"auto"`` or an int >= 1 (bools refused)."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(owner, param, "an int >= 1, 'auto' or None (all at once)", value,
                   "'auto' sizes chunks from free GPU memory; out-of-memory always halves and retries.")  # fmt: skip
    return int(value)


def check_runtime(values: Mapping[str, Any], owner: str, prefix: str) -> dict[str, Any]:
    """The runtime fields of ``values`` validated (errors name ``prefix + field``); unknown keys are refused."""
    for key in values:
        if key not in _FIELDS:
            raise fail(owner, f"{prefix}{key}", "a runtime setting: " + ", ".join(_FIELDS), key, "check the spelling.")
    device = values.get("device")
    if device is not None and not (isinstance(device, str) and _DEVICE.match(device)):
        raise fail(owner, f"{prefix}device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", device,
                   "e.g. cuda:0, cpu, or auto (the GPU when there is one, else the CPU).")  # fmt: skip
    precision = check_choice(owner, f"{prefix}precision", values.get("precision", "fp32"), tuple(PRECISIONS))
    for key in ("channels_last", "compile"):
        if not isinstance(values.get(key, False), bool):
            raise fail(owner, f"{prefix}{key}", "true or false", values.get(key))
    size = check_batch_size(owner, f"{prefix}batch_size", values.get("batch_size"))
    return {"device": device, "precision": precision, "channels_last": values.get("channels_last", False),
            "compile": values.get("compile", False), "batch_size": size}  # fmt: skip


@dataclass(frozen=True)
class Runtime:
    """How a model runs (see the module docstring): ``device``, ``precision``, ``channels_last``, ``compile``,
    ``batch_size``. Validated on construction; the device's availability when applied (:meth:`resolve_device`)."""

    device: str | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    batch_size: int | str | None = None

    def __post_init__(self) -> None:
        check_runtime(asdict(self), "Runtime", "")

    @classmethod
    def from_options(cls, values: Mapping[str, Any], *, owner: str, prefix: str = "") -> Runtime:
        """A runtime from a mapping (a spec section, command-line options); errors name ``prefix + key``."""
        return cls(**check_runtime({k: v for k, v in values.items() if v is not None}, owner, prefix))

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for fp32."""
        return None if self.precision == "fp32" else PRECISIONS[self.precision]

    @property
    def plain_forward(self) -> bool:
        """Whether the forward pass is the plain fp32 eager one (no autocast, layout change or compilation)."""
        return self.precision == "fp32" and not self.channels_last and not self.compile

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve_device(self, owner: str = "Runtime", param: str = "device") -> torch.device | None:
        """The device to place the model on (``None``: leave it), refusing one this machine does not have."""
        return None if self.device is None else resolve_device(self.device, owner, param)


def resolve_device(name: str, owner: str = "Runtime", param: str = "device") -> torch.device:
    """``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"``/``"mps"`` as a ``torch.device`` available here, else a clear
    error suggesting cpu. ``"auto"`` under torchrun (``LOCAL_RANK`` set) picks the rank's own GPU."""
    use = (lambda v: f"{param} {v}") if param.startswith("--") else repr
    if not (isinstance(name, str) and _DEVICE.match(name)):
        raise fail(
            owner, param, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", name, f"e.g. {use('cuda:0')} or {use('cpu')}."
        )
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise fail(owner, param, "a device this machine has", name, f"this machine has no CUDA device (torch "
                       f"{torch.__version__} is {build}, torch.cuda.is_available() is False): use {use('cpu')}, or "
                       f"{use('auto')} (the GPU when there is one, else the CPU).")  # fmt: skip
        index = int(name.partition(":")[2] or torch.cuda.current_device())
        if index >= torch.cuda.device_count():
            raise fail(owner, param, f"one of cuda:0..cuda:{torch.cuda.device_count() - 1}", name, "pick a GPU index "
                       "this machine has (nvidia-smi lists them; CUDA_VISIBLE_DEVICES renumbers them).")  # fmt: skip
        return torch.device("cuda", index)
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise fail(owner, param, "a device this machine has", name, "MPS needs Apple silicon and a torch build with "
                   f"MPS: use {use('cpu')} or {use('auto')}.")  # fmt: skip
    return torch.device(name)


# ---------------------------------------------------------------------------------------------- the forward pass
class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (fp16 gradient scaling). With ``check``, a
    non-finite gradient (an fp16 overflow inside the network) raises instead of turning the step into NaN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float, check: bool) -> Tensor:
        ctx.scale, ctx.check = scale, check
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        if ctx.check and not bool(torch.isfinite(grad).all()):
            raise LabelflipError(
                f"Runtime: the fp16 input gradient overflowed (non-finite at gradient scale {FP16_GRAD_SCALE:g}). "
                "Fix: use precision='bf16' (fp32's range, same speed on Ampere or newer GPUs) or 'fp32'."
            )
        return grad * ctx.scale, None, None


class _ChannelsLast(torch.autograd.Function):
    """``x`` in channels-last layout; its gradient comes back contiguous (the attack state keeps its layout)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


def run_network(
    runtime: Runtime, network: Callable[[Tensor], Any], x: Tensor, adapt: Callable[[Any], Tensor], training: bool
) -> Tensor:
    """``adapt(network(x))`` under ``runtime``: channels-last 4-D input, autocast to bf16/fp16, logits returned as
    float32 (``(N, K)``, so the loss and everything after it is fp32). fp32: the plain call. fp16 gradient scaling
    applies to input gradients in eval mode (attacks); in ``training`` mode parameter gradients must stay unscaled."""
    if runtime.channels_last and x.ndim == 4:
        x = _ChannelsLast.apply(x)
    amp = runtime.amp_dtype
    if amp is None:
        return adapt(network(x))
    scaled = amp == torch.float16 and x.requires_grad and not training
    if scaled:
        x = _ScaleGrad.apply(x, 1.0 / FP16_GRAD_SCALE, True)
    with torch.autocast(device_type=x.device.type, dtype=amp):
        out = adapt(network(x))
    if isinstance(out, Tensor) and out.is_floating_point():
        out = out.float()
        if scaled:
            out = _ScaleGrad.apply(out, FP16_GRAD_SCALE, False)
    return out


class RuntimeNetwork:
    """The network call of a model under a non-plain runtime: the compiled module while it works, else eager."""

    def __init__(self, module: nn.Module, runtime: Runtime) -> None:
        self.module = module
        self.runtime = runtime
        self.compiled: Callable[[Tensor], Any] | None = None
        if runtime.compile:
            try:
                self.compiled = torch.compile(module)
            except Exception as exc:
                self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        log.warning("torch.compile failed (%s: %s); running the network eagerly", type(exc).__name__, exc)
        self.compiled = None

    def _call(self, x: Tensor) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as exc:
                if is_oom(exc):
                    raise
                self._fall_back(exc)
        return self.module(x)

    def __call__(self, x: Tensor, adapt: Callable[[Any], Tensor]) -> Tensor:
        return run_network(self.runtime, self._call, x, adapt, self.module.training)


def apply_runtime(model: Any, runtime: Runtime, previous: Runtime) -> RuntimeNetwork | None:
    """Place ``model`` (a MultiLabelModel; typed ``Any``: the wrapper imports this module) per ``runtime`` (device,
    memory format; in place) and return its network call (``None``: the plain forward)."""
    device = runtime.resolve_device()
    if device is not None:
        model.to(device)
    if runtime.channels_last:
        model.module.to(memory_format=torch.channels_last)
    elif previous.channels_last:
        model.module.to(memory_format=torch.contiguous_format)
    return None if runtime.plain_forward else RuntimeNetwork(model.module, runtime)


def describe_runtime(model: Any) -> dict[str, Any]:
    """What a MultiLabelModel runs under, for a study's runtime manifest (device as resolved; compile as in effect)."""
    rt = model.runtime
    net = model._runtime_net
    return {**rt.to_dict(), "device": str(model.device), "requested_device": rt.device,
            "compile": bool(net is not None and net.compiled is not None)}  # fmt: skip


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block (``None``: unchanged), restored afterwards.

    A CPU reduction is split across threads, so its float sum order (and so its last bits) depends on the thread
    count; training compounds such differences into different weights. Fixing ``n`` makes a computation give the
    same bits on machines with any number of cores (same CPU instruction set)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)

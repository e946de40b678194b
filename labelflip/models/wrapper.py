"""MultiLabelModel: wrap any ``nn.Module`` as a multi-label classifier returning logits ``(N, K)``.

The wrapper owns everything the attacks need to know about a model and nothing else:

* **input bounds** (``[0, 1]`` for images); budgets are in the same (pixel) units;
* optional **mean/std normalisation inside the wrapper**, so that ``x`` and every budget stay in pixel
  units while the wrapped network sees normalised inputs;
* the **decision threshold**: ``sigmoid(logit) > threshold`` (strict), scalar or per label (SPEC.md,
  Conventions);
* an **output adapter** for networks that return dicts, tuples or objects instead of a logits tensor;
* an **eval-mode context** that puts every submodule in ``eval()`` and restores each submodule's previous
  ``training`` flag afterwards, even on error;
* **validation** of user inputs (shape, dtype, range, NaN, label count) with errors naming the parameter and
  the fix. The one-off model **sanity checks** live in :mod:`labelflip.models.checks`;
* the **runtime** it runs under (device, bf16/fp16 autocast, channels-last, ``torch.compile``, batch sizing):
  :class:`labelflip.models.runtime.Runtime`, set with ``runtime=`` or :meth:`MultiLabelModel.set_runtime`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from labelflip._validation import LabelflipError, check_choice, check_float, fail
from labelflip.models.runtime import Runtime, RuntimeNetwork, apply_runtime

__all__ = ["MultiLabelModel", "as_model"]

OutputKind = Literal["auto", "logits", "probabilities"]
_OWNER = "MultiLabelModel"


def _adapt_output(out: Any, adapter: str | int | Callable[[Any], Tensor] | None) -> Tensor:
    """Turn whatever the network returned into a tensor, using the user's adapter if given."""
    if adapter is not None:
        if callable(adapter):
            return adapter(out)
        if isinstance(out, Tensor):
            raise fail(
                _OWNER,
                "output",
                "None when the network already returns a tensor",
                adapter,
                "drop output=...; a key/index would slice the logits tensor instead of selecting it.",
            )
        try:
            return out[adapter]
        except (KeyError, IndexError, TypeError) as exc:
            raise fail(
                _OWNER,
                "output",
                f"a key/index present in the network's output (it returned {type(out).__name__})",
                adapter,
                "pass the key or index that holds the logits, or a callable output -> logits.",
            ) from exc
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    if hasattr(out, "logits") and isinstance(out.logits, Tensor):
        return out.logits
    keys = f" with keys {sorted(map(str, out.keys()))}" if isinstance(out, dict) else ""
    raise fail(
        _OWNER,
        "output",
        "set when the network does not return a logits tensor",
        f"{type(out).__name__}{keys}",
        "pass output='<key>' for dicts, output=<index> for tuples, or output=callable(out) -> logits.",
    )


def _as_float_tensor(value: Any, param: str, *, flatten: bool = True) -> Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise fail(_OWNER, param, "a float or a 1-D sequence of floats", value) from exc
    return t.flatten() if flatten else t


class MultiLabelModel(nn.Module):
    """A multi-label classifier ``x -> logits (N, K)`` with bounds, normalisation and thresholds.

    Args:
        module: the network. Its output (after ``output``) must be logits ``(N, K)``, or probabilities
            when ``output_kind="probabilities"``.
        num_labels: K. Inferred from the first forward pass when ``None``.
        bounds: ``(low, high)`` of valid inputs in pixel units; perturbed inputs are clamped to them.
        mean, std: optional per-channel normalisation applied inside the wrapper: the network sees
            ``(x - mean) / std`` while ``x`` and all budgets stay in pixel units.
        threshold: decision threshold in ``(0, 1)``; a float or a sequence/tensor of K per-label values.
            Prediction is ``sigmoid(logit) > threshold`` (strict).
        output: how to extract logits from a non-tensor output: a dict key, a tuple index or a callable.
            By default a tensor is used as is, a dict's ``"logits"`` entry, or an object's ``.logits``.
        output_kind: ``"logits"`` (trusted), ``"probabilities"`` (the network applies a sigmoid; outputs
            are converted with ``logit(clamp(p, 1e-6, 1-1e-6))``), or ``"auto"``: logits, but
            :meth:`check` refuses a network whose outputs all lie in ``[0, 1]`` on random inputs.
        runtime: a :class:`~labelflip.models.runtime.Runtime` (device, precision, channels-last, compile, batch
            size); default: the model where it is, fp32, eager (:meth:`set_runtime`).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        num_labels: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | Tensor | None = None,
        std: Sequence[float] | Tensor | None = None,
        threshold: float | Sequence[float] | Tensor = 0.5,
        output: str | int | Callable[[Any], Tensor] | None = None,
        output_kind: OutputKind = "auto",
        runtime: Runtime | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise fail(_OWNER, "module", "a torch.nn.Module", module, "wrap your network object itself.")
        self.module = module
        if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int)):
            raise fail(_OWNER, "num_labels", "an int >= 1 or None", num_labels)
        if num_labels is not None and num_labels < 1:
            raise fail(_OWNER, "num_labels", "an int >= 1 or None", num_labels)
        self.num_labels: int | None = num_labels
        if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
            raise fail(_OWNER, "bounds", "a pair (low, high)", bounds, "e.g. bounds=(0.0, 1.0).")
        low = check_float(_OWNER, "bounds[0]", bounds[0])
        high = check_float(_OWNER, "bounds[1]", bounds[1])
        if not low < high:
            raise fail(_OWNER, "bounds", "a pair with low < high", bounds)
        self.bounds = (low, high)
        self.output = output
        self.output_kind: OutputKind = check_choice(  # type: ignore[assignment]
            _OWNER, "output_kind", output_kind, ("auto", "logits", "probabilities")
        )
        if (mean is None) != (std is None):
            raise fail(_OWNER, "mean/std", "given together or not at all", (mean, std))
        self._normalise = mean is not None
        if mean is not None and std is not None:
            m = _as_float_tensor(mean, "mean")
            s = _as_float_tensor(std, "std")
            if m.shape != s.shape or m.numel() == 0:
                raise fail(_OWNER, "mean/std", "1-D sequences of equal length (one per channel)", (mean, std))
            if not bool(torch.isfinite(m).all()) or not bool((s > 0).all()):
                raise fail(_OWNER, "std", "finite and > 0 in every channel", std)
            if bool((m < low).any() or (m > high).any() or (s > 10 * (high - low)).any()):
                raise fail(
                    _OWNER,
                    "mean/std",
                    f"in the units of the input bounds {self.bounds} (a mean inside them, a std not 10x their width)",
                    f"mean {m.tolist()}, std {s.tolist()}",
                    "these look like 0-255 pixel units: divide mean and std by 255 (e.g. mean=[0.485, 0.456, "
                    "0.406], std=[0.229, 0.224, 0.225]), or set bounds=(0, 255) if your inputs are 0-255.",
                )
            self.register_buffer("mean", m, persistent=False)
            self.register_buffer("std", s, persistent=False)
        self.set_threshold(threshold)
        self._checked = False
        self._runtime = Runtime()
        self._runtime_net: RuntimeNetwork | None = None
        self._chunk_memo: dict[tuple[Any, ...], int] = {}
        if runtime is not None:
            self.set_runtime(runtime)

    # ------------------------------------------------------------------ configuration
    def set_threshold(self, threshold: float | Sequence[float] | Tensor) -> None:
        """Set the decision threshold: a float, or K per-label values, each in ``(0, 1)``."""
        th = _as_float_tensor(threshold, "threshold", flatten=False)
        if th.ndim > 1 or not bool(torch.isfinite(th).all()) or not bool(((th > 0) & (th < 1)).all()):
            raise fail(
                _OWNER,
                "threshold",
                "a float or a 1-D sequence of per-label floats, each strictly between 0 and 1",
                threshold,
                "thresholds apply to sigmoid probabilities, e.g. threshold=0.5.",
            )
        if th.ndim == 1 and self.num_labels is not None and th.numel() != self.num_labels:
            raise fail(
                _OWNER,
                "threshold",
                f"a float or {self.num_labels} per-label values (one per label)",
                threshold,
                "pass one threshold per label or a single float.",
            )
        self.register_buffer("threshold", th, persistent=False)

    def set_runtime(self, runtime: Runtime | None = None) -> MultiLabelModel:
        """Run this model under ``runtime`` (``None``: the default). Moves the network and the wrapper's buffers
        to its device **in place** and converts 4-D parameters to channels-last if asked, so every attack and
        analysis using this model runs under it; returns ``self``. Forgets remembered working batch sizes."""
        rt = Runtime() if runtime is None else runtime
        if not isinstance(rt, Runtime):
            raise fail(_OWNER, "runtime", "a labelflip.models.runtime.Runtime or None", runtime,
                       "e.g. Runtime(device='cuda', precision='bf16').")  # fmt: skip
        self._runtime_net = apply_runtime(self, rt, self._runtime)
        self._runtime = rt
        self._chunk_memo = {}
        return self

    @property
    def runtime(self) -> Runtime:
        """The :class:`~labelflip.models.runtime.Runtime` this model runs under."""
        return self._runtime

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the network's parameters (:meth:`forward` casts inputs to it); float32 if none."""
        for p in self.module.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def work_dtype(self, x_dtype: torch.dtype) -> torch.dtype:
        """The dtype inputs, perturbations and norms are kept in for inputs of ``x_dtype``: the widest of
        ``x_dtype``, float32 and :attr:`dtype` (a float16/bfloat16 network computes in its own dtype inside
        :meth:`forward` only)."""
        return torch.promote_types(torch.promote_types(x_dtype, torch.float32), self.dtype)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        for b in self.module.buffers():
            return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ forward / predict
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, K)`` for inputs ``x`` ``(N, ...)`` in pixel units (no validation: hot path).

        Mixed precision happens here and only here: ``x`` (the caller's dtype, float32 at least in attacks) is
        normalised in its own dtype, cast to the network's dtype (e.g. float16/bfloat16) for ``module`` and the
        logits are cast back to ``x``'s dtype, so perturbations, clamps and norms never lose precision. With
        equal dtypes (the float32 default) nothing is cast. A runtime with bf16/fp16 autocast runs only the
        network under autocast and returns float32 logits (:func:`labelflip.models.runtime.run_network`)."""
        x_dtype = x.dtype
        if self._normalise:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        net_dtype = self.dtype
        if x.is_floating_point() and x.dtype != net_dtype:
            x = x.to(net_dtype)
        if self._runtime_net is None:
            out = _adapt_output(self.module(x), self.output)
        else:
            out = self._runtime_net(x, lambda o: _adapt_output(o, self.output))
        if isinstance(out, Tensor) and out.is_floating_point() and x_dtype.is_floating_point and out.dtype != x_dtype:
            out = out.to(x_dtype)
        if self.output_kind == "probabilities":
            out = torch.logit(out.clamp(1e-6, 1 - 1e-6))
        return out

    @torch.no_grad()
    def probabilities(self, x: Tensor) -> Tensor:
        """Sigmoid confidences ``(N, K)`` in ``[0, 1]``, in eval mode (previous modes restored)."""
        with self.eval_mode():
            return torch.sigmoid(self(x))

    def predict_from_probabilities(self, probs: Tensor) -> Tensor:
        """Boolean predictions ``probs > threshold`` (strict), shape ``(N, K)``."""
        return probs > self.threshold.to(probs.device)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Boolean predictions ``(N, K)`` in eval mode."""
        return self.predict_from_probabilities(self.probabilities(x))

    # ------------------------------------------------------------------ modes
    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[MultiLabelModel]:
        """Put every submodule in eval mode; restore each one's previous ``training`` flag on exit."""
        previous = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, flag in previous:
                m.training = flag

    # ------------------------------------------------------------------ validation
    def validate_inputs(self, x: Any, *, owner: str = _OWNER, param: str = "x") -> Tensor:
        """Check a batch of inputs: a float tensor ``(N, ...)`` with N >= 1, finite, within ``bounds``."""
        if not isinstance(x, Tensor):
            raise fail(owner, param, "a torch.Tensor of shape (N, C, H, W) or (N, D)", x)
        if x.ndim >= 2 and x.shape[0] == 0:
            raise fail(
                owner,
                param,
                "a non-empty batch (N >= 1)",
                x,
                "the batch has no inputs (N = 0): check the sample selection or count that produced it.",
            )
        if x.ndim < 2:
            raise fail(
                owner,
                param,
                "a batch of shape (N, C, H, W) or (N, D) with N >= 1",
                x,
                "add a batch dimension with x.unsqueeze(0) for a single input.",
            )
        if not x.is_floating_point():
            raise fail(
                owner,
                param,
                "a floating-point tensor",
                x,
                f"convert with x.float() (and scale to {self.bounds}).",
            )
        if not bool(torch.isfinite(x).all()):
            raise fail(owner, param, "finite (no NaN or Inf)", x, "clean or drop the offending inputs.")
        low, high = self.bounds
        lo, hi = float(x.min()), float(x.max())
        tol = 1e-6 * max(1.0, high - low)
        if lo < low - tol or hi > high + tol:
            raise fail(
                owner,
                param,
                f"within the model's bounds {self.bounds}",
                f"values in [{lo:.4g}, {hi:.4g}]",
                "scale inputs to the bounds (e.g. divide uint8 images by 255) and move mean/std "
                "normalisation into the wrapper (mean=..., std=...), or set bounds=(low, high).",
            )
        if self._normalise and self.mean.numel() not in (1, x.shape[1]):
            raise fail(
                owner,
                param,
                f"channel-first with {self.mean.numel()} channels (or features) to match mean/std",
                x,
                "pass images as (N, C, H, W), or one mean/std value per channel of your inputs.",
            )
        return x

    def validate_labels(self, y: Any, n: int, *, owner: str, param: str, binary: bool = True) -> Tensor:
        """Check a label-shaped tensor ``(n, K)`` (``binary``: values in {0, 1}, else in [0, 1])."""
        k = self.num_labels
        if not isinstance(y, Tensor):
            raise fail(owner, param, f"a torch.Tensor of shape ({n}, {k})", y)
        if y.ndim != 2 or y.shape[0] != n or (k is not None and y.shape[1] != k):
            raise fail(
                owner,
                param,
                f"of shape ({n}, {k}) (one row per input, one column per label)",
                y,
                "labels are a multi-hot matrix; check the label count matches the model's outputs.",
            )
        y = y.float()
        if binary and not bool(((y == 0) | (y == 1)).all()):
            raise fail(owner, param, "multi-hot (values 0 or 1 only)", y, "threshold or round your targets.")
        if not binary and not bool(((y >= 0) & (y <= 1)).all()):
            raise fail(owner, param, "within [0, 1]", y)
        return y


def as_model(model: nn.Module | MultiLabelModel, **kwargs: Any) -> MultiLabelModel:
    """Return ``model`` if it is already a :class:`MultiLabelModel`, else wrap it with ``kwargs`` (a
    :class:`~labelflip.models.LoadedModel` from ``create_model`` is unwrapped to its network first)."""
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module  # a LoadedModel: the network and its provenance
    if isinstance(model, MultiLabelModel):
        if kwargs:
            raise LabelflipError(
                f"as_model: options {sorted(kwargs)} were given for an already wrapped MultiLabelModel. Fix: "
                "set them when creating the MultiLabelModel."
            )
        return model
    return MultiLabelModel(model, **kwargs)

"""One-off sanity checks of a wrapped model (the scikit-learn ``check_estimator`` idea, for attack targets).

:func:`check_model` runs on a few inputs and refuses what would make every attack meaningless (non-(N, K) output,
NaN logits, a non-differentiable forward, outputs that look like probabilities) and warns, with a remedy, about
what makes results noisy (a stochastic forward in eval mode, zero input gradients). Attacks and analyses run it
once per wrapper through :func:`ensure_checked`.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from labelflip._validation import LabelflipError, LabelflipWarning, fail
from labelflip.models.wrapper import MultiLabelModel

__all__ = ["check_model", "ensure_checked"]

_OWNER = "MultiLabelModel"


def check_model(model: MultiLabelModel, x: Tensor, *, owner: str = _OWNER) -> None:
    """One-off sanity checks on a few inputs; run automatically by attacks on their first call.

    * output must be 2-D ``(N, K)`` with K matching ``num_labels`` and the threshold;
    * ``output_kind="auto"``: outputs all in ``[0, 1]`` on at least 64 output values of random inputs and on the
      inputs pushed to the box corners along the input gradient look like probabilities and are refused
      (SPEC.md, Conventions) with the fix (reliable for any K: 0 refusals of 200 untrained ``Linear(768, 1)``
      heads, ``tests/models/test_issue16_checks.py``);
    * two identical eval-mode forward passes that differ -> warning (dropout or noise left on);
    * an all-zero input gradient -> warning (detached input, argmax, quantisation).
    """
    x = model.validate_inputs(x, owner=owner)
    sample = x[: min(4, x.shape[0])].detach().to(device=model.device, dtype=model.work_dtype(x.dtype))
    with model.eval_mode(), torch.enable_grad():
        xs = sample.clone().requires_grad_(True)
        try:
            out = model(xs)
        except LabelflipError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise fail(
                owner,
                "x",
                "a batch the network accepts",
                x,
                f"the network raised {type(exc).__name__}: {exc}. A single image needs a batch dimension: "
                "x.unsqueeze(0).",
            ) from exc
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != xs.shape[0]:
            raise fail(
                _OWNER,
                "module",
                "a network returning logits of shape (N, K)",
                out,
                "wrap it so it returns (N, K) logits, or pass output=... to select them.",
            )
        k = out.shape[1]
        if model.num_labels is None:
            model.num_labels = k
        elif model.num_labels != k:
            raise fail(
                _OWNER,
                "num_labels",
                f"equal to the network's output width {k}",
                model.num_labels,
                "fix num_labels or the network's head.",
            )
        if model.threshold.ndim == 1 and model.threshold.numel() != k:
            raise fail(owner, "threshold", f"a float or {k} per-label values", model.threshold)
        if not bool(torch.isfinite(out).all()):
            raise LabelflipError(
                f"{owner}: the model returned NaN/Inf logits on valid inputs. Fix the model (or its "
                "normalisation: mean/std) before attacking it."
            )
        if not out.requires_grad:
            raise LabelflipError(
                f"{owner}: the model's output does not depend differentiably on its input (computed under "
                "torch.no_grad(), or a detached input with frozen parameters): gradient attacks cannot run. "
                "Fix: make the forward pass differentiable in the input."
            )
        grad = torch.autograd.grad(out.sum(), xs, allow_unused=True)[0]
        with torch.no_grad():  # compare like with like: no-grad passes may take fused fast paths
            out1 = model(sample)
            out2 = model(sample)
            probe = _probe_outputs(model, sample, grad, k) if model.output_kind == "auto" else None
    if probe is not None:
        both = torch.cat([out.detach().flatten(), probe])
        if bool(((both >= 0) & (both <= 1)).all()):
            raise LabelflipError(
                f"{owner}: the model's outputs all lie in [0, 1] on {both.numel()} outputs of random and extreme "
                "inputs (each pushed to the bounds along the input gradient): they look like "
                "probabilities (a sigmoid inside the model), but labelflip attacks logits. Fix: remove the "
                "final sigmoid, or pass output_kind='probabilities' to MultiLabelModel (converted to "
                "logits), or output_kind='logits' if these really are logits."
            )
    if not torch.equal(out1, out2):
        warnings.warn(
            f"{owner}: two identical forward passes in eval mode gave different outputs: the model is "
            "stochastic (dropout or noise that ignores eval(), e.g. F.dropout(training=True)). Flips will "
            "include random ones. Remedy: make the forward pass deterministic in eval mode.",
            LabelflipWarning,
            stacklevel=3,
        )
    if grad is None or not bool((grad != 0).any()):
        warnings.warn(
            f"{owner}: the gradient of the logits with respect to the input is zero everywhere: gradient "
            "attacks cannot move the input (detached input, argmax/rounding, or saturated activations). "
            "Remedy: make the forward pass differentiable in the input.",
            LabelflipWarning,
            stacklevel=3,
        )
    model._checked = True


#: Output values the probability check looks at, at least (random inputs: ceil(MIN_PROBE_OUTPUTS / K), capped).
MIN_PROBE_OUTPUTS = 64
_MAX_RANDOM_INPUTS = 64


def _probe_outputs(model: MultiLabelModel, sample: Tensor, grad: Tensor | None, k: int) -> Tensor:
    """Flattened outputs on random inputs and on extreme ones, for the sigmoid-inside check (call under no_grad).

    Random inputs alone cannot tell a sigmoid from logits that happen to be small: an untrained ``Linear(768, 1)``
    head on uniform inputs gives logits within about +-0.5 of its mean, so 8 values all landed in [0, 1] for 7 of
    50 heads (issue 16). Two kinds of evidence make the check reliable for any K: ``ceil(64 / K)`` random inputs
    (at least 64 values; at most 64 inputs), and the clean sample pushed to each corner of the input box along its
    input gradient (``x_hi = high where grad > 0``, ``x_lo`` the opposite), where logits of any network that is
    not flat leave [0, 1] (a linear head reaches its extremes exactly there) while a sigmoid cannot.
    """
    low, high = model.bounds
    gen = torch.Generator(device="cpu").manual_seed(0)
    n_random = min(_MAX_RANDOM_INPUTS, max(sample.shape[0], -(-MIN_PROBE_OUTPUTS // max(k, 1))))
    outs = []
    for lo in range(0, n_random, sample.shape[0]):
        shape = (min(sample.shape[0], n_random - lo), *sample.shape[1:])
        rnd = torch.rand(shape, generator=gen).to(sample) * (high - low) + low
        outs.append(model(rnd).flatten())
    if grad is not None and bool((grad != 0).any()):
        up = grad.to(sample) > 0
        outs.append(model(torch.where(up, high, low).to(sample)).flatten())
        outs.append(model(torch.where(up, low, high).to(sample)).flatten())
    return torch.cat(outs)


def ensure_checked(model: MultiLabelModel, x: Tensor, *, owner: str) -> None:
    """Run :func:`check_model` once per wrapper (free afterwards); refuse a model without data (``meta``) always."""
    if model.device.type == "meta":  # parameters without data: every forward would fail deep inside torch
        raise fail(
            owner,
            "model",
            "a model whose parameters hold data on a real device (cpu, cuda, mps)",
            "parameters on the 'meta' device",
            "materialise the weights first, e.g. module.to_empty(device='cpu') then load_state_dict(...).",
        )
    if not model._checked:
        check_model(model, x, owner=owner)

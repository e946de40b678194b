"""The Table VII stage of a study (seed §VI-D, Table VII; Fig. 1): budgeted attacks at the baselines' norms.

A study whose spec has a ``compare`` section with baselines runs, per model and per baseline (a registered
**minimum-norm** attack: ``ml-cw``, ``ml-deepfool``, ``mla-lp``)::

    compare: {baselines: [ml-cw, ml-deepfool, mla-lp], methods: [bce, slam], samples: null}

1. the baseline on the first ``compare.samples`` of the study's samples (``null``: all), target = flip every label,
   at ``eps`` = the whole input range, so nothing is clipped: its own adversarial examples, their flips and the norm
   ``eps_i = ||x_adv_i - x_i||`` each needed (in the study's ``norm``; L-inf in the paper);
2. every budgeted method (``compare.methods``; MI-FGSM with BCE and SLAM by default) on the same samples and target
   at ``eps = eps_i`` per sample (:func:`~labelflip.attacks.baselines.compare_at_baseline_norms`, one trajectory
   per chunk of ``chunk`` samples, with the study's MI-FGSM engine settings);
3. the adversarial images of the first ``report.examples`` samples (the baseline's and each method's, from the same
   runs as the table's numbers) with their confidences, for the paper's Fig. 1.

Everything goes into the store as one artefact per (model, baseline), kind ``table7:<baseline spec>``: per-sample
arrays (norms, baseline flips and outcome, each method's flips and achieved norm) and the encoded example images
with their confidences. A (model, baseline) already stored is not recomputed, so a killed run resumes at the next
pair. The stage needs only the prepared models (flip profile for SLAM), not the study's rows; it runs after the
units, on rank 0 only (in a torchrun study: after the shards are merged, under the study lock), and is skipped
on the other ranks. Budgets here are measured norms, so the large-L-inf-budget warning (a unit-mistake guard) is
silenced for the methods' calls (a minimum-norm attack's budget never warns: it only clips).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from labelflip._validation import LabelflipWarning, fail
from labelflip.attacks import ATTACKS, attack_info, create_attack, parse_attack
from labelflip.attacks.base import clean_pass
from labelflip.attacks.baselines import compare_at_baseline_norms
from labelflip.models import MultiLabelModel
from labelflip.study.inputs import engine_options
from labelflip.study.store import ResultsStore, encode_array

__all__ = ["COMPARE_DEFAULTS", "artefact_kind", "baseline_comparison", "check_compare", "run_table7", "table7_enabled"]

COMPARE_DEFAULTS: dict[str, Any] = {"baselines": [], "methods": ["bce", "slam"], "samples": None}
"""The ``compare`` section's defaults: no baseline, so no Table VII stage (and no change to the config hash)."""
_OWNER = "study spec"
Progress = Callable[[str, int, int], None]


class StudyContext(Protocol):
    """What the stage reads of :class:`labelflip.study.runner.StudyContext` (the runner's prepared study)."""

    spec: Any
    out: Path
    models: Mapping[str, Any]
    x: Tensor
    dataset_indices: Tensor


def artefact_kind(baseline: str) -> str:
    """The store artefact kind of one baseline's Table VII results (``baseline``: its canonical spec)."""
    return f"table7:{baseline}"


def _names(value: Any, param: str, expected: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(
            _OWNER, param, expected, value, f"write e.g. {param}: [{'ml-deepfool' if 'base' in param else 'bce'}]."
        )
    return value


def check_compare(value: Mapping[str, Any], *, methods: Sequence[str], count: int) -> dict[str, Any]:
    """The validated ``compare`` section (canonical method specs) of a spec with study ``methods`` and ``count``
    samples; errors name ``compare.<key>`` and the fix, before any work."""
    baselines = [parse_attack(b) for b in _names(value.get("baselines"), "compare.baselines", "a list of specs")]
    for b in baselines:
        if attack_info(b)["kind"] != "minimum-norm":
            mins = [n for n in ATTACKS.list() if getattr(ATTACKS.get(n).factory, "kind", None) == "minimum-norm"]
            raise fail(
                _OWNER,
                "compare.baselines",
                "minimum-norm attacks (" + ", ".join(mins) + ")",
                str(b),
                f"{b.label} is a budgeted method: list it in compare.methods.",
            )
    budgeted = [parse_attack(m) for m in _names(value.get("methods"), "compare.methods", "a non-empty list of specs")]
    if baselines and not budgeted:
        raise fail(_OWNER, "compare.methods", "at least one budgeted method", [], "e.g. compare.methods: [bce, slam].")
    available = {"profile"}.union(*(attack_info(m)["requires"] for m in methods))  # what the runner prepares
    for m in budgeted:
        info = attack_info(m)
        if info["kind"] != "fixed-budget":
            raise fail(
                _OWNER,
                "compare.methods",
                "budgeted (fixed-budget) methods such as bce, slam",
                str(m),
                f"{m.label} is a minimum-norm attack: list it in compare.baselines.",
            )
        missing = sorted(info["requires"] - available)
        if missing:
            raise fail(
                _OWNER,
                "compare.methods",
                f"methods whose inputs the study prepares ({', '.join(available)})",
                str(m),
                f"{m.label} needs {', '.join(missing)}: add a study method that needs it too (e.g. "
                "class:0 in methods), or drop it here.",
            )
    for key, specs in (("compare.baselines", baselines), ("compare.methods", budgeted)):
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            dup = next(x for x in labels if labels.count(x) > 1)
            raise fail(
                _OWNER,
                key,
                "distinct methods (distinct table labels)",
                [str(s) for s in specs],
                f"{dup!r} is listed twice; drop one.",
            )
    samples = value.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or not 2 <= samples <= count):
        raise fail(
            _OWNER,
            "compare.samples",
            f"null (all) or an int in [2, samples.count = {count}]",
            samples,
            "the paired test needs at least 2 samples; the stage uses the first n of the study's samples.",
        )
    return {"baselines": [str(b) for b in baselines], "methods": [str(m) for m in budgeted], "samples": samples}


@contextmanager
def _measured_budgets() -> Iterator[None]:
    """The budgets of this stage are measured norms, not user input: no unit-mistake warning for them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*L-inf budget\(s\)", category=LabelflipWarning)
        yield


def _unclipped(model: MultiLabelModel, x: Tensor, norm: str) -> float:
    """A budget that clips no perturbation inside the bounds: the range (L-inf) or the box's diagonal (L2)."""
    lo, hi = model.bounds
    span = float(hi - lo)
    return span if norm == "linf" else span * float(x[0].numel()) ** 0.5 * (1 + 1e-6)


def _norms(adv: Tensor, x: Tensor, norm: str) -> Tensor:
    d = (adv.double() - x.double()).flatten(1)
    return d.abs().amax(dim=1) if norm == "linf" else d.norm(dim=1)


def baseline_comparison(
    model: MultiLabelModel,
    x: Tensor,
    baseline: str,
    methods: Sequence[str],
    *,
    profile: Any = None,
    correlations: Any = None,
    heldout: Tensor | None = None,
    seed: int = 0,
    norm: str = "linf",
    sample_ids: Tensor | None = None,
    examples: int = 0,
    batch_size: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One baseline's Table VII results on ``x`` ``(N, C, H, W)`` in the model's bounds, as a JSON-able artefact.

    The baseline runs unclipped (target: flip every label); each method in ``methods`` then attacks sample ``i``
    at ``eps_i`` = the baseline example's norm (``norm``), with the same target (seed Table VII). ``settings``:
    the study's MI-FGSM engine settings (``attack`` section), passed to the methods built on that engine.

    Returns: ``{"baseline", "label", "norm", "num_samples", "sample_ids", "norms" (N,), "baseline_flips" (N,),
    "status" (N,), "methods": {label: spec}, "flips": {label: (N,)}, "achieved": {label: (N,)}, "elapsed_s": {...},
    "examples": {...} or None}``; ``examples`` holds the first ``examples`` samples: ``clean`` (encoded ``(E, C, H,
    W)``), ``clean_probs`` ``(E, K)`` and one panel per attack (the baseline first) with its encoded images,
    confidences ``(E, K)``, flips and achieved norms.
    """
    n = x.shape[0]
    ids = torch.arange(n) if sample_ids is None else torch.as_tensor(sample_ids).long()
    spec = parse_attack(baseline)
    attack = create_attack(spec, model, seed=seed, norm=norm, batch_size=batch_size, return_adv=True)
    t0 = time.perf_counter()
    res = attack(x, _unclipped(model, x, norm), sample_ids=ids)
    elapsed = {spec.label: time.perf_counter() - t0}
    out: dict[str, Any] = {
        "baseline": str(spec),
        "label": spec.label,
        "norm": norm,
        "num_samples": n,
        "sample_ids": ids.tolist(),
        "norms": res.min_norm.tolist(),
        "baseline_flips": res.flips[0].tolist(),
        "status": list(res.extra.get("status", ["n/a"] * n)),
        "methods": {},
        "flips": {},
        "achieved": {},
    }
    m_ex = min(examples, n)
    panels = [_panel(model, str(spec), spec.label, res.x_adv[0, :m_ex], x[:m_ex], norm)] if m_ex else []
    common = {"profile": profile, "correlations": correlations, "heldout": heldout, "seed": seed}
    with _measured_budgets():
        for m in [parse_attack(m) for m in methods]:
            t0 = time.perf_counter()
            cmp = compare_at_baseline_norms(
                model,
                x,
                res,
                [str(m)],
                norm=norm,
                batch_size=batch_size,
                sample_ids=ids,
                options=engine_options(str(m), settings or {}),
                keep_adv=m_ex,
                **common,
            )
            elapsed[m.label] = time.perf_counter() - t0
            out["methods"][m.label] = str(m)
            out["flips"][m.label] = cmp.flips[m.label].tolist()
            out["achieved"][m.label] = cmp.achieved[m.label].tolist()
            if m_ex:
                panels.append(_panel(model, str(m), m.label, cmp.adv[m.label], x[:m_ex], norm))
    out["elapsed_s"] = elapsed
    out["examples"] = (
        {
            "sample_index": list(range(m_ex)),
            "clean": encode_array(x[:m_ex].cpu().numpy()),
            "clean_probs": res.clean_probs[:m_ex].tolist(),
            "panels": panels,
        }
        if m_ex
        else None
    )
    return out


def _panel(model: MultiLabelModel, method: str, label: str, adv: Tensor, x: Tensor, norm: str) -> dict[str, Any]:
    """One attack's examples ``adv`` ``(E, C, H, W)`` of the clean ``x``: images, confidences ``(E, K)``, norms."""
    adv = adv.to(x.device, x.dtype)
    with model.eval_mode():
        probs, _ = clean_pass(model, adv)
    return {
        "method": method,
        "label": label,
        "adv": encode_array(adv.cpu().numpy()),
        "probs": probs.cpu().tolist(),
        "norm": _norms(adv.cpu(), x.cpu(), norm).tolist(),
    }


def _complete(stored: Mapping[str, Any] | None, baseline: str, methods: list[str], n: int) -> bool:
    """Whether a stored artefact holds this baseline's results for these methods and ``n`` samples."""
    return (
        stored is not None
        and stored.get("baseline") == baseline
        and stored.get("num_samples") == n
        and sorted(stored.get("methods", {}).values()) == sorted(methods)
    )


def table7_enabled(spec: Any) -> bool:
    """Whether the study runs the Table VII stage (``compare.baselines`` not empty)."""
    return bool((getattr(spec, "compare", None) or COMPARE_DEFAULTS)["baselines"])


def run_table7(
    ctx: StudyContext, progress: Progress | None = None, *, store: ResultsStore | None = None, rank: int = 0
) -> int:
    """Run (or resume) the Table VII stage of ``ctx``'s study into its store; returns the (model, baseline) pairs
    computed now. Does nothing without ``compare.baselines`` or on a rank other than 0. ``store``: the study's
    open main store (default: ``<output>/results.sqlite``, opened here; the caller holds the study lock)."""
    spec = ctx.spec
    cfg = getattr(spec, "compare", None) or COMPARE_DEFAULTS
    if rank != 0 or not table7_enabled(spec):
        return 0
    if store is None:
        with ResultsStore(ctx.out / "results.sqlite") as opened:
            return run_table7(ctx, progress, store=opened, rank=rank)
    n = min(cfg["samples"] or ctx.x.shape[0], ctx.x.shape[0])
    pairs = [(name, b) for name in ctx.models for b in cfg["baselines"]]
    computed = 0
    for done, (name, baseline) in enumerate(pairs, start=1):
        pm = ctx.models[name]
        if not _complete(store.get_artefact(name, artefact_kind(baseline)), baseline, cfg["methods"], n):
            value = baseline_comparison(
                pm.model,
                ctx.x[:n].to(pm.model.device, pm.model.dtype),
                baseline,
                cfg["methods"],
                profile=pm.profile,
                correlations=pm.correlations,
                heldout=pm.heldout,
                seed=spec.seeds[0],
                norm=spec.norm,
                sample_ids=ctx.dataset_indices[:n],
                examples=int(spec.report.get("examples", 4)),
                batch_size=spec.chunk,
                settings=spec.attack,
            )
            store.put_artefact(name, artefact_kind(baseline), value)
            computed += 1
        if progress is not None:
            progress(f"{name} Table VII", done, len(pairs))
    return computed

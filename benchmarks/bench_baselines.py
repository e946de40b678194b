"""Per-image time of the related-work baselines (ML-CW, ML-DeepFool, MLA-LP) on the built-in models, and the seed
paper's Table VII comparison (printed, never asserted; results go to docs/benchmarks.md).

For each built-in model and baseline: wall and CPU seconds per image of one attack call on ``n`` test images,
the baseline's mean flips and achieved L-inf norm (its unclipped examples), its per-sample outcomes, and, with
``--compare``, MI-FGSM BCE and SLAM flips at each example's own L-inf norm
(:func:`labelflip.attacks.baselines.compare_at_baseline_norms`; the SLAM profile is probed on 40 validation images
and cached next to the models).

Usage: ``python benchmarks/bench_baselines.py [--n 16] [--models asl-cnn,q2l-cnn] [--compare]
[--methods "ml-cw:steps=200,binary_steps=5;ml-deepfool;mla-lp:workers=2"]`` (methods separated by ``;``).
"""

from __future__ import annotations

import argparse
import collections
import platform
import time
import warnings
from pathlib import Path

import torch

from labelflip.analysis import Profile, probe_profile
from labelflip.attacks import create_attack
from labelflip.attacks.baselines import compare_at_baseline_norms
from labelflip.models import MultiLabelModel
from labelflip.zoo import default_cache_dir, default_dataset, load_builtin

DEFAULT_METHODS = "ml-cw:steps=200,binary_steps=5;ml-deepfool;mla-lp"


def _profile(name: str, fingerprint: str, model: MultiLabelModel, x_val: torch.Tensor) -> Profile:
    """The model's flip profile (for SLAM), probed once on held-out images and cached by fingerprint."""
    folder = Path(default_cache_dir()) / "bench_baselines"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{fingerprint}-profile.json"
    if path.exists():
        return Profile.load(path)
    print(f"  probing the flip profile of {name} on {x_val.shape[0]} validation images (cached) ...", flush=True)
    profile = probe_profile(model, x_val)
    profile.save(path)
    return profile


def _mean_std(v: torch.Tensor) -> str:
    v = v.double()
    return f"{float(v.mean()):.3f} ± {float(v.std(correction=0)):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="test images per model")
    parser.add_argument("--models", default="asl-cnn,q2l-cnn")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="baseline specs separated by ';'")
    parser.add_argument("--compare", action="store_true", help="also MI-FGSM BCE / SLAM at the baselines' norms")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*L-inf budget")  # eps = 1.0: the whole box, on purpose
    data = default_dataset()
    x = data.test.x[: args.n]
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    for name in args.models.split(","):
        loaded = load_builtin(name)
        model = MultiLabelModel(loaded.module.eval())
        profile = _profile(name, loaded.fingerprint, model, data.val.x[:40]) if args.compare else None
        print(f"\n{name}: {args.n} test images, 3x32x32, K = {model.num_labels or model(x[:1]).shape[1]}")
        for spec in args.methods.split(";"):
            attack = create_attack(spec.strip(), model, norm="linf")
            wall, cpu = time.perf_counter(), time.process_time()
            res = attack(x, eps=1.0)  # the whole box: every example unclipped
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            outcomes = dict(collections.Counter(res.extra["status"]))
            print(f"  {spec.strip():36s} {wall / args.n:7.3f} s/image wall, {cpu / args.n:7.3f} s/image CPU")
            print(f"    flips {_mean_std(res.flips[0])}, L-inf {_mean_std(res.min_norm)}, outcomes {outcomes}")
            if "dropped_labels" in res.extra:
                print(f"    LP solves/image {sum(res.extra['solves']) / args.n:.1f}, dropped labels/image "
                      f"{sum(res.extra['dropped_labels']) / args.n:.1f}")  # fmt: skip
            if args.compare:
                start = time.perf_counter()
                out = compare_at_baseline_norms(model, x, res, ("bce", "slam"), profile=profile)
                took = time.perf_counter() - start
                cells = ", ".join(f"{k} {_mean_std(v)}" for k, v in out.flips.items())
                print(f"    at the same L-inf: {cells}  ({took:.1f} s)")


if __name__ == "__main__":
    main()

"""The attack conformance checks (scikit-learn's ``check_estimator`` idea): every attack must pass every check.

labelflip's own suite runs :data:`CHECKS` on every registered attack (``tests/attacks/test_conformance.py`` is
parametrised over the registry), so an attack registered now or later gets every check without a new test. A
plugin author runs them on theirs::

    from labelflip.testing import check_attack
    check_attack("my-attack")        # raises AssertionError naming the failed check

The checks use a tiny seeded CNN (8 labels, 3x8x8 inputs), a synthetic flip profile and correlation matrix, so
they run in seconds on a CPU. Each takes a factory ``(model) -> attack``, the attack's norm and the network's
dtype (float32; the budget checks also run on float16 and bfloat16 networks, :data:`LOW_PRECISION`, whose inputs,
perturbations and norms must stay float32 so the budget holds exactly against the caller's input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from labelflip._registry import Spec
from labelflip.analysis.correlation import Correlations
from labelflip.attacks import ATTACKS, create_attack, parse_attack
from labelflip.attacks.result import AttackResult
from labelflip.estimate import PolynomialEstimate
from labelflip.models import MultiLabelModel

__all__ = [
    "CHECKS",
    "LOW_PRECISION",
    "LOW_PRECISION_CHECKS",
    "TinyNet",
    "check_attack",
    "example_spec",
    "factory_for",
    "make_inputs",
    "make_model",
]

K = 8
BUDGETS = {"linf": [0.0, 0.003, 0.02, 0.05], "l2": [0.0, 0.05, 0.2, 0.5]}
AttackFactory = Callable[[MultiLabelModel], Any]


class TinyNet(nn.Module):
    """Conv -> BN -> ReLU -> pool -> dropout -> linear: logits ``(N, K)`` for ``(N, 3, 8, 8)`` inputs."""

    def __init__(self, k: int = K, seed: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
        )
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(24, k)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            self.features[1].running_var.fill_(1.0)
            self.head.weight.mul_(2.0)  # sensitive enough that small budgets flip labels

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.features(x).flatten(1)))


def make_model(seed: int = 4, dtype: torch.dtype = torch.float32) -> MultiLabelModel:
    """The seeded :class:`TinyNet`, wrapped; ``dtype`` (e.g. ``torch.float16``/``torch.bfloat16``) converts the
    network's parameters and buffers, as ``model.half()`` would: inputs and budgets stay float32."""
    return MultiLabelModel(TinyNet(seed=seed).to(dtype))


def make_inputs(n: int = 6, seed: int = 5) -> Tensor:
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(seed))


def _profile() -> PolynomialEstimate:
    return PolynomialEstimate((0.0, 100.0), 0.04)  # E(eps) = 100 eps: k grows with the budget


def _correlations() -> Correlations:
    gen = torch.Generator().manual_seed(0)
    return Correlations(flipup=torch.rand(K, K, generator=gen, dtype=torch.float64), eps=0.005, num_samples=4)


def example_spec(name: str) -> Spec:
    """The spec of a registered attack with an example value for each required parameter (a full spec string,
    ``"class:0.5"``, is parsed as given)."""
    if ":" in name:
        return parse_attack(name)
    entry = ATTACKS.get(name)
    values = []
    for p in entry.params:
        if not p.required:
            continue
        if p.type is int:
            v: Any = max(2, int(p.low or 0))
        elif p.type is float:
            v = 0.5 if (p.low is None or p.low <= 0.5) and (p.high is None or p.high >= 0.5) else (p.low or p.high)
        else:
            v = "x"
        values.append(f"{p.name}={v}")
    return parse_attack(entry.name + (":" + ",".join(values) if values else ""))


def factory_for(spec: str | Spec, norm: str = "linf", **options: Any) -> AttackFactory:
    """``(model) -> attack`` for a registered attack, with the synthetic profile and correlations it may need."""
    parsed = example_spec(spec) if isinstance(spec, str) else spec
    return lambda model: create_attack(
        parsed,
        model,
        profile=_profile(),
        correlations=_correlations(),
        seed=3,
        heldout=make_inputs(4, seed=9),
        norm=norm,
        **options,
    )


# ----------------------------------------------------------------------------- the checks
def _run(factory: AttackFactory, model: MultiLabelModel, x: Tensor, eps: Any, **options: Any) -> AttackResult:
    attack = factory(model)
    for key, value in options.items():
        setattr(attack, key, value)
    return attack(x, eps)


def check_budget_bounds_and_finite(factory: AttackFactory, norm: str, dtype: torch.dtype = torch.float32) -> None:
    """Every budget is respected (achieved norm <= eps), the output stays in bounds, nothing is NaN, and the
    flips are consistent (total = up + down, shapes (B, N))."""
    model, x = make_model(dtype=dtype), make_inputs()
    budgets = BUDGETS[norm]
    res = _run(factory, model, x, budgets, return_adv=True)
    assert res.flips.shape == (len(budgets), x.shape[0]), "flips must be (budgets, samples)"
    for b, eps in enumerate(budgets):
        achieved = res.l2[b] if norm == "l2" else res.linf[b]
        assert float(achieved.max()) <= eps * (1 + 1e-6) + 1e-6, f"budget {eps} exceeded: {float(achieved.max())}"
    assert res.x_adv is not None and res.x_adv.shape == (len(budgets), *x.shape), "x_adv must be (B, N, ...)"
    assert res.x_adv.dtype == x.dtype, f"x_adv is {res.x_adv.dtype}, the input {x.dtype} (never narrowed)"
    for b, eps in enumerate(budgets):  # against the caller's own input, not a copy in the network's dtype
        delta = (res.x_adv[b].double() - x.double()).flatten(1)
        got = float((delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)).max())
        assert got <= eps * (1 + 1e-6) + 1e-6, f"budget {eps} exceeded against the input: {got}"
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0, "adversarial input out of bounds"
    for name in ("adv_probs", "linf", "l2"):
        assert torch.isfinite(getattr(res, name)).all(), f"{name} has NaN/Inf"
    assert torch.isfinite(res.x_adv).all(), "x_adv has NaN/Inf"
    assert torch.equal(res.flips, res.flips_up + res.flips_down), "flips != up + down"
    if res.min_norm is not None:
        assert res.min_norm.shape == (x.shape[0],) and torch.isfinite(res.min_norm).all(), "min_norm (N,) finite"


def check_zero_budget(factory: AttackFactory, norm: str, dtype: torch.dtype = torch.float32) -> None:
    """A zero budget changes nothing: zero flips and the clean input back."""
    model, x = make_model(dtype=dtype), make_inputs()
    res = _run(factory, model, x, 0.0, return_adv=True)
    assert int(res.flips.sum()) == 0, "zero budget gave flips"
    assert res.x_adv is not None and torch.equal(res.x_adv[0], x), "zero budget moved the input"


def check_flips_something(factory: AttackFactory, norm: str, dtype: torch.dtype = torch.float32) -> None:
    """At the largest budget the attack flips labels (guards the suite against a no-op attack)."""
    model, x = make_model(dtype=dtype), make_inputs()
    res = _run(factory, model, x, BUDGETS[norm][-1])
    assert int(res.flips.sum()) > 0, "the attack flipped nothing at the largest budget"


def check_batch_size_invariance(factory: AttackFactory, norm: str, dtype: torch.dtype = torch.float32) -> None:
    """Chunking (``batch_size``) and attacking one sample at a time give the same flips; inputs agree to float
    precision (CPU conv kernels round differently with the batch size)."""
    model, x = make_model(dtype=dtype), make_inputs()
    budgets = BUDGETS[norm]
    full = _run(factory, model, x, budgets, return_adv=True)
    chunked = _run(factory, model, x, budgets, return_adv=True, batch_size=2)
    assert torch.equal(full.flips, chunked.flips), "flips depend on batch_size"
    assert torch.allclose(full.x_adv, chunked.x_adv, atol=1e-5, rtol=0), "inputs depend on batch_size"
    singles = [factory(model)(x[i : i + 1], budgets, sample_ids=[i]) for i in range(3)]
    assert torch.equal(full.flips[:, :3], torch.cat([s.flips for s in singles], 1)), "one-at-a-time flips differ"


def check_determinism_and_rng(factory: AttackFactory, norm: str, dtype: torch.dtype = torch.float32) -> None:
    """Two calls give identical results, and no call touches the global RNG."""
    model, x = make_model(dtype=dtype), make_inputs()
    state = torch.get_rng_state()
    a = _run(factory, model, x, BUDGETS[norm], return_adv=True)
    b = _run(factory, model, x, BUDGETS[norm], return_adv=True)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was used"
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.adv_probs, b.adv_probs), "not deterministic"


def check_mode_restored(factory: AttackFactory, norm: str, dtype: torch.dtype = torch.float32) -> None:
    """The model runs in eval mode during the attack; every submodule's own flag is restored afterwards, also on
    error; the parameters get no gradient."""
    model, x = make_model(dtype=dtype), make_inputs()
    net = model.module
    net.train()
    net.features[1].eval()  # a mixed-mode model: each submodule's flag must come back as it was
    seen: list[bool] = []
    handle = net.drop.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    _run(factory, model, x, BUDGETS[norm][:2])
    handle.remove()
    assert seen and not any(seen), "dropout was in training mode during the attack"
    assert net.training and net.drop.training and not net.features[1].training, "modes not restored"
    assert all(p.grad is None for p in net.parameters()), "parameters received gradients"

    def boom(mod: nn.Module, inp: Any) -> None:
        raise RuntimeError("boom")

    handle = net.head.register_forward_pre_hook(boom)
    try:
        _run(factory, model, x, BUDGETS[norm][1])
    except RuntimeError:
        pass
    else:  # pragma: no cover - the hook always raises
        raise AssertionError("the sabotaged forward did not raise")
    finally:
        handle.remove()
    assert net.training and net.drop.training, "modes not restored after an error"


CheckFn = Callable[..., None]
"""``check(factory, norm, dtype=torch.float32)``: ``dtype`` is the network's (inputs stay float32)."""

CHECKS: dict[str, CheckFn] = {
    "budget_bounds_finite": check_budget_bounds_and_finite,
    "zero_budget": check_zero_budget,
    "flips_something": check_flips_something,
    "batch_size_invariance": check_batch_size_invariance,
    "determinism_rng": check_determinism_and_rng,
    "mode_restored": check_mode_restored,
}


LOW_PRECISION = (torch.float16, torch.bfloat16)
"""Network dtypes the budget checks also run with: the attack must keep ``x``, the clamp and the norms in float32."""
LOW_PRECISION_CHECKS = ("budget_bounds_finite", "zero_budget")
"""The checks that run on the :data:`LOW_PRECISION` networks too (the others do not depend on the dtype)."""


def check_attack(
    spec: str | Spec,
    *,
    norms: tuple[str, ...] = ("linf", "l2"),
    dtypes: tuple[torch.dtype, ...] = (torch.float32, *LOW_PRECISION),
    **options: Any,
) -> None:
    """Run every check of :data:`CHECKS` on a registered attack (each norm) with a float32 network, and
    :data:`LOW_PRECISION_CHECKS` with each other network dtype in ``dtypes``; raises ``AssertionError`` naming the
    first failed check."""
    for norm in norms:
        for dtype in dtypes:
            for name, check in CHECKS.items():
                if dtype != torch.float32 and name not in LOW_PRECISION_CHECKS:
                    continue
                try:
                    check(factory_for(spec, norm, **options), norm, dtype=dtype)
                except AssertionError as exc:
                    raise AssertionError(f"{spec} ({norm}, {dtype}) fails {name}: {exc}") from exc

"""A new attack is one module with one decorator: it then works in the API, `labelflip attack --methods`,
`labelflip methods`, study specs and the conformance checks, with no other edit."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from labelflip import cli
from labelflip._registry import REQUIRED, Param, Registry, load_plugins
from labelflip._validation import LabelflipError
from labelflip.attacks import ATTACKS, Batch, FixedBudgetAttack, MinimumNormAttack, list_attacks, parse_attack
from labelflip.testing import check_attack


class NoiseSign(FixedBudgetAttack):
    """Throwaway: one signed-gradient step of size eps (FGSM) toward the target."""

    def __init__(self, model, *, scale: float = 1.0, **options) -> None:
        super().__init__(model, **options)
        self.scale = scale

    def run(self, batch: Batch, budgets: list[float]) -> torch.Tensor:
        x = batch.x.detach().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.model(x), batch.target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        low, high = self.model.bounds
        return torch.stack([(batch.x - e * self.scale * grad.sign()).clamp(low, high) for e in budgets])


class LineSearch(MinimumNormAttack):
    """Throwaway minimum-norm attack: the smallest multiple of the gradient sign (L-inf) that flips a label."""

    def run(self, batch: Batch) -> torch.Tensor:
        x = batch.x.detach().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.model(x), batch.target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        direction = (
            grad.sign()
            if self.norm == "linf"
            else grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        )
        best = batch.x.clone()
        found = torch.zeros(batch.x.shape[0], dtype=torch.bool)
        low, high = self.model.bounds
        with torch.no_grad():
            for step in torch.linspace(0.0, 0.3 if self.norm == "linf" else 3.0, 61)[1:]:
                cand = (batch.x - step * direction).clamp(low, high)
                flipped = (self.model.predict(cand) != batch.clean_pred).any(dim=1).cpu()
                new = flipped & ~found
                best[new] = cand[new]
                found |= flipped
        return best


@pytest.fixture
def throwaway():
    ATTACKS.register("noise-sign", params=[Param("scale", float, 1.0, low=0.0)], label="NoiseSign")(NoiseSign)
    ATTACKS.register("line-search", label="LineSearch")(LineSearch)
    yield
    ATTACKS.unregister("noise-sign")
    ATTACKS.unregister("line-search")


def test_throwaway_attack_everywhere(throwaway, tiny_zoo, tmp_path: Path) -> None:
    assert {"noise-sign", "line-search"} <= set(list_attacks())
    assert parse_attack("noise-sign").label == "NoiseSign"
    runner = CliRunner()
    listing = runner.invoke(cli.app, ["methods"])
    assert listing.exit_code == 0 and "noise-sign" in listing.output and "minimum-norm" in listing.output
    res = runner.invoke(
        cli.app, ["attack", "--samples", "4", "--budgets", "0,0.01,0.05", "--methods", "bce,noise-sign,line-search"]
    )
    assert res.exit_code == 0, res.output
    assert "NoiseSign" in res.output and "LineSearch" in res.output
    # the conformance checks: the min-norm path clips one run to every budget and reports the needed norm
    check_attack("noise-sign", norms=("linf",))
    check_attack("line-search")
    # a study spec accepts it and runs it
    from labelflip.study import load_spec

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump({"methods": ["bce", "noise-sign", "line-search"]}))
    spec = load_spec(spec_path)
    assert [m.label for m in spec.method_specs] == ["BCE", "NoiseSign", "LineSearch"]


def test_min_norm_result_keeps_needed_norm(throwaway) -> None:
    from labelflip.attacks import create_attack
    from labelflip.testing import make_inputs, make_model

    model, x = make_model(), make_inputs()
    res = create_attack("line-search", model)(x, [0.0, 0.01, 0.3])
    assert res.min_norm is not None and res.min_norm.shape == (x.shape[0],)
    # at a budget >= the needed norm the clipped perturbation is the whole perturbation
    full = res.linf[2]
    assert torch.allclose(full, torch.minimum(res.min_norm, torch.tensor(0.3, dtype=torch.float64)), atol=1e-6)
    assert (res.linf[1] <= 0.01 + 1e-7).all() and (res.flips[0] == 0).all()


def test_conformance_catches_a_broken_attack() -> None:
    """The checks can fail: an attack that ignores its budget is caught."""

    class Overshoot(NoiseSign):
        def run(self, batch: Batch, budgets: list[float]) -> torch.Tensor:
            return torch.stack([(batch.x + 2 * e + 0.01).clamp(0, 1) for e in budgets])

    ATTACKS.register("overshoot")(Overshoot)
    try:
        with pytest.raises(AssertionError, match="budget_bounds_finite"):
            check_attack("overshoot", norms=("linf",))
    finally:
        ATTACKS.unregister("overshoot")


def test_spec_strings_parameters_and_canonical_form() -> None:
    assert str(parse_attack("slam:0.5")) == "slam" == str(parse_attack("slam:q=0.5"))
    assert str(parse_attack("slam:q=0.3")) == "slam:0.3"
    assert str(parse_attack("class:0")) == "class:0"
    assert str(parse_attack("class:0.5,depth=2")) == "class:0.5,depth=2"
    assert parse_attack("class:0.5,depth=2").label == "CLASS(γ=0.5, d=2)"
    with pytest.raises(LabelflipError, match=r"'detph'.*Did you mean 'depth'"):
        parse_attack("class:0.5,detph=2")
    with pytest.raises(LabelflipError, match="'gamma'"):
        parse_attack("class:gamma=yes")
    with pytest.raises(LabelflipError, match="Did you mean 'linear'"):
        parse_attack("lineat")
    with pytest.raises(LabelflipError, match="already registered"):
        ATTACKS.register("bce")(NoiseSign)


def test_generic_registry_and_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("a-b", params=[Param("n", int, REQUIRED)])(lambda n: ("built", n))
    assert reg.list("a*") == ["a-b"] and reg.create("a-b:3") == ("built", 3)
    # a third-party package registers an attack through the labelflip.plugins entry-point group
    module = types.ModuleType("fake_labelflip_plugin")

    def setup() -> None:
        ATTACKS.register("plugin-attack")(NoiseSign)

    module.setup = setup
    monkeypatch.setitem(sys.modules, "fake_labelflip_plugin", module)
    ep = importlib.metadata.EntryPoint("fake", "fake_labelflip_plugin:setup", "labelflip.plugins")
    broken = importlib.metadata.EntryPoint("broken", "no_such_module_xyz:setup", "labelflip.plugins")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [ep, broken])
    try:
        assert load_plugins(force=True) == ["fake"]  # the broken one is logged and skipped
        assert "plugin-attack" in list_attacks()
    finally:
        ATTACKS.unregister("plugin-attack")

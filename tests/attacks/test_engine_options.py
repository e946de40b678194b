"""Conformance: every attack configuration must pass these (brief: budget never exceeded, output in bounds,
no NaN, zero budget -> zero flips, batch-size invariance, seed determinism, model mode restored)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from labelflip.attacks import MIFGSM
from labelflip.losses import SLAMLoss
from labelflip.models import MultiLabelModel, check_model
from tests.helpers import TinyCNN, make_inputs

BUDGETS_LINF = [0.0, 0.003, 0.02, 0.05]
BUDGETS_L2 = [0.0, 0.05, 0.2, 0.5]

CONFIGS: dict[str, Callable[[MultiLabelModel], MIFGSM]] = {
    "linf-bce": lambda m: MIFGSM(m, "bce", return_adv=True),
    "linf-linear": lambda m: MIFGSM(m, "linear", return_adv=True),
    "linf-slam": lambda m: MIFGSM(m, SLAMLoss(coefficients=[0.0, 100.0], eps_max=0.04), return_adv=True),
    "linf-hinge": lambda m: MIFGSM(m, "hinge", return_adv=True),
    "linf-mse": lambda m: MIFGSM(m, "mse", return_adv=True),
    "linf-bce-clipstep": lambda m: MIFGSM(m, "bce", clip="step", return_adv=True),
    "linf-bce-mu0.5": lambda m: MIFGSM(m, "bce", mu=0.5, return_adv=True),
    "l2-bce": lambda m: MIFGSM(m, "bce", norm="l2", return_adv=True),
    "l2-linear-clipstep": lambda m: MIFGSM(m, "linear", norm="l2", clip="step", return_adv=True),
}


def _budgets(name: str) -> list[float]:
    return BUDGETS_L2 if name.startswith("l2") else BUDGETS_LINF


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def setup(config: str) -> tuple[str, MultiLabelModel, torch.Tensor]:
    return config, MultiLabelModel(TinyCNN(k=8, seed=4)), make_inputs(6, seed=5)


def test_budget_never_exceeded_and_in_bounds(setup) -> None:
    name, model, x = setup
    budgets = _budgets(name)
    res = CONFIGS[name](model)(x, budgets)
    for b, eps in enumerate(budgets):
        achieved = res.l2[b] if name.startswith("l2") else res.linf[b]
        assert float(achieved.max()) <= eps * (1 + 1e-6) + 1e-6, (name, eps, float(achieved.max()))
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert torch.isfinite(res.adv_probs).all() and torch.isfinite(res.x_adv).all()
    assert torch.isfinite(res.linf).all() and torch.isfinite(res.l2).all()
    assert res.flips.shape == (len(budgets), x.shape[0])
    assert torch.equal(res.flips, res.flips_up + res.flips_down)


def test_zero_budget_gives_zero_flips(setup) -> None:
    name, model, x = setup
    res = CONFIGS[name](model)(x, 0.0)
    assert res.steps.tolist() == [0]
    assert res.flips.sum() == 0
    assert torch.equal(res.x_adv[0], x)


def test_attacks_do_flip_labels(setup) -> None:
    """Guards the suite against a no-op attack passing every other check."""
    name, model, x = setup
    res = CONFIGS[name](model)(x, _budgets(name)[-1])
    assert res.flips.sum() > 0


def test_batch_size_invariance(setup) -> None:
    """Per-sample normalisation decouples samples. Conv outputs may differ in the last float bits with the
    batch size; sign steps absorb that (bit-identical iterates in practice), continuous steps (L2, mu < 1
    accumulation) may carry it, so iterates must agree to float precision and flips exactly."""
    name, model, x = setup
    full = CONFIGS[name](model)(x, _budgets(name))
    attack = CONFIGS[name](model)
    attack.batch_size = 2
    chunked = attack(x, _budgets(name))
    one_by_one = torch.cat([CONFIGS[name](model)(x[i : i + 1], _budgets(name)).x_adv for i in range(3)], 1)
    assert torch.allclose(full.x_adv, chunked.x_adv, atol=1e-5, rtol=0)
    assert torch.allclose(full.x_adv[:, :3], one_by_one, atol=1e-5, rtol=0)
    assert torch.equal(full.flips, chunked.flips)
    assert torch.allclose(full.adv_probs, chunked.adv_probs, atol=1e-5, rtol=0)
    if name in ("linf-bce", "linf-linear"):
        assert torch.equal(full.x_adv[:, :3], one_by_one)


def test_determinism_and_no_global_rng_use(setup) -> None:
    name, model, x = setup
    cpu_state = torch.get_rng_state()
    a = CONFIGS[name](model)(x, _budgets(name))
    b = CONFIGS[name](model)(x, _budgets(name))
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.adv_probs, b.adv_probs)


def test_model_mode_restored_and_eval_used(setup) -> None:
    name, model, x = setup
    net = model.module
    net.train()
    net.features[1].eval()  # a mixed-mode model: each submodule's flag must come back as it was
    modes_during: list[bool] = []
    handle = net.drop.register_forward_pre_hook(lambda mod, inp: modes_during.append(mod.training))
    res = CONFIGS[name](model)(x, _budgets(name)[:2])
    handle.remove()
    assert modes_during and not any(modes_during)  # dropout was in eval mode throughout
    assert net.training and net.drop.training and not net.features[1].training
    assert res.flips[0].sum() == 0


def test_model_mode_restored_on_error(setup) -> None:
    name, model, x = setup
    net = model.module
    net.train()
    check_model(model, x)  # run the one-off checks before we sabotage the forward pass

    def boom(mod, inp):
        raise RuntimeError("boom")

    handle = net.head.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        CONFIGS[name](model)(x, 0.01)
    handle.remove()
    assert net.training and net.drop.training


def test_parameters_get_no_gradients(setup) -> None:
    name, model, x = setup
    CONFIGS[name](model)(x, _budgets(name)[-1])
    assert all(p.grad is None for p in model.module.parameters())

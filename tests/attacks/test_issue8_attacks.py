"""Issue 8 in the attacks and losses: zero-gradient freeze (item 5), the authors' BCE and the bounds-only final
clamp (items 11-12), profiles checked against the model (items 1, 8), gamma search as a method (item 14), and
bad models (meta device, 0-255 mean/std)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from labelflip._validation import LabelflipError
from labelflip.analysis import Correlations, Profile
from labelflip.attacks import (
    MIFGSM,
    ClassAttack,
    RandomSubsetAttack,
    SLAMAttack,
    Trajectory,
    create_attack,
    parse_attack,
    search_gamma,
)
from labelflip.losses import BCELoss, HingeLoss, SLAMLoss, create_loss
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def _profile(k: int = 8, **changes) -> Profile:
    base = Profile(
        coefficients=[0.0, 300.0],
        eps=[0.0, 0.01, 0.02],
        flips=[0.0, 3.0, 6.0],
        flips_bce=[0.0, 3.0, 6.0],
        flips_linear=[],
        eps_max=0.02,
        order=1,
        interval=10,
        alpha=1 / 2560,
        curve="bce",
        norm="linf",
        rel_tol=0.01,
        num_labels=k,
        num_samples=4,
        stop_reason="converged",
        max_steps=2000,
    )
    return dataclasses.replace(base, **changes)


def _corr(k: int = 8) -> Correlations:
    return Correlations(flipup=torch.rand(k, k, generator=torch.Generator().manual_seed(0)).double(), eps=0.005,
                        num_samples=4)  # fmt: skip


@pytest.fixture
def model8() -> MultiLabelModel:
    return MultiLabelModel(TinyCNN(k=8, seed=2))


# ----------------------------------------------------------------------------- item 5: zero gradient freezes
def test_zero_gradient_freezes_the_sample_momentum_included(model8: MultiLabelModel) -> None:
    """Weighted hinge on one label per sample: once it crossed 0.5 the loss gradient is exactly zero; the sample
    must not move again (the old engine kept stepping along the accumulated momentum)."""
    x = make_inputs(6, seed=4)
    model8.eval()  # the trajectory itself does not switch modes (attacks do); dropout must be off
    with torch.no_grad():
        probs = model8(x).sigmoid()
    target = (~(probs > 0.5)).float()
    weights = torch.zeros_like(target)
    weights[torch.arange(6), (probs - 0.5).abs().argmin(1)] = 1.0  # attack each sample's closest label only
    traj = Trajectory(model8, HingeLoss(), x, target, weights=weights)
    frozen_at: dict[int, torch.Tensor] = {}
    for _ in range(120):
        grad = traj.gradient()
        for i in range(x.shape[0]):
            if i not in frozen_at and not bool(grad[i].any()):
                frozen_at[i] = traj.x[i].clone()
        traj.step()
    assert frozen_at, "no sample reached a zero hinge gradient: the test needs a case that does"
    for i, x_frozen in frozen_at.items():
        assert torch.equal(traj.x[i], x_frozen), f"sample {i} kept moving after its gradient became zero"
        assert bool(traj.frozen[i])
    # a sample whose gradient never vanished keeps moving as before (not frozen)
    assert not bool(traj.frozen[[i for i in range(x.shape[0]) if i not in frozen_at]].any())


def test_all_zero_weights_never_move_and_never_nan(model8: MultiLabelModel) -> None:
    x = make_inputs(3, seed=5)
    attack = MIFGSM(model8, "bce", return_adv=True)
    res = attack(x, 0.02, weights=torch.zeros(3, 8))
    assert torch.equal(res.x_adv[0], x) and int(res.flips.sum()) == 0


# ----------------------------------------------------------------------------- item 11: the authors' BCE
def test_authors_bce_has_zero_gradient_once_sigmoid_rounds_to_one() -> None:
    logits = torch.tensor([[20.0, -45.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 0.0]])  # the two saturated labels point the wrong way
    (g_stable,) = torch.autograd.grad(BCELoss()(logits, target).sum(), logits)
    (g_authors,) = torch.autograd.grad(BCELoss("authors")(logits, target).sum(), logits)
    assert g_stable[0, 0] > 0.99 and g_stable[0, 1] < -0.99  # stable BCE keeps pushing saturated labels
    assert g_authors[0, 0] == 0.0  # sigmoid(20) == 1 in float32: zero gradient, as torch.nn.BCELoss on P
    assert abs(float(g_authors[0, 1])) < 1e-6  # log clamped at -100: vanishing
    assert torch.allclose(g_authors[0, 2], g_stable[0, 2])  # unsaturated: the same loss
    expected = nn.BCELoss(reduction="none")(torch.sigmoid(logits), target)
    assert torch.equal(BCELoss("authors")(logits, target), expected.sum(1))
    assert create_loss("bce:formulation=authors").formulation == "authors"
    with pytest.raises(LabelflipError, match="formulation"):
        BCELoss("exact")


def test_bce_formulation_engine_option_reaches_bce_and_slam(model8: MultiLabelModel) -> None:
    assert MIFGSM(model8, "bce", bce_formulation="authors").loss.formulation == "authors"
    slam = SLAMAttack(model8, _profile(), bce_formulation="authors")
    assert isinstance(slam.loss, SLAMLoss) and slam.loss.formulation == "authors"
    sub = RandomSubsetAttack(model8, _profile(), bce_formulation="authors")
    assert sub.engine.loss.formulation == "authors"


# ----------------------------------------------------------------------------- item 12: clip="bounds"
def test_bounds_only_final_clamp_differs_from_the_box_by_float_drift_only(model8: MultiLabelModel) -> None:
    x = make_inputs(6, seed=6)
    eps = 40 / 2560  # an exact multiple of alpha, as most paper budgets
    final = MIFGSM(model8, "bce", return_adv=True)(x, eps).x_adv[0]
    bounds = MIFGSM(model8, "bce", clip="bounds", return_adv=True)(x, eps).x_adv[0]
    with model8.eval_mode():
        target = (~(model8(x).sigmoid() > 0.5)).float()
        traj = MIFGSM(model8, "bce").trajectory(x, target=target).run_to(40)
    assert torch.equal(bounds, traj.x.clamp(0, 1))  # the authors' final step: a clamp to the bounds only
    assert float((bounds - final).abs().max()) <= 2e-6


# ----------------------------------------------------------------------------- items 1, 8: profiles checked
def test_capped_profile_is_refused_unless_accepted(model8: MultiLabelModel) -> None:
    capped = _profile(stop_reason="cap")
    for build in (
        lambda p: SLAMLoss(profile=p),
        lambda p: SLAMAttack(model8, p),
        lambda p: RandomSubsetAttack(model8, p),
        lambda p: ClassAttack(model8, p, _corr()),
    ):
        with pytest.raises(LabelflipError, match=r"stopped at its cap.*max_steps=2000.*accept_cap"):
            build(capped)
        build(capped.accept_cap())  # knowingly accepted
    with pytest.raises(LabelflipError, match="cap"):
        capped.budgets()
    assert len(capped.accept_cap().budgets()) == 7


@pytest.mark.parametrize("method", ["slam", "random", "class:0.5"])
def test_profile_of_another_model_size_is_refused(model8: MultiLabelModel, method: str) -> None:
    """A K=5 profile must not drive SLAM's p or the subset length on a K=8 model (it ran silently before)."""
    attack = create_attack(method, model8, profile=_profile(k=5), correlations=_corr(8))
    with pytest.raises(LabelflipError, match=r"K = 8.*K = 5"):
        attack(make_inputs(3), [0.005, 0.01])


def test_profile_of_another_norm_is_refused(model8: MultiLabelModel) -> None:
    for method in ("slam", "random", "class:0"):
        with pytest.raises(LabelflipError, match=r"norm='linf'.*l2 profile"):
            create_attack(method, model8, profile=_profile(norm="l2"), correlations=_corr())


def test_correlations_of_another_model_size_are_refused(model8: MultiLabelModel) -> None:
    attack = ClassAttack(model8, _profile(), _corr(5), gamma=0.5)
    with pytest.raises(LabelflipError, match=r"correlations.*8x8"):
        attack(make_inputs(3), [0.01])


# ----------------------------------------------------------------------------- item 14: class-auto
def test_class_auto_chooses_gamma_on_heldout_and_reports_it(model8: MultiLabelModel) -> None:
    heldout, x = make_inputs(5, seed=11), make_inputs(4, seed=12)
    budgets = [0.004, 0.02]
    spec = parse_attack("class-auto")
    assert spec.label == "CLASS(γ=auto)" and parse_attack("class-raw-auto").label == "CLASS(γ=auto, raw Z)"
    with pytest.raises(LabelflipError, match="heldout"):
        create_attack(spec, model8, profile=_profile(), correlations=_corr())
    attack = create_attack(spec, model8, profile=_profile(), correlations=_corr(), heldout=heldout)
    res = attack(x, budgets)
    best, totals = search_gamma(model8, heldout, budgets, _profile(), _corr())
    assert res.extra["gamma"] == best and res.extra["gamma_totals"] == totals
    assert sorted(totals) == [round(0.05 * i, 2) for i in range(21)]
    assert totals[best] == max(totals.values())
    fixed = ClassAttack(model8, _profile(), _corr(), gamma=best)(x, budgets)
    assert torch.equal(res.flips, fixed.flips)  # then plain CLASS with the chosen gamma


# ----------------------------------------------------------------------------- bad models
def test_model_on_meta_device_is_a_clear_error() -> None:
    meta = MultiLabelModel(TinyCNN(k=8).to("meta"))
    with pytest.raises(LabelflipError, match=r"'model'.*meta.*to_empty"):
        MIFGSM(meta)(make_inputs(2), 0.01)


def test_mean_std_in_0_255_units_are_refused() -> None:
    with pytest.raises(LabelflipError, match="0-255"):
        MultiLabelModel(TinyCNN(), mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4])
    MultiLabelModel(TinyCNN(), mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4], bounds=(0, 255))
    MultiLabelModel(TinyCNN(), mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

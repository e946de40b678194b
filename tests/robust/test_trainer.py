"""Regularised training: each regulariser trains a tiny model for a few epochs and moves what it should (nuclear
norm lowers the singular values, ARM-SAE lowers SAE, ...), early stopping, progress, cached checkpoints, the
image path, and the clean / attacked F1 evaluation."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from labelflip import LabelflipError
from labelflip.data import DatasetSplits, MultiLabelData, TabularConfig, make_tabular
from labelflip.estimators import sae
from labelflip.metrics import f1_scores
from labelflip.models.architectures import ARCHITECTURES
from labelflip.robust import (
    RobustTrainConfig,
    choose_budgets,
    create_regulariser,
    evaluate_robustness,
    last_linear_weight,
    load_trained,
    tabular_model,
    train_robust,
)
from tests.helpers import TinyCNN, make_inputs


@functools.lru_cache(maxsize=1)
def _data() -> DatasetSplits:
    return make_tabular(TabularConfig(n=300, num_features=10, num_labels=5, correlation=0.8, seed=1))


def _train(reg: str, **kw) -> torch.nn.Module:
    config = RobustTrainConfig(epochs=6, batch_size=50, lr=0.05, loss="logistic", regulariser=reg, monitor="last", **kw)
    return train_robust("linear_multilabel", _data(), config).module


def _own_penalty(reg: str, module: torch.nn.Module) -> float:
    """The regulariser's own R (per unit lambda) on the training data."""
    r = create_regulariser(reg)
    x = _data().train.x.clone().requires_grad_(r.needs_input_grad)
    value = r.penalty(module, x, module(x), _data().train.y)
    return value.item() / r.lam


@functools.lru_cache(maxsize=1)
def _baseline() -> torch.nn.Module:
    return _train("none")


@pytest.mark.parametrize(
    "reg", ["l2:0.5", "nuclear:0.5,mode=subgradient", "arm-primal:0.5", "arm-sae:0.5", "arm-single:0.5"]
)
def test_each_regulariser_lowers_its_own_quantity(reg: str) -> None:
    assert _own_penalty(reg, _train(reg)) < 0.9 * _own_penalty(reg, _baseline())


def test_nuclear_prox_lowers_singular_values_and_arm_sae_lowers_sae() -> None:
    base = torch.linalg.svdvals(last_linear_weight(_baseline()).detach())
    prox = torch.linalg.svdvals(last_linear_weight(_train("nuclear:2.0")).detach())
    assert prox.sum() < 0.8 * base.sum() and (prox < 1e-6).any()  # the prox step zeroes the small ones
    x = _data().test.x
    assert sae(tabular_model(_train("arm-sae:2.0")), x).mean() < 0.5 * sae(tabular_model(_baseline()), x).mean()


def test_early_stopping_progress_and_rng(tmp_path: Path) -> None:
    seen: list[dict] = []
    state = torch.random.get_rng_state()
    config = RobustTrainConfig(epochs=60, batch_size=50, lr=0.5, patience=2, monitor="loss")
    trained = train_robust("linear_multilabel", _data(), config, progress=seen.append)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched
    assert len(seen) == len(trained.history) < 60 and seen[-1]["stopped"]
    assert trained.best_epoch == len(seen) - 2
    assert {"epoch", "loss", "penalty", "val_micro_f1", "seconds"} <= set(seen[0])
    assert 0 <= trained.metrics["test_micro_f1"] <= 1 and not trained.module.training


def test_checkpoints_are_cached_by_fingerprint(tmp_path: Path) -> None:
    config = RobustTrainConfig(epochs=2, batch_size=50, regulariser="l2:0.01")
    first = train_robust("linear_multilabel", _data(), config, checkpoint_dir=tmp_path)
    assert first.path is not None and first.path.suffix == ".safetensors" and not first.cached
    again = train_robust("linear_multilabel", _data(), config, checkpoint_dir=tmp_path)
    assert again.cached and again.fingerprint == first.fingerprint
    assert torch.equal(again.module.linear.weight, first.module.linear.weight)
    other = train_robust(
        "linear_multilabel", _data(), RobustTrainConfig(epochs=2, batch_size=50), checkpoint_dir=tmp_path
    )
    assert other.fingerprint != first.fingerprint and not other.cached
    loaded = load_trained(first.path)
    assert loaded.metrics == first.metrics and loaded.model.bounds == first.model.bounds


def test_image_path_trains_with_arm_sae() -> None:
    ARCHITECTURES.add("tiny_test_cnn", lambda k: TinyCNN(k=k), override=True)
    try:
        gen = torch.Generator().manual_seed(0)
        parts = [
            MultiLabelData(make_inputs(16, seed=s), (torch.rand(16, 4, generator=gen) < 0.4).float()) for s in (1, 2, 3)
        ]
        splits = DatasetSplits(*parts, config={"kind": "test-images"}, label_names=parts[0].label_names)
        config = RobustTrainConfig(epochs=2, batch_size=8, loss="asl", regulariser="arm-sae:0.1", reg_samples=4)
        trained = train_robust("tiny_test_cnn", splits, config)
        assert all(h["penalty"] > 0 for h in trained.history) and trained.model.bounds == (0.0, 1.0)
    finally:
        ARCHITECTURES.unregister("tiny_test_cnn")


def test_evaluate_robustness() -> None:
    module = _baseline()
    test = _data().test
    zero = evaluate_robustness(module, test, [0.0, 1.0], attack="gase")
    with torch.no_grad():
        micro, macro = f1_scores(module(test.x) > 0, test.y)
    assert zero.clean_micro_f1 == pytest.approx(micro) and zero.clean_macro_f1 == pytest.approx(macro)
    assert zero.micro_f1[0] == pytest.approx(micro) and zero.micro_f1[1] < micro - 0.1
    assert zero.mean_errors[2] > zero.mean_errors[0]
    by_attack = evaluate_robustness(module, test, [1.0], attack="bce", attack_options={"alpha": 0.05})
    assert by_attack.micro_f1[0] < micro and by_attack.micro_f1[0] >= zero.micro_f1[1] - 1e-9  # GASE is stronger
    assert 0.2 <= zero.phi_align <= 1.0


def test_bad_configs_fail_before_training() -> None:
    with pytest.raises(LabelflipError, match="regulariser"):
        RobustTrainConfig(regulariser="arm-sea")
    with pytest.raises(LabelflipError, match="loss"):
        RobustTrainConfig(loss="svm")
    with pytest.raises(LabelflipError, match="arch"):
        train_robust("no_such_arch", _data())
    with pytest.raises(LabelflipError, match="monitor"):
        RobustTrainConfig(monitor="f1")


def test_choose_budgets_rule() -> None:
    module, val = _baseline(), _data().val
    small, large = choose_budgets(module, val, grid=[0.1, 0.5, 1.0, 2.0, 4.0])
    assert small == pytest.approx(large / 4)
    at = evaluate_robustness(module, val, [large], attack="gase")
    assert at.micro_f1[0] <= 0.5 * at.clean_micro_f1
    if large > 0.1:  # the previous grid value did not reach the share
        prev = [0.1, 0.5, 1.0, 2.0, 4.0][[0.1, 0.5, 1.0, 2.0, 4.0].index(large) - 1]
        assert evaluate_robustness(module, val, [prev], attack="gase").micro_f1[0] > 0.5 * at.clean_micro_f1

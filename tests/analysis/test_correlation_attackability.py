"""Correlation matrices, per-label attackability, targets-vs-flips, method specs, plots and gamma search."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from labelflip._validation import LabelflipError
from labelflip.analysis import Attackability, Profile, label_attackability, targets_vs_flips
from labelflip.analysis.correlation import (
    Correlations,
    flipdown_matrix,
    flipup_matrix,
    instance_correlation_matrices,
    measure_correlations,
    normalize_flipup,
)
from labelflip.attacks import (
    ALPHA_LINF,
    MIFGSM,
    ClassAttack,
    attack_info,
    closest_subsets,
    create_attack,
    parse_attack,
    search_gamma,
)
from labelflip.models import MultiLabelModel
from labelflip.report.figures import plot_attackability, plot_correlations, plot_profile, plot_targets_vs_flips
from labelflip.report.tables import attackability_markdown, targets_vs_flips_markdown
from tests.helpers import TinyCNN, make_inputs


@pytest.fixture
def lin3() -> MultiLabelModel:
    lin = nn.Linear(4, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.3], [0.2, 1.0, -1.0, 3.0], [-1.0, 0.4, 0.1, -0.2]]))
        lin.bias.copy_(torch.tensor([-0.5, -1.0, 0.2]))
    return MultiLabelModel(lin)


def test_flipup_matrix_by_hand_on_a_linear_model(lin3: MultiLabelModel) -> None:
    """Attacking label j up moves x by n*alpha*sign(W_j) (constant gradient direction, no clamping), so
    row j = mean_i sigmoid(z_i + n alpha W sign(W_j)) - sigmoid(z_i)."""
    x = 0.3 + 0.4 * torch.rand(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = 0.005
    n = math.floor(eps / ALPHA_LINF + 1e-9)
    up = flipup_matrix(lin3, x, eps=eps)
    w, b = lin3.module.weight.detach(), lin3.module.bias.detach()
    z = x @ w.T + b
    for j in range(3):
        zj = (x + n * ALPHA_LINF * torch.sign(w[j])) @ w.T + b
        expected = (torch.sigmoid(zj) - torch.sigmoid(z)).mean(0)
        assert torch.allclose(up[j], expected, atol=1e-12)
    assert (up.diagonal() > 0).all()  # the attacked label always rises


def test_flipup_matrix_equals_one_attack_per_label_and_image(model: MultiLabelModel) -> None:
    """The batched (label, image) rows reproduce Algorithm 1's loops (one attack per label, per image)."""
    x = make_inputs(3, seed=9)
    up = flipup_matrix(model, x, eps=0.01, batch_size=5)  # chunks straddle labels and images
    clean = model.probabilities(x).detach()
    k = clean.shape[1]
    for j in range(k):
        e = torch.zeros(k)
        e[j] = 1
        rows = []
        for i in range(3):
            res = MIFGSM(model, "bce")(x[i : i + 1], 0.01, target=e.unsqueeze(0), weights=e)
            rows.append(res.adv_probs[0, 0] - clean[i])
        assert torch.allclose(up[j].float(), torch.stack(rows).mean(0), atol=1e-6)


def test_normalisation_and_instance_matrices() -> None:
    u = torch.tensor([[0.9, -0.1], [0.05, 0.7]], dtype=torch.float64)
    un = normalize_flipup(u)
    assert torch.allclose(un, (u + 0.1) / 1.0)  # global min-max, diagonal included
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    icm = instance_correlation_matrices(un, target)
    assert torch.allclose(icm[0, 0], un[0]) and torch.allclose(icm[0, 1], 1 - un[1])  # row by label direction
    assert torch.allclose(icm[1, 0], 1 - un[0]) and torch.allclose(icm[1, 1], un[1])


def test_flipdown_matrix_uses_images_with_the_label(lin3: MultiLabelModel) -> None:
    x = 0.3 + 0.4 * torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    down, counts = flipdown_matrix(lin3, x, y, eps=0.005)
    assert counts.tolist() == [3, 3, 0]
    assert torch.isnan(down[2]).all()
    assert (down[:2].diagonal() < 0).all()  # attacked label falls
    _, counts = flipdown_matrix(lin3, x, y, eps=0.005, max_per_label=1)
    assert counts.tolist() == [1, 1, 0]


def test_correlations_round_trip(tmp_path, model: MultiLabelModel) -> None:
    x = make_inputs(3)
    corr = measure_correlations(model, x, eps=0.004, measure_flipdown=True, label_names=list("abcdef"), seed=2)
    back = Correlations.load(corr.save(tmp_path / "c.json"))
    assert torch.equal(back.flipup, corr.flipup.double())
    assert torch.equal(back.flipdown_measured, corr.flipdown_measured.double())
    assert back.label_names == list("abcdef") and back.eps == 0.004 and back.seed == 2
    with pytest.raises(LabelflipError, match="format"):
        Correlations.from_dict({"format": "nope"})


def test_attackability_by_single_label_attacks(lin3: MultiLabelModel) -> None:
    x = torch.rand(12, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pred = lin3.predict(x)
    y = pred.clone().double()
    y[0] = 1 - y[0]  # image 0: ground truth disagrees with the prediction -> never eligible
    att = label_attackability(lin3, x, y, eps=0.05, n_per_label=4, frequency=[0.5, 0.2, 0.1])
    for j in range(3):
        for direction, want in (("up", False), ("down", True)):
            imgs = [i for i in range(1, 12) if bool(pred[i, j]) == want and bool(y[i, j]) == want][:4]
            flips, confs = [], []
            for i in imgs:
                e = torch.zeros(3, dtype=torch.float64)
                e[j] = 1
                res = MIFGSM(lin3, "bce")(x[i : i + 1], 0.05, weights=e)
                flips.append(float(res.adv_pred[0, 0, j] != res.clean_pred[0, j]))
                confs.append(float(res.clean_probs[0, j]))
            ratio = getattr(att, f"{direction}_ratio")[j]
            assert getattr(att, f"{direction}_samples")[j] == len(imgs)
            if imgs:
                assert math.isclose(ratio, np.mean(flips))
                assert math.isclose(getattr(att, f"{direction}_confidence")[j], np.mean(confs), rel_tol=1e-6)
            else:
                assert math.isnan(ratio)


def test_attackability_statistics_match_scipy(tmp_path) -> None:
    rng = np.random.default_rng(0)
    k = 12
    att = Attackability(
        eps=0.01,
        label_names=[str(i) for i in range(k)],
        up_ratio=rng.uniform(size=k).tolist(),
        up_samples=[10] * k,
        up_confidence=rng.uniform(size=k).tolist(),
        down_ratio=rng.uniform(size=k).tolist(),
        down_samples=[10] * k,
        down_confidence=rng.uniform(size=k).tolist(),
        frequency=rng.uniform(size=k).tolist(),
    )
    c = att.correlations()
    ref = stats.pearsonr(att.up_ratio, att.up_confidence)
    assert math.isclose(c["up"]["RxC"].pearson, ref.statistic) and math.isclose(c["up"]["RxC"].pearson_p, ref.pvalue)
    ref = stats.spearmanr(att.frequency, att.down_ratio)
    assert math.isclose(c["down"]["FxR"].spearman, ref.statistic)
    assert math.isclose(c["down"]["FxR"].spearman_p, ref.pvalue)
    mark = c["up"]["RxC"].mark()
    assert mark.endswith("*") == (c["up"]["RxC"].pearson_p >= 0.05)
    assert "attackability vs confidence" in attackability_markdown(att)
    assert Attackability.load(att.save(tmp_path / "a.json")) == att


def test_targets_vs_flips(model: MultiLabelModel, x: torch.Tensor) -> None:
    budgets = [0.01, 0.03]
    tvf = targets_vs_flips(model, x, budgets, [0, 2, 6])
    assert tvf.mean_flips[0][0] == 0.0 and tvf.mean_flips[1][0] == 0.0  # no targets: no move
    full = MIFGSM(model, "bce")(x, budgets)
    assert np.allclose([row[2] for row in tvf.mean_flips], full.mean_flips().numpy())  # n = K: the baseline
    two = MIFGSM(model, "bce")(x, budgets, weights=closest_subsets(model.probabilities(x).detach(), 2))
    assert np.allclose([row[1] for row in tvf.mean_flips], two.mean_flips().numpy())
    _, f_opt = tvf.optimum(1)
    assert f_opt == max(tvf.mean_flips[1])
    assert "t_opt" in targets_vs_flips_markdown(tvf)


def test_method_specs() -> None:
    assert parse_attack("CLASS:0.5").label == "CLASS(γ=0.5)"
    assert parse_attack("class-raw:0").label == "CLASS(γ=0, raw Z)"
    assert parse_attack("slam").label == "SLAM" and parse_attack("slam:0.25").label == "SLAM(q=0.25)"
    assert parse_attack("top-n:5").label == "Top-5"
    assert attack_info("random")["requires"] == {"profile"} and attack_info("random")["stochastic"]
    assert attack_info("class:0")["requires"] == {"profile", "correlations"}
    for bad, param in [
        ("class", "gamma"),
        ("class:2", "gamma"),
        ("top-n:-1", "n"),
        ("bce:1", "parameters"),
        ("slamm", "attack"),
        ("slam:3", "q"),
    ]:
        with pytest.raises(LabelflipError, match=f"'{param}'"):
            parse_attack(bad)
    with pytest.raises(LabelflipError, match="profile"):
        create_attack("slam", MultiLabelModel(TinyCNN()))


@pytest.fixture
def prof() -> Profile:
    return Profile(
        coefficients=[0.0, 150.0],
        eps=[0.0, 0.02, 0.04],
        flips=[0.0, 3.0, 6.0],
        flips_bce=[0.0, 3.0, 6.0],
        flips_linear=[0.0, 2.0, 5.0],
        eps_max=0.04,
        order=1,
        interval=10,
        alpha=ALPHA_LINF,
        curve="max",
        norm="linf",
        rel_tol=0.01,
        num_labels=6,
        num_samples=6,
        stop_reason="converged",
    )


def test_gamma_search(model: MultiLabelModel, x: torch.Tensor, prof: Profile) -> None:
    corr = Correlations(flipup=torch.rand(6, 6, generator=torch.Generator().manual_seed(3)), eps=0.005, num_samples=5)
    best, totals = search_gamma(model, x, [0.01, 0.02], prof, corr, gammas=[0.0, 0.5, 1.0])
    assert set(totals) == {0.0, 0.5, 1.0} and totals[best] == max(totals.values())
    direct = ClassAttack(model, prof, corr, gamma=0.5)(x, [0.01, 0.02]).mean_flips().sum()
    assert math.isclose(totals[0.5], float(direct))
    _, default = search_gamma(model, x[:2], [0.01], prof, corr)
    assert sorted(default) == [round(0.05 * i, 2) for i in range(21)]


def test_plots_write_pngs(tmp_path, model: MultiLabelModel, x: torch.Tensor, prof: Profile) -> None:
    corr = measure_correlations(model, x[:2], eps=0.004, measure_flipdown=True)
    att = label_attackability(model, x, torch.ones(5, 6), eps=0.01, n_per_label=2)
    tvf = targets_vs_flips(model, x, [0.01], [0, 3, 6])
    paths = [
        plot_profile(prof, tmp_path / "p.png"),
        plot_correlations(corr, tmp_path / "c.png", cooccurrence=torch.eye(6)),
        plot_attackability(att, tmp_path / "a.png"),
        plot_targets_vs_flips(tvf, tmp_path / "t.svg"),
    ]
    for p in paths[:3]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[3].read_text().lstrip().startswith("<?xml")


def test_identical_per_budget_weights_share_a_trajectory_exactly(model: MultiLabelModel, x: torch.Tensor) -> None:
    w = torch.zeros(3, x.shape[0], 6)
    w[0, :, :3] = 1
    w[1, :, 3:] = 1
    w[2, :, :3] = 1
    res = MIFGSM(model, "bce", return_adv=True)(x, [0.01, 0.02, 0.03], weights=w)
    for b, eps in enumerate([0.01, 0.02, 0.03]):
        alone = MIFGSM(model, "bce", return_adv=True)(x, eps, weights=w[b])
        assert torch.equal(res.x_adv[b], alone.x_adv[0])

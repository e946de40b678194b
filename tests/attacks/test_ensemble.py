"""The worst-case ensemble (labelflip/attacks/ensemble.py): its worst case dominates every member on every sample,
later members skip what is done, the pass accounting, and what it refuses.

The protocol-level guarantees (budget, bounds, determinism, batch-size invariance, modes) are checked for every
registered attack by tests/attacks/test_conformance.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labelflip._validation import LabelflipError
from labelflip.analysis.correlation import Correlations
from labelflip.attacks import attack_info, create_attack
from labelflip.attacks.ensemble import MEMBERS, WorstCaseEnsemble, win_counts
from labelflip.estimate import PolynomialEstimate
from labelflip.models import MultiLabelModel
from labelflip.testing import factory_for, make_inputs, make_model

BUDGETS = [0.0, 0.01, 0.03]


@pytest.fixture(scope="module")
def runs() -> tuple[object, dict[str, object]]:
    """The ensemble and each member run alone on the same tiny model, samples and budgets (L-inf)."""
    model, x = make_model(), make_inputs(5)
    ensemble = factory_for("worst-case")(model)(x, BUDGETS)
    members = {spec: factory_for(spec)(model)(x, BUDGETS) for spec in MEMBERS}
    return ensemble, members


def test_worst_case_is_at_least_every_member_on_every_sample(runs) -> None:
    ensemble, members = runs
    for spec, res in members.items():
        assert (ensemble.flips >= res.flips).all(), f"{spec} beats the worst case on some sample"
    best = torch.stack([res.flips for res in members.values()]).amax(dim=0)
    assert torch.equal(ensemble.flips, best)  # deterministic members: the worst case is exactly their maximum
    assert int(ensemble.flips[-1].sum()) > 0 and int(ensemble.flips[0].sum()) == 0


def test_winner_is_the_first_member_reaching_the_worst_case(runs) -> None:
    ensemble, members = runs
    flips = [members[spec].flips for spec in MEMBERS]
    winner = torch.tensor(ensemble.extra["winner"])
    assert winner.shape == ensemble.flips.shape
    for b in range(len(BUDGETS)):
        for i in range(ensemble.flips.shape[1]):
            w, worst = int(winner[b, i]), int(ensemble.flips[b, i])
            if w < 0:
                assert worst == 0 and all(int(f[b, i]) == 0 for f in flips)
                continue
            assert int(flips[w][b, i]) == worst
            assert all(int(f[b, i]) < worst for f in flips[:w]), "a cheaper member already had it"
    for b, counts in enumerate(ensemble.extra["wins"]):
        assert counts == win_counts(ensemble.extra["winner"][b], ensemble.extra["members"])
        assert sum(counts.values()) == ensemble.flips.shape[1]


def test_cost_accounting_in_bce_runs(runs) -> None:
    ensemble, members = runs
    extra = ensemble.extra
    n, steps = ensemble.flips.shape[1], members["bce"].steps.max().item()  # n_max = floor(0.03 * 2560) = 76
    assert extra["bce_reference_passes"] == n * steps
    assert extra["passes"][0] == n * steps  # BCE ran on every sample: one trajectory to n_max
    assert extra["cost_multiple"] == pytest.approx(sum(extra["passes"]) / (n * steps))
    assert extra["cost_multiple"] > 1.0 and len(extra["member_seconds"]) == len(MEMBERS)
    assert extra["members"] == ["BCE", "Linear", "MaxFlip", "SLAM", "CLASS(γ=0)", "ML-DeepFool"]


def test_chunks_merge_into_the_same_record(runs) -> None:
    ensemble, _ = runs
    attack = factory_for("worst-case")(make_model())
    attack.batch_size = 2
    chunked = attack(make_inputs(5), BUDGETS)
    assert torch.equal(chunked.flips, ensemble.flips)
    for key in ("winner", "wins", "runs", "samples_run", "passes", "forward_passes", "scoring_forwards"):
        assert chunked.extra[key] == ensemble.extra[key], key
    assert chunked.extra["cost_multiple"] == pytest.approx(ensemble.extra["cost_multiple"])


class _Spy:
    """Records every (member, sample ids, budgets) the ensemble runs."""

    def __init__(self, attack: WorstCaseEnsemble) -> None:
        self.calls: list[tuple[int, list[int], list[float]]] = []
        for m, member in enumerate(attack.members):
            original = member._run_batch

            def wrapped(batch, budgets, _m=m, _orig=original):
                self.calls.append((_m, batch.sample_ids.tolist(), list(budgets)))
                return _orig(batch, budgets)

            member._run_batch = wrapped  # type: ignore[method-assign]


def _easy_model() -> MultiLabelModel:
    """Two labels on 16-D inputs that one direction flips together: logit_0 = 5 (s + 0.1), logit_1 = -4 (s + 0.1)
    with s = sum(x - 0.5), so both cross their threshold at s = -0.1; an L-inf budget 0.03 moves s by up to 0.48,
    enough to flip both labels of every sample below (|s| <= 0.16)."""
    net = nn.Linear(16, 2)
    with torch.no_grad():
        net.weight.copy_(torch.stack([torch.full((16,), 5.0), torch.full((16,), -4.0)]))
        net.bias.copy_(torch.tensor([0.5 - 40.0, -0.4 + 32.0]))
    return MultiLabelModel(net)


def test_later_members_skip_done_samples_and_zero_budgets() -> None:
    model = _easy_model()
    x = 0.5 + 0.01 * (2 * torch.rand(5, 16, generator=torch.Generator().manual_seed(0)) - 1)
    profile = PolynomialEstimate((0.0, 40.0), 0.05)
    corr = Correlations(flipup=torch.full((2, 2), 0.5, dtype=torch.float64), eps=0.005, num_samples=4)
    attack = WorstCaseEnsemble(model, profile, corr)
    spy = _Spy(attack)
    with torch.no_grad():
        clean = torch.sigmoid(model(x)) > 0.5
    target = (~clean).float()
    target[0] = clean[0].float()  # sample 0 wants its clean prediction: done before any member runs
    res = attack(x, [0.0, 0.0005, 0.03], target=target)
    assert spy.calls, "nothing ran"
    for m, ids, budgets in spy.calls:
        assert 0.0 not in budgets, "a member ran at a zero budget"
        assert 0 not in ids, "a member ran on a sample that was done from the start"
        if m > 0:
            assert 0.03 not in budgets, f"member {MEMBERS[m]} ran at a budget where BCE had finished every sample"
    assert spy.calls[0][0] == 0 and spy.calls[0][2] == [0.0005, 0.03]  # BCE: both budgets, one run
    assert res.flips[2, 1:].tolist() == [2, 2, 2, 2] and res.extra["winner"][2][1:] == [0, 0, 0, 0]
    runs = [0] * len(MEMBERS)
    for m, ids, budgets in spy.calls:
        runs[m] += len(ids) * len(budgets)
    assert res.extra["runs"] == runs
    assert res.extra["passes"][0] == 4 * 76  # BCE on the 4 open samples, one trajectory to floor(0.03 * 2560)
    linear = [ids for m, ids, _ in spy.calls if m == 1]
    assert res.extra["passes"][1] == sum(map(len, linear))  # only open at 0.0005 (n = 1): one pass per sample
    assert res.extra["bce_reference_passes"] == 5 * 76


def test_plan_groups_samples_by_their_open_budgets() -> None:
    attack = factory_for("worst-case")(make_model())
    open_ = torch.tensor([[True, True, True, False], [True, True, False, False], [True, False, False, False]])
    plan = [(g, s.tolist()) for g, s in attack._plan(attack.members[0], open_)]  # BCE: budgets x samples
    assert plan == [([0, 1, 2], [0]), ([0, 1], [1]), ([0], [2])]  # sample 3 is done everywhere: never run
    plan = [(g, s.tolist()) for g, s in attack._plan(attack.members[-1], open_)]  # ML-DeepFool: budget-free
    assert plan == [([0, 1, 2], [0, 1, 2])]
    assert attack._plan(attack.members[0], torch.zeros(3, 4, dtype=torch.bool)) == []


def test_requires_profile_and_correlations_and_refuses_weights() -> None:
    info = attack_info("worst-case")
    assert info["requires"] == frozenset({"profile", "correlations"}) and not info["stochastic"]
    assert info["kind"] == "fixed-budget" and info["label"] == "Worst case"
    model = make_model()
    with pytest.raises(LabelflipError, match="needs"):
        create_attack("worst-case", model)
    profile = PolynomialEstimate((0.0, 100.0), 0.04)
    with pytest.raises(LabelflipError, match="correlations"):
        WorstCaseEnsemble(model, profile, None)
    attack = factory_for("worst-case")(model)
    with pytest.raises(LabelflipError, match="weights"):
        attack(make_inputs(2), 0.01, weights=torch.ones(8))

"""Stacked eps-dependent trajectories (issue 12 item 2): SLAM's budgets and the subset attacks' distinct subsets run
as one (lanes x samples)-row batch; results equal the per-budget runs, rows stop at their own step counts, and
capping the stacked batch (``max_rows``) changes nothing. Reuse of weight-free trajectories across calls is
bit-identical and keyed on the model's state and the inputs."""

from __future__ import annotations

import pytest
import torch

from labelflip._validation import LabelflipError
from labelflip.attacks import MIFGSM, create_attack
from labelflip.attacks.base import Batch, clean_pass
from labelflip.attacks.mifgsm import CAPTURES, CaptureCache
from labelflip.attacks.trajectory import Lane, StepRule, Trajectory, num_steps, run_lanes
from labelflip.estimate import PolynomialEstimate
from labelflip.losses import create_loss
from labelflip.testing import _correlations, _profile, make_inputs, make_model

#: budgets of the conformance grid and between its points (lanes end at several step counts: 0, 7, 25, 51, 89)
GRID = {"linf": [0.0, 0.003, 0.035, 0.01, 0.02], "l2": [0.0, 0.05, 0.3, 0.2]}


def _attack(spec: str, norm: str = "linf", **options):
    return create_attack(
        spec, make_model(), profile=_profile(), correlations=_correlations(), seed=3, norm=norm, return_adv=True,
        **options,
    )  # fmt: skip


@pytest.mark.parametrize("spec", ["slam", "random", "class:0.5"])
@pytest.mark.parametrize(("norm", "clip"), [("linf", "final"), ("linf", "step"), ("l2", "final")])
def test_stacked_equals_per_budget_runs(spec: str, norm: str, clip: str) -> None:
    """Bit-identical on the tiny model (batch sizes 8 and multiples of 8: its kernels round alike at these sizes)."""
    x = make_inputs(8)
    ref = _attack(spec, norm, clip=clip, stack=False)(x, GRID[norm])
    got = _attack(spec, norm, clip=clip)(x, GRID[norm])  # stacked: the default
    assert ref.flips.sum() > 0  # the comparison is not vacuous
    assert torch.equal(ref.flips, got.flips)
    assert torch.equal(ref.x_adv, got.x_adv)
    assert torch.equal(ref.adv_probs, got.adv_probs)
    assert torch.equal(ref.steps, got.steps)


def test_stacked_runs_one_batch_and_steps_only_the_rows_of_separate_runs() -> None:
    """SLAM over 4 budgets: one stacked batch, whose rows leave at their lane's step count (row-steps = sum n_b * N
    as for separate runs), instead of one batch per budget."""
    model, x = make_model(), make_inputs(8)
    budgets = [0.003, 0.01, 0.02, 0.035]
    attack = create_attack("slam", model, profile=_profile(), stack=True)
    sizes = _forward_sizes(attack, x, budgets)
    steps = [num_steps(e, 1 / 2560) for e in budgets]  # 7, 25, 51, 89
    expected = [8 * sum(s > k for s in steps) for k in range(max(steps))]
    assert sizes == expected
    assert sum(sizes) == 8 * sum(steps)


def _forward_sizes(attack, x: torch.Tensor, budgets: list[float]) -> list[int]:
    """The batch size of every forward pass of ``attack.run`` (the steps; no clean pass, no evaluation)."""
    model = attack.model
    sizes: list[int] = []
    with model.eval_mode():
        probs, pred = clean_pass(model, x)
        batch = Batch(x, probs, pred, (~pred).float(), None, torch.arange(x.shape[0]))
        hook = model.module.register_forward_hook(lambda _m, inputs, _out: sizes.append(inputs[0].shape[0]))
        try:
            attack.run(batch, budgets)
        finally:
            hook.remove()
    return sizes


def test_rows_freeze_at_their_own_step_count() -> None:
    """run_lanes: each lane's capture equals a lone Trajectory run to exactly that lane's step count (not more),
    with its own loss budget, weights and radius; a lane with several captures is checkpointed (prefix)."""
    model, x = make_model(), make_inputs(6)
    loss = create_loss("slam", profile=_profile())
    target = 1 - model.predict(x).float()
    rule = StepRule()
    w = (torch.arange(8) % 2).float().expand(6, 8)
    lanes = [
        Lane(((30, 0.02),), None, 0.02),
        Lane(((3, 0.003),), w, 0.003),
        Lane(((0, 0.0),), None, 0.0),
        Lane(((12, 0.005), (20, 0.008)), w, 0.008),
    ]
    with model.eval_mode():
        out = run_lanes(model, loss, x, target, lanes, rule=rule)
        for lane, adv in zip(lanes, out, strict=True):
            eps = torch.full((6,), lane.loss_eps, dtype=torch.float64)
            radius = torch.full((6,), max(r for _, r in lane.captures))
            traj = Trajectory(model, loss, x, target, weights=lane.weights, loss_eps=eps, radius=radius, rule=rule)
            for (steps, r), a in zip(lane.captures, adv, strict=True):
                expected = traj.run_to(steps).final(torch.full((6,), r))
                assert torch.equal(a, expected), (lane, steps)
            if lane.length > 0:  # one step more would have moved it
                assert not torch.equal(traj.run_to(lane.length + 1).final(), adv[-1])
    assert torch.equal(out[2][0], x)  # zero steps: the clean input


@pytest.mark.parametrize("max_rows", [1, 17, 24])
def test_group_capping_gives_identical_results(max_rows: int) -> None:
    """Any cap (one lane per batch up to all lanes in one) gives the same bits as the uncapped stacked run."""
    x = make_inputs(8)
    ref = _attack("class:0.5", stack=True, max_rows=10_000)(x, GRID["linf"])
    got = _attack("class:0.5", stack=True, max_rows=max_rows)(x, GRID["linf"])
    assert torch.equal(ref.x_adv, got.x_adv) and torch.equal(ref.flips, got.flips)


def test_cap_groups_lanes_by_length() -> None:
    """max_rows = 2 lanes of 8 samples: 4 SLAM budgets run as 2 stacked batches (shortest lanes together)."""
    model, x = make_model(), make_inputs(8)
    attack = create_attack("slam", model, profile=_profile(), stack=True, max_rows=16)
    sizes = _forward_sizes(attack, x, [0.035, 0.003, 0.02, 0.01])  # steps 89, 7, 51, 25
    assert max(sizes) == 16
    assert sizes == [16] * 7 + [8] * 18 + [16] * 51 + [8] * 38


def test_stacking_is_the_default_but_never_with_the_batch_global_norm() -> None:
    model = make_model()
    assert MIFGSM(model, "bce").stack and not MIFGSM(model, "bce", stack=False).stack
    assert not MIFGSM(model, "bce", normalize="batch").stack  # parity mode: the batch norm would couple the lanes


def test_bad_options_are_refused() -> None:
    model = make_model()
    with pytest.raises(LabelflipError, match="stack"):
        MIFGSM(model, "bce", stack="yes")
    with pytest.raises(LabelflipError, match="max_rows"):
        MIFGSM(model, "bce", stack=True, max_rows=0)
    with pytest.raises(LabelflipError, match="normalize"):
        run_lanes(model, create_loss("bce"), make_inputs(2), torch.zeros(2, 8), [Lane(((1, 0.01),))],
                  rule=StepRule(normalize="batch"))  # fmt: skip
    lanes = [Lane(((1, 0.01),), loss_eps=0.01), Lane(((2, 0.01),))]
    with pytest.raises(LabelflipError, match="loss_eps"):
        run_lanes(model, create_loss("bce"), make_inputs(2), torch.zeros(2, 8), lanes, rule=StepRule())


def test_stack_factor_reports_copies() -> None:
    model = make_model()
    assert create_attack("slam", model, profile=_profile()).stack_factor([0.1, 0.2, 0.3]) == 3
    assert create_attack("slam", model, profile=_profile(), stack=False).stack_factor([0.1, 0.2, 0.3]) == 1
    assert create_attack("random", model, profile=_profile()).stack_factor([0.1, 0.2]) == 2
    assert create_attack("bce", model).stack_factor([0.1, 0.2, 0.3]) == 1  # one shared trajectory: nothing stacked
    assert create_attack("bce", model, clip="step").stack_factor([0.1, 0.2, 0.3]) == 3


def test_reuse_takes_weight_free_trajectories_from_an_earlier_call() -> None:
    """CLASS's budgets whose subset is every label (k = K) are BCE's trajectory: with reuse they come from BCE's
    earlier call on the same inputs, bit-identical to computing them; another model state or input misses."""
    model, x = make_model(), make_inputs(8)
    profile = PolynomialEstimate((0.0, 400.0), 0.04)  # k = 1, 6, then K = 8 at the two largest budgets
    budgets = [0.003, 0.01, 0.02, 0.035]

    def run(spec: str, inputs: torch.Tensor = x, **options):
        return create_attack(spec, model, profile=profile, correlations=_correlations(), return_adv=True, **options)(
            inputs, budgets
        )

    ref = run("class:0.5", stack=False)
    assert ref.extra["k"] == [1, 6, 8, 8]
    CAPTURES.clear()
    run("bce", reuse=True)
    hits = CAPTURES.hits
    got = run("class:0.5", reuse=True)
    assert CAPTURES.hits == hits + 1
    assert torch.equal(got.x_adv, ref.x_adv) and torch.equal(got.adv_probs, ref.adv_probs)
    run("class:0.5", make_inputs(8, seed=6), reuse=True)  # other inputs: computed, not taken
    assert CAPTURES.hits == hits + 1
    with torch.no_grad():
        model.module.head.bias.add_(0.0)  # an in-place change of a parameter (same values) invalidates
    run("class:0.5", reuse=True)
    assert CAPTURES.hits == hits + 1
    CAPTURES.clear()


def test_capture_cache_matches_only_the_model_object_that_computed_it() -> None:
    """An entry is keyed by the model's id and storages; a weak reference makes sure a different object (a new
    model that got a dead one's id and addresses) never takes another model's trajectories."""
    cache, model, other = CaptureCache(), make_model(), make_model()
    key = ("k",)  # the key's content is tested above; here only the identity check
    x = make_inputs(4)
    cache.put(key, {(3, 0.1): x}, model)
    assert cache.get(key, [(3, 0.1)], other) is None  # same key, another object: a miss
    assert cache.get(key, [(3, 0.2)], model) is None  # a capture it does not hold
    (got,) = cache.get(key, [(3, 0.1)], model)
    assert got is x and cache.hits == 1
    cache.put(key, {(5, 0.1): x}, other)  # another object under the same key replaces the entry
    assert cache.get(key, [(3, 0.1)], model) is None and cache.get(key, [(5, 0.1)], other) is not None


def test_capture_cache_evicts_least_recently_used_within_its_limits() -> None:
    model, x = make_model(), make_inputs(2)
    cache = CaptureCache(max_entries=2, max_bytes=3 * x.numel() * x.element_size())
    for k in range(3):
        cache.put((k,), {(1, 0.1): x}, model)
    assert cache.get((0,), [(1, 0.1)], model) is None  # evicted: more than 2 entries
    assert cache.get((2,), [(1, 0.1)], model) is not None
    cache.put((2,), {(2, 0.1): x, (3, 0.1): x}, model)  # 4 tensors > max_bytes: the oldest entries go first
    assert cache.get((1,), [(1, 0.1)], model) is None
    cache.put((9,), {(k, 0.1): x for k in range(4)}, model)  # alone over max_bytes: not kept at all
    assert cache.get((9,), [(0, 0.1)], model) is None

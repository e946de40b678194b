"""CLASS, random and closest-to-threshold subsets: a literal loop transcription of SPEC-reference-code §6 as the
differential reference, hand-checkable trees, and the subset attacks end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelflip.analysis import Profile
from labelflip.analysis.correlation import Correlations, instance_correlation_matrices
from labelflip.attacks import MIFGSM
from labelflip.attacks.selection import class_subsets, closest_subsets, flippability, random_subsets, subset_length
from labelflip.attacks.subsets import ClassAttack, ClosestSubsetAttack, RandomSubsetAttack
from labelflip.models import MultiLabelModel
from tests.helpers import TinyCNN, make_inputs


def reference_class(phat: np.ndarray, m: np.ndarray, k: int, gamma: float, b: int, d: int, normalize_z: bool):
    """SPEC-reference-code §6 for ONE sample, written with plain lists and loops (test-only reference)."""
    num = len(phat)
    s = [int(np.argsort(phat, kind="stable")[-1])]
    for _ in range(k - 1):
        frontier = [[]]
        depth = min(d, k - len(s))
        for _level in range(depth):
            nxt = []
            for added in frontier:
                t = s + added
                z = np.array([sum(m[j, u] for u in t) + sum(m[u, j] for u in t) for j in range(num)])
                if normalize_z:
                    z = z / z.max()
                score = gamma * z + (1 - gamma) * phat
                rank = [int(i) for i in np.argsort(score, kind="stable") if int(i) not in t]
                for r in range(min(b, len(rank))):
                    nxt.append([*added, rank[len(rank) - 1 - r]])
            frontier = nxt
        best, best_val = None, 0.0
        for added in frontier:
            t = s + added
            obj = gamma * sum(m[u, v] for u in t for v in t) + (1 - gamma) * sum(phat[u] for u in t)
            if obj > best_val + 1e-12 * max(1.0, best_val):
                best, best_val = added, obj
        s.append(best[0])
    return sorted(s)


@pytest.mark.parametrize("gamma", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("normalize_z", [True, False])
def test_class_matches_reference_loops(gamma: float, normalize_z: bool) -> None:
    rng = np.random.default_rng(int(gamma * 100) + normalize_z)
    n, num = 4, 11
    probs = torch.tensor(rng.uniform(0.01, 0.99, (n, num)))
    target = (probs <= 0.5).double()
    u = torch.tensor(rng.uniform(0, 1, (num, num)))
    icm = instance_correlation_matrices(u, target)
    phat = flippability(probs, target)
    for k in (1, 2, 3, 6, 10):
        for b, d in ((4, 4), (2, 3), (3, 1)):
            got = class_subsets(probs, target, icm, k, gamma=gamma, branches=b, depth=d, normalize_z=normalize_z)
            for i in range(n):
                ref = reference_class(phat[i], icm[i].numpy(), k, gamma, b, d, normalize_z)
                assert sorted(torch.nonzero(got[i]).flatten().tolist()) == ref, (k, b, d, i)


def _assert_matches_reference(probs, target, icm, ks, gamma, b, d, normalize_z) -> None:
    phat = flippability(probs, target)
    for k in ks:
        got = class_subsets(probs, target, icm, k, gamma=gamma, branches=b, depth=d, normalize_z=normalize_z)
        for i in range(probs.shape[0]):
            m = (icm if icm.ndim == 2 else icm[i]).numpy()
            ref = reference_class(phat[i], m, k, gamma, b, d, normalize_z)
            assert sorted(torch.nonzero(got[i]).flatten().tolist()) == ref, (k, gamma, b, d, normalize_z, i)


@pytest.mark.parametrize("gamma", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("normalize_z", [True, False])
def test_class_matches_reference_loops_k80(gamma: float, normalize_z: bool) -> None:
    """The paper's K = 80 with the full b = d = 4 tree: every level of look-ahead and several rounds reused."""
    rng = np.random.default_rng(80 + int(gamma * 100) + normalize_z)
    probs = torch.tensor(rng.uniform(0.01, 0.99, (2, 80)))
    target = (probs <= 0.5).double()
    icm = instance_correlation_matrices(torch.tensor(rng.uniform(0, 1, (80, 80))), target)
    _assert_matches_reference(probs, target, icm, (9,), gamma, 4, 4, normalize_z)


@pytest.mark.parametrize("levels", [4, 8, 10])
def test_class_matches_reference_loops_with_ties(levels: int) -> None:
    """Confidences and correlations on a coarse grid (many exactly equal scores and objectives): the tie rules
    (higher label index first, first leaf with the maximal objective) decide most choices."""
    rng = np.random.default_rng(levels)
    probs = torch.tensor(np.round(rng.uniform(0, 1, (3, 16)) * levels) / levels)
    target = (probs <= 0.5).double()
    icm = instance_correlation_matrices(torch.tensor(np.round(rng.uniform(0, 1, (16, 16)) * levels) / levels), target)
    for gamma in (0.0, 0.5, 1.0):
        for normalize_z in (True, False):
            _assert_matches_reference(probs, target, icm, (3, 7), gamma, 3, 3, normalize_z)


@pytest.mark.parametrize(("b", "d"), [(2, 3), (1, 4), (5, 1), (30, 2)])
def test_class_matches_reference_loops_up_to_k_minus_one(b: int, d: int) -> None:
    """Long searches (k up to K - 1): the look-ahead shrinks in the last rounds and r = min(b, K - |T|) < b."""
    rng = np.random.default_rng(b * 10 + d)
    probs = torch.tensor(rng.uniform(0.01, 0.99, (2, 12)))
    target = (probs <= 0.5).double()
    u = torch.tensor(rng.uniform(0, 1, (12, 12)))
    _assert_matches_reference(probs, target, instance_correlation_matrices(u, target), (11, 8), 0.5, b, d, True)
    _assert_matches_reference(probs, target, u, (11,), 0.0, b, d, False)  # one (K, K) matrix for all samples


def test_class_rows_are_independent_and_icm_may_be_shared() -> None:
    """A sample's subset depends on its own row only (not on the batch), and one (K, K) matrix equals that matrix
    repeated per sample."""
    rng = np.random.default_rng(7)
    probs = torch.tensor(rng.uniform(0.01, 0.99, (9, 30)))
    target = (probs <= 0.5).double()
    u = torch.tensor(rng.uniform(0, 1, (30, 30)))
    icm = instance_correlation_matrices(u, target)
    for gamma in (0.0, 0.3):
        whole = class_subsets(probs, target, icm, 17, gamma=gamma)
        assert (whole.sum(1) == 17).all()
        assert torch.equal(class_subsets(probs[3:5], target[3:5], icm[3:5], 17, gamma=gamma), whole[3:5])
        assert class_subsets(probs[:0], target[:0], icm[:0], 17, gamma=gamma).shape == (0, 30)
        assert torch.equal(
            class_subsets(probs, target, u, 17, gamma=gamma),
            class_subsets(probs, target, u.expand(9, 30, 30), 17, gamma=gamma),
        )


def test_class_gamma_zero_takes_most_flippable_labels() -> None:
    """gamma = 0: the score is P^ alone, so CLASS picks the k labels closest to flipping."""
    probs = torch.tensor([[0.9, 0.45, 0.2, 0.55, 0.05]])
    target = (probs <= 0.5).double()  # q = P for targets 1, 1 - P for 0: [0.1, 0.45, 0.2, 0.45, 0.05]
    w = class_subsets(probs, target, torch.rand(5, 5), 3, gamma=0.0)
    assert w[0].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_class_gamma_one_follows_correlations() -> None:
    """gamma = 1: after the root, labels strongly tied to the set win regardless of confidence."""
    probs = torch.tensor([[0.49, 0.1, 0.1, 0.1]])
    target = torch.ones(1, 4)
    m = torch.full((4, 4), 0.1)
    m[0, 3] = m[3, 0] = 0.9
    w = class_subsets(probs, target, m, 2, gamma=1.0)
    assert w[0].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_class_tie_rule_higher_index_first() -> None:
    probs = torch.full((1, 6), 0.3)
    w = class_subsets(probs, torch.ones(1, 6), torch.zeros(6, 6), 2, gamma=0.0)
    assert w[0].tolist() == [0, 0, 0, 0, 1, 1]  # stable ascending argsort read from the end


def test_class_full_length_selects_everything() -> None:
    probs = torch.rand(3, 5, generator=torch.Generator().manual_seed(0))
    w = class_subsets(probs, (probs <= 0.5).float(), torch.rand(5, 5), 9)
    assert torch.equal(w, torch.ones(3, 5))


def test_subset_length_double_truncation() -> None:
    assert subset_length(10.3, 80) == 16  # int(1.66 * 10) = 16 (SPEC-reference-code §8, ASL-COCO 5 %)
    assert subset_length(22.5, 80) == 36
    assert subset_length(48.0, 80) == 79
    assert subset_length(79.0, 80) == 80
    assert subset_length(-3.0, 80) == 1  # at least 1
    assert subset_length(0.9, 80) == 1


def test_random_subsets_are_independent_per_sample_and_seeded() -> None:
    ids = list(range(100, 150))
    w1 = random_subsets(ids, 10, 3, seed=1, budget_index=0)
    w2 = random_subsets(ids, 10, 3, seed=1, budget_index=0)
    assert torch.equal(w1, w2)
    assert (w1.sum(1) == 3).all()
    assert len({tuple(r.tolist()) for r in w1}) > 10  # not one permutation shared by the batch
    assert not torch.equal(w1, random_subsets(ids, 10, 3, seed=2, budget_index=0))
    assert not torch.equal(w1, random_subsets(ids, 10, 3, seed=1, budget_index=1))
    # a sample's subset depends on (seed, sample id, budget index) only: not on its batch or position
    assert torch.equal(random_subsets(ids[7:9], 10, 3, seed=1, budget_index=0), w1[7:9])
    state = torch.get_rng_state()
    random_subsets([0, 1, 2], 10, 3, seed=2, budget_index=0)
    assert torch.equal(state, torch.get_rng_state())


def test_random_attack_does_not_depend_on_chunking(artefacts) -> None:
    """Issue: the Random row changed with the chunk size (per-chunk generator); now per sample."""
    model, x, prof, _ = artefacts
    ids = torch.arange(10, 10 + x.shape[0])
    whole = RandomSubsetAttack(model, prof, seed=3)(x, [0.01, 0.02], sample_ids=ids)
    chunked = RandomSubsetAttack(model, prof, seed=3, batch_size=2)(x, [0.01, 0.02], sample_ids=ids)
    tail = RandomSubsetAttack(model, prof, seed=3)(x[2:], [0.01, 0.02], sample_ids=ids[2:])
    assert torch.equal(whole.weights, chunked.weights) and torch.equal(whole.flips, chunked.flips)
    assert torch.equal(whole.weights[:, 2:], tail.weights)


def test_closest_subsets_per_row() -> None:
    probs = torch.tensor([[0.1, 0.48, 0.9, 0.55], [0.5, 0.01, 0.4, 0.99]])
    w = closest_subsets(probs, 2)
    assert w.tolist() == [[0, 1, 0, 1], [1, 0, 1, 0]]  # no union of rows (authors' batch bug)
    assert closest_subsets(probs, 0).sum() == 0


@pytest.fixture
def artefacts() -> tuple[MultiLabelModel, torch.Tensor, Profile, Correlations]:
    model = MultiLabelModel(TinyCNN(k=8, seed=4))
    x = make_inputs(6, seed=5)
    prof = Profile(
        coefficients=[0.0, 150.0],
        eps=[0.0, 0.02],
        flips=[0.0, 3.0],
        flips_bce=[0.0, 3.0],
        flips_linear=[],
        eps_max=0.04,
        order=1,
        interval=10,
        alpha=1 / 2560,
        curve="bce",
        norm="linf",
        rel_tol=0.01,
        num_labels=8,
        num_samples=6,
        stop_reason="converged",
    )
    corr = Correlations(flipup=torch.rand(8, 8, generator=torch.Generator().manual_seed(0)), eps=0.005, num_samples=6)
    return model, x, prof, corr


def test_class_attack_uses_per_budget_subsets(artefacts) -> None:
    model, x, prof, corr = artefacts
    res = ClassAttack(model, prof, corr, gamma=0.5)(x, [0.005, 0.01, 0.04])
    assert res.extra["k"] == [1, 1, 8]  # E = 0.75, 1.5, 6 -> k = 1, 1, int(1.66*6) = 9 -> 8 (all)
    assert res.weights.shape == (3, 6, 8)
    assert (res.weights[0].sum(1) == 1).all()
    everything = MIFGSM(model, "bce")(x, 0.04)
    assert torch.equal(res.flips[2], everything.flips[0])  # k = K: the baseline (a "*" cell)


def test_random_and_topn_attacks(artefacts) -> None:
    model, x, prof, _ = artefacts
    r1 = RandomSubsetAttack(model, prof, seed=3)(x, [0.01, 0.02])
    r2 = RandomSubsetAttack(model, prof, seed=3)(x, [0.01, 0.02])
    assert torch.equal(r1.adv_probs, r2.adv_probs)
    assert torch.equal(r1.weights, r2.weights)
    assert r1.extra["k"] == [1, 4]  # E = 1.5, 3 -> int -> 1, 3 -> k = 1, int(4.98) = 4
    top = ClosestSubsetAttack(model, 2)(x, [0.0, 0.02])
    assert top.flips[0].sum() == 0
    assert (top.weights.sum(1) == 2).all()

"""Attackability estimators of the SAE paper (seed 004) and exact references for linear models.

* :func:`sae`: the Soft Attackability Estimator (Eq. 12, Algorithm 1), budget-free, per sample and per dataset.
* :func:`gase`: Greedy Attack Space Expansion, the number of labels flippable within a budget: a
  **reconstruction** (the AAAI-21 algorithm has no public code or full text), with an exact min-norm oracle for
  linear models and a budgeted-attack oracle for any model.
* :func:`milp_max_flips` (exact L-inf maximum, HiGHS MILP), :func:`enumerate_max_flips` (exact maximum by
  exhaustive enumeration, any norm, small m) and :func:`min_norm_linear` (exact min-norm flip of a label set).
* :func:`exact_max_flips`: either exact reference applied to a linear model and a batch of inputs.
* :func:`label_gradients` / :func:`greedy_gram`: the batched per-label input gradients and the Gram greedy,
  shared with the transferability regularisers of :mod:`labelflip.robust`.
"""

from labelflip.estimators.exact import ExactFlips, enumerate_max_flips, milp_max_flips, min_norm_linear
from labelflip.estimators.gase import GASEResult, gase, label_subset_model, linear_parameters, marginal_costs
from labelflip.estimators.gradients import decision_offsets, greedy_gram, greedy_vectors, label_gradients
from labelflip.estimators.reference import ExactResult, exact_max_flips
from labelflip.estimators.sae import SAEResult, phi_align, sae, sae_from_gradients

__all__ = [
    "ExactFlips",
    "ExactResult",
    "GASEResult",
    "SAEResult",
    "decision_offsets",
    "enumerate_max_flips",
    "exact_max_flips",
    "gase",
    "greedy_gram",
    "greedy_vectors",
    "label_gradients",
    "label_subset_model",
    "linear_parameters",
    "marginal_costs",
    "milp_max_flips",
    "min_norm_linear",
    "phi_align",
    "sae",
    "sae_from_gradients",
]

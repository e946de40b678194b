"""Attacks: one protocol (:mod:`~labelflip.attacks.base`), one registry, and the attacks registered in it.

* :class:`Attack` / :class:`FixedBudgetAttack` / :class:`MinimumNormAttack`: the protocol every attack follows.
* :class:`MIFGSM` (losses ``bce``, ``linear``, ``hinge``, ``mse``; :class:`SLAMAttack` for ``slam``) on the
  public :class:`Trajectory`.
* Subset attacks: :class:`ClassAttack` (``class``, ``class-raw``), :class:`RandomSubsetAttack` (``random``),
  :class:`ClosestSubsetAttack` (``top-n``).
* :func:`create_attack` / :func:`list_attacks` / :func:`parse_attack`: attacks by method spec string.
"""

from labelflip.attacks import baselines as _baselines  # noqa: F401  (registers ml-cw, ml-deepfool, mla-lp)
from labelflip.attacks.base import (
    Attack,
    Batch,
    FixedBudgetAttack,
    MinimumNormAttack,
    clean_pass,
    prepare_inputs,
    validate_budgets,
)
from labelflip.attacks.ensemble import WorstCaseEnsemble  # noqa: F401  (registers "worst-case")
from labelflip.attacks.maxflip import MaxFlip  # noqa: F401  (registers "maxflip")
from labelflip.attacks.mifgsm import MIFGSM, SLAMAttack
from labelflip.attacks.registry import (
    ATTACKS,
    attack_info,
    create_attack,
    list_attacks,
    parse_attack,
    split_method_list,
)
from labelflip.attacks.result import AttackResult, count_flips
from labelflip.attacks.selection import class_subsets, closest_subsets, random_subsets, subset_length
from labelflip.attacks.subsets import (
    ClassAttack,
    ClassAutoAttack,
    ClosestSubsetAttack,
    RandomSubsetAttack,
    SubsetAttack,
    search_gamma,
)
from labelflip.attacks.trajectory import ALPHA_LINF, StepRule, Trajectory, num_steps

__all__ = [
    "ALPHA_LINF",
    "ATTACKS",
    "MIFGSM",
    "Attack",
    "AttackResult",
    "Batch",
    "ClassAttack",
    "ClassAutoAttack",
    "ClosestSubsetAttack",
    "FixedBudgetAttack",
    "MinimumNormAttack",
    "RandomSubsetAttack",
    "SLAMAttack",
    "StepRule",
    "SubsetAttack",
    "Trajectory",
    "attack_info",
    "class_subsets",
    "clean_pass",
    "closest_subsets",
    "count_flips",
    "create_attack",
    "list_attacks",
    "num_steps",
    "parse_attack",
    "prepare_inputs",
    "random_subsets",
    "search_gamma",
    "split_method_list",
    "subset_length",
    "validate_budgets",
]

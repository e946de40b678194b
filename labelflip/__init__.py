"""labelflip: measure and reduce multi-label flips under small input perturbations.

Quick use::

    import labelflip as lf
    model = lf.MultiLabelModel(my_net)                  # logits (N, K), inputs in [0, 1]
    result = lf.MIFGSM(model, loss="bce")(x, eps=[0.002, 0.01])
    result.mean_flips()                                 # (budgets,) mean labels flipped
"""

from labelflip._validation import LabelflipError, LabelflipWarning
from labelflip.attackability import Attackability, label_attackability
from labelflip.attacks import ALPHA_LINF, MIFGSM, AttackResult, count_flips, num_steps
from labelflip.attacks.subsets import (
    ClassAttack,
    ClosestSubsetAttack,
    RandomSubsetAttack,
    class_subsets,
    search_gamma,
    subset_length,
)
from labelflip.correlation import Correlations, measure_correlations
from labelflip.losses import AttackLoss, BCELoss, HingeLoss, LinearLoss, MSELoss, SLAMLoss, create_loss, list_losses
from labelflip.methods import build_attack, parse_method
from labelflip.model import MultiLabelModel, as_model
from labelflip.profile import Profile, fit_profile_polynomial, probe_profile
from labelflip.study import load_spec
from labelflip.study.runner import run_study
from labelflip.tables import FlipTable, flip_table
from labelflip.targets_vs_flips import TargetsVsFlips, targets_vs_flips

__version__ = "0.1.0"

__all__ = [
    "ALPHA_LINF",
    "MIFGSM",
    "AttackLoss",
    "AttackResult",
    "Attackability",
    "BCELoss",
    "ClassAttack",
    "ClosestSubsetAttack",
    "Correlations",
    "FlipTable",
    "HingeLoss",
    "LabelflipError",
    "LabelflipWarning",
    "LinearLoss",
    "MSELoss",
    "MultiLabelModel",
    "Profile",
    "RandomSubsetAttack",
    "SLAMLoss",
    "TargetsVsFlips",
    "__version__",
    "as_model",
    "build_attack",
    "class_subsets",
    "count_flips",
    "create_loss",
    "fit_profile_polynomial",
    "flip_table",
    "label_attackability",
    "list_losses",
    "load_spec",
    "measure_correlations",
    "num_steps",
    "parse_method",
    "probe_profile",
    "run_study",
    "search_gamma",
    "subset_length",
    "targets_vs_flips",
]

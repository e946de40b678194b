"""labelflip: measure and reduce multi-label flips under small input perturbations.

Quick use::

    import labelflip as lf
    model = lf.MultiLabelModel(my_net)                  # logits (N, K), inputs in [0, 1]
    result = lf.MIFGSM(model, loss="bce")(x, eps=[0.002, 0.01])
    result.mean_flips()                                 # (budgets,) mean labels flipped
    lf.create_attack("class:0", model, profile=prof, correlations=corr)(x, eps)
"""

from labelflip._registry import Param, Registry
from labelflip._validation import LabelflipError, LabelflipWarning
from labelflip._version import __version__
from labelflip.analysis import (
    Attackability,
    Correlations,
    FlipEstimate,
    Profile,
    TargetsVsFlips,
    fit_profile_polynomial,
    label_attackability,
    measure_correlations,
    probe_profile,
    targets_vs_flips,
)
from labelflip.attacks import (
    ALPHA_LINF,
    ATTACKS,
    MIFGSM,
    Attack,
    AttackResult,
    ClassAttack,
    ClosestSubsetAttack,
    FixedBudgetAttack,
    MinimumNormAttack,
    RandomSubsetAttack,
    SLAMAttack,
    Trajectory,
    class_subsets,
    count_flips,
    create_attack,
    list_attacks,
    num_steps,
    parse_attack,
    search_gamma,
    subset_length,
)
from labelflip.data import DATASETS, create_dataset, list_datasets
from labelflip.losses import (
    LOSSES,
    AttackLoss,
    BCELoss,
    HingeLoss,
    LinearLoss,
    MSELoss,
    SLAMLoss,
    create_loss,
    list_losses,
)
from labelflip.models import MODELS, MultiLabelModel, as_model, check_model, create_model, list_models
from labelflip.report import FlipTable, flip_table
from labelflip.study import load_spec, run_study
from labelflip.study.presets import PRESETS

__all__ = [
    "ALPHA_LINF",
    "ATTACKS",
    "DATASETS",
    "LOSSES",
    "MIFGSM",
    "MODELS",
    "PRESETS",
    "Attack",
    "AttackLoss",
    "AttackResult",
    "Attackability",
    "BCELoss",
    "ClassAttack",
    "ClosestSubsetAttack",
    "Correlations",
    "FixedBudgetAttack",
    "FlipEstimate",
    "FlipTable",
    "HingeLoss",
    "LabelflipError",
    "LabelflipWarning",
    "LinearLoss",
    "MSELoss",
    "MinimumNormAttack",
    "MultiLabelModel",
    "Param",
    "Profile",
    "RandomSubsetAttack",
    "Registry",
    "SLAMAttack",
    "SLAMLoss",
    "TargetsVsFlips",
    "Trajectory",
    "__version__",
    "as_model",
    "check_model",
    "class_subsets",
    "count_flips",
    "create_attack",
    "create_dataset",
    "create_loss",
    "create_model",
    "fit_profile_polynomial",
    "flip_table",
    "label_attackability",
    "list_attacks",
    "list_datasets",
    "list_losses",
    "list_models",
    "load_spec",
    "measure_correlations",
    "num_steps",
    "parse_attack",
    "probe_profile",
    "run_study",
    "search_gamma",
    "subset_length",
    "targets_vs_flips",
]

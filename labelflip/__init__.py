"""labelflip: measure and reduce multi-label flips under small input perturbations.

Quick use::

    import labelflip as lf
    model = lf.MultiLabelModel(my_net)                  # logits (N, K), inputs in [0, 1]
    result = lf.MIFGSM(model, loss="bce")(x, eps=[0.002, 0.01])
    result.mean_flips()                                 # (budgets,) mean labels flipped
"""

from labelflip._validation import LabelflipError, LabelflipWarning
from labelflip.attacks import ALPHA_LINF, MIFGSM, AttackResult, count_flips, num_steps
from labelflip.losses import AttackLoss, BCELoss, HingeLoss, LinearLoss, MSELoss, SLAMLoss, create_loss, list_losses
from labelflip.model import MultiLabelModel, as_model
from labelflip.profile import Profile, fit_profile_polynomial, probe_profile
from labelflip.tables import FlipTable, flip_table

__version__ = "0.1.0"

__all__ = [
    "ALPHA_LINF",
    "MIFGSM",
    "AttackLoss",
    "AttackResult",
    "BCELoss",
    "FlipTable",
    "HingeLoss",
    "LabelflipError",
    "LabelflipWarning",
    "LinearLoss",
    "MSELoss",
    "MultiLabelModel",
    "Profile",
    "SLAMLoss",
    "__version__",
    "as_model",
    "count_flips",
    "create_loss",
    "fit_profile_polynomial",
    "flip_table",
    "list_losses",
    "num_steps",
    "probe_profile",
]

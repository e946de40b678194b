"""Adversarially robust multi-label training (SAE paper, seed 004, §4.2 and §5.3).

* Models: :class:`LinearMultiLabel` (linear SVM / logistic regression, trained in PyTorch), :class:`MLPMultiLabel`;
  the built-in image architectures train through the same loop.
* Regularisers (one registry, :func:`create_regulariser`): ``none``, ``l2``, ``nuclear``, ``arm-primal``,
  ``arm-sae``, ``arm-single``.
* :func:`train_robust`: training with early stopping on the validation split and cached safetensors checkpoints.
* :func:`evaluate_robustness`: Micro/Macro-F1 on clean and attacked test data (Tables 3-4).
"""

from labelflip.robust.evaluation import RobustnessReport, choose_budgets, evaluate_robustness
from labelflip.robust.linear import (
    LOSSES,
    TABULAR_BOUNDS,
    LinearMultiLabel,
    MLPMultiLabel,
    classification_loss,
    tabular_model,
)
from labelflip.robust.regularisers import (
    REGULARISERS,
    Regulariser,
    create_regulariser,
    last_linear_weight,
    list_regularisers,
    margin_weights,
)
from labelflip.robust.trainer import (
    ProgressCallback,
    RobustTrainConfig,
    TrainedModel,
    load_trained,
    train_robust,
    wrap_for_data,
)

__all__ = [
    "LOSSES",
    "REGULARISERS",
    "TABULAR_BOUNDS",
    "LinearMultiLabel",
    "MLPMultiLabel",
    "ProgressCallback",
    "Regulariser",
    "RobustTrainConfig",
    "RobustnessReport",
    "TrainedModel",
    "choose_budgets",
    "classification_loss",
    "create_regulariser",
    "evaluate_robustness",
    "last_linear_weight",
    "list_regularisers",
    "load_trained",
    "margin_weights",
    "tabular_model",
    "train_robust",
    "wrap_for_data",
]

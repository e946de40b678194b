"""Related-work baselines (seed §III-A, App. J, Table VII): minimum-norm multi-label attacks, registered as
``ml-cw``, ``ml-deepfool`` and ``mla-lp``.

* :class:`MLCarliniWagner` (``ml-cw``): Carlini-Wagner with a hinge on every label's threshold, Adam in tanh
  space and a per-sample binary search on the trade-off constant (Song et al., ICDM 2018).
* :class:`MLDeepFool` (``ml-deepfool``): iterated minimum-norm (pseudo-inverse) steps onto the linearised label
  boundaries (Song et al.); the published tie-break bug is fixed.
* :class:`MLALP` (``mla-lp``): minimum-L-inf steps under linearised per-label BCE constraints, solved by
  linear programming with SciPy's HiGHS (Zhou et al., IJCNN 2020).
* :func:`compare_at_baseline_norms`: the Table VII computation (budgeted attacks at each baseline example's
  achieved norm).

Each returns one perturbation per sample, which the protocol clips to every requested budget; ``result.min_norm``
keeps the norm each sample needed and ``result.extra`` its outcome: ``status`` (``already_on_target``,
``success``, ``partial``, ``failed``), ``stop_reason`` and ``labels_on_target`` (see
:func:`~labelflip.attacks.baselines.ml_deepfool.record_outcome`). Labels with weight 0 (``weights=``) are left
free; the default target flips every label.
"""

from labelflip.attacks.baselines.compare import BaselineComparison, compare_at_baseline_norms
from labelflip.attacks.baselines.ml_cw import MLCarliniWagner
from labelflip.attacks.baselines.ml_deepfool import MLDeepFool, label_jacobian, min_norm_step
from labelflip.attacks.baselines.mla_lp import MLALP, StepSolution, min_l2_step, min_linf_step

__all__ = [
    "MLALP",
    "BaselineComparison",
    "MLCarliniWagner",
    "MLDeepFool",
    "StepSolution",
    "compare_at_baseline_norms",
    "label_jacobian",
    "min_l2_step",
    "min_linf_step",
    "min_norm_step",
]

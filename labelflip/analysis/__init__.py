"""Analyses of a model's attackability (seed §IV-V), each a saved :class:`Artefact`:

* :mod:`~labelflip.analysis.profile`: the flip profile ``E(eps)`` and ``eps_max`` (§V-C, App. L);
* :mod:`~labelflip.analysis.correlation`: flip-up / flip-down correlation matrices (Alg. 1);
* :mod:`~labelflip.analysis.attackability`: per-label attackability and its correlations (Table II);
* :mod:`~labelflip.analysis.targets_vs_flips`: flips against the number of targets (Fig. 7).

Tables and figures of these artefacts are drawn by :mod:`labelflip.report`.
"""

from labelflip.analysis.artefact import Artefact
from labelflip.analysis.attackability import Attackability, CorrelationStat, label_attackability
from labelflip.analysis.correlation import (
    Correlations,
    flipdown_matrix,
    flipup_matrix,
    instance_correlation_matrices,
    measure_correlations,
    normalize_flipup,
)
from labelflip.analysis.profile import (
    DEFAULT_MAX_STEPS,
    PAPER_FRACTIONS,
    Profile,
    check_profile,
    fit_profile_polynomial,
    probe_profile,
    stopping_rule,
)
from labelflip.analysis.targets_vs_flips import TargetsVsFlips, targets_vs_flips
from labelflip.estimate import FlipEstimate, PolynomialEstimate

__all__ = [
    "DEFAULT_MAX_STEPS",
    "PAPER_FRACTIONS",
    "Artefact",
    "Attackability",
    "CorrelationStat",
    "Correlations",
    "FlipEstimate",
    "PolynomialEstimate",
    "Profile",
    "TargetsVsFlips",
    "check_profile",
    "fit_profile_polynomial",
    "flipdown_matrix",
    "flipup_matrix",
    "instance_correlation_matrices",
    "label_attackability",
    "measure_correlations",
    "normalize_flipup",
    "probe_profile",
    "stopping_rule",
    "targets_vs_flips",
]

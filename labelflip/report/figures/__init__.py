"""Every figure labelflip draws (matplotlib, headless): study figures, analysis figures and adversarial examples."""

from labelflip.report.figures.analysis import plot_attackability, plot_correlations, plot_profile, plot_targets_vs_flips
from labelflip.report.figures.examples import plot_adversarial_grid
from labelflip.report.figures.flips import plot_confidence_histograms, plot_flips_vs_budget

__all__ = [
    "plot_adversarial_grid",
    "plot_attackability",
    "plot_confidence_histograms",
    "plot_correlations",
    "plot_flips_vs_budget",
    "plot_profile",
    "plot_targets_vs_flips",
]

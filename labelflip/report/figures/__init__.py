"""Every figure labelflip draws (matplotlib, headless): study figures, analysis figures and adversarial examples.

PNGs are written at :data:`~labelflip.report.figures._common.DPI` (200) dpi, each with an SVG companion when
asked (``formats=("png", "svg")``).
"""

from labelflip.report.figures.analysis import plot_attackability, plot_profile, plot_targets_vs_flips
from labelflip.report.figures.correlations import plot_correlations
from labelflip.report.figures.examples import plot_adversarial_grid
from labelflip.report.figures.flips import identical_rows, plot_flips_vs_budget
from labelflip.report.figures.histograms import plot_confidence_histograms

__all__ = [
    "identical_rows",
    "plot_adversarial_grid",
    "plot_attackability",
    "plot_confidence_histograms",
    "plot_correlations",
    "plot_flips_vs_budget",
    "plot_profile",
    "plot_targets_vs_flips",
]

"""The one presentation layer: statistics, tables (Markdown, CSV, LaTeX, HTML, terminal), figures and the HTML
study report, built from the results store."""

from labelflip.report.statistics import CellStats, StudyTable, compare_methods, holm_adjust
from labelflip.report.tables import FlipTable, flip_table, to_csv, to_html, to_latex, to_markdown, to_rich

__all__ = [
    "CellStats",
    "FlipTable",
    "StudyTable",
    "compare_methods",
    "flip_table",
    "holm_adjust",
    "to_csv",
    "to_html",
    "to_latex",
    "to_markdown",
    "to_rich",
]

"""Renderers of a :class:`~labelflip.report.statistics.StudyTable`: Markdown, CSV, LaTeX and HTML.

Every cell prints ``mean ± std`` with the **population** std (``ddof=0``, as the paper), rounded to
``digits`` decimals (the paper truncates; we round). The best cell of a column (see
:func:`~labelflip.report.statistics.compare_methods`) is bold, and a ``†`` follows every non-baseline cell
that differs significantly from the baseline after Holm's correction. The CSV is the full long format:
one row per (method, column) with every :class:`~labelflip.report.statistics.CellStats` field plus ``best``.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io

from labelflip._validation import check_int, fail
from labelflip.report.statistics import CellStats, StudyTable

__all__ = ["latex_escape", "legend", "to_csv", "to_html", "to_latex", "to_markdown"]

DAGGER = "†"


def _check(owner: str, table: StudyTable, digits: int | None = None) -> None:
    if not isinstance(table, StudyTable):
        raise fail(owner, "table", "a StudyTable", table, "build it with labelflip.report.statistics.compare_methods.")
    if digits is not None:
        check_int(owner, "digits", digits, low=0, fix="pass the number of decimals, e.g. digits=2.")


def legend(table: StudyTable) -> str:
    """One plain-text line explaining the cells, the test, the correction and the markers."""
    return (
        "mean ± std over paired samples; std is the population std (ddof=0, as the paper). "
        f"Test = paired two-sided t-test vs {table.baseline}, Holm-corrected across the table "
        f"at alpha = {table.alpha:g}. {DAGGER} = significantly different from {table.baseline}; "
        "bold = best mean of the column where significant."
    )


def _number(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _cell_text(c: CellStats, digits: int) -> str:
    return f"{_number(c.mean, digits)} ± {_number(c.std_pop, digits)}"


def _marked(table: StudyTable, method: str, column: str) -> tuple[CellStats, bool, bool]:
    """The cell, whether it is the marked best, and whether it carries the significance marker."""
    cell = table.cells[method][column]
    return cell, table.best.get(column) == method, method != table.baseline and cell.significant


def to_markdown(table: StudyTable, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table (``| method | 5% | ... | Total |``) with the legend below it.

    The title, when set, is the first line; ``|`` in names is escaped as ``\\|``.
    """
    _check("to_markdown", table, digits)

    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [f"**{esc(table.title)}**", ""] if table.title else []
    lines.append("| method | " + " | ".join(esc(c) for c in table.columns) + " |")
    lines.append("|---" + "|---:" * len(table.columns) + "|")
    for m in table.methods:
        parts = []
        for col in table.columns:
            cell, best, sig = _marked(table, m, col)
            text = _cell_text(cell, digits)
            text = f"**{text}**" if best else text
            parts.append(text + (DAGGER if sig else ""))
        lines.append(f"| {esc(m)} | " + " | ".join(parts) + " |")
    lines += ["", legend(table)]
    return "\n".join(lines) + "\n"


def to_csv(table: StudyTable) -> str:
    """Long-format CSV: one row per (method, column), every CellStats field plus ``best`` (True/False).

    Floats are written with ``repr`` (full precision, ``inf``/``nan`` as such), ``None`` as an empty field,
    so ``float()`` on a non-empty field gives back the exact number.
    """
    _check("to_csv", table)
    names = [f.name for f in dataclasses.fields(CellStats)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*names, "best"], lineterminator="\n")
    writer.writeheader()
    for m in table.methods:
        for col in table.columns:
            cell, best, _ = _marked(table, m, col)
            row = {}
            for name in names:
                value = getattr(cell, name)
                row[name] = "" if value is None else repr(value) if isinstance(value, float) else str(value)
            row["best"] = str(best)
            writer.writerow(row)
    return buf.getvalue()


_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "α": r"$\alpha$",
    "β": r"$\beta$",
    "γ": r"$\gamma$",
    "δ": r"$\delta$",
    "ε": r"$\varepsilon$",
    "λ": r"$\lambda$",
    "μ": r"$\mu$",
    "σ": r"$\sigma$",
    "τ": r"$\tau$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (and a few Greek letters, e.g. γ -> ``$\\gamma$``) in plain text."""
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in text)


def to_latex(table: StudyTable, digits: int = 2) -> str:
    """A booktabs ``tabular`` (needs only ``\\usepackage{booktabs}``), title and legend as ``%`` comments.

    Cells are ``mean $\\pm$ std``; the best cell is ``\\textbf{...}``, a significant one gets ``$^\\dagger$``.
    """
    _check("to_latex", table, digits)
    lines = []
    if table.title:
        lines.append("% " + table.title.replace("\n", " "))
    lines.append("% " + legend(table).replace(DAGGER, "dagger").replace("±", "+/-"))
    lines.append(r"\begin{tabular}{l" + "r" * len(table.columns) + "}")
    lines.append(r"\toprule")
    lines.append("Method & " + " & ".join(latex_escape(c) for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    for m in table.methods:
        parts = []
        for col in table.columns:
            cell, best, sig = _marked(table, m, col)
            text = f"{_number(cell.mean, digits)} $\\pm$ {_number(cell.std_pop, digits)}"
            text = f"\\textbf{{{text}}}" if best else text
            parts.append(text + ("$^\\dagger$" if sig else ""))
        lines.append(latex_escape(m) + " & " + " & ".join(parts) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def to_html(table: StudyTable, digits: int = 2) -> str:
    """An HTML ``<table>`` with a ``<caption>`` (title, or a default) and the legend in ``<tfoot>``.

    All text is escaped with :func:`html.escape`; the best cell is ``<strong>``, the significance marker is
    ``<span class="sig">†</span>``.
    """
    _check("to_html", table, digits)
    e = html.escape
    caption = table.title or f"Flips per sample: mean ± std (vs {table.baseline})"
    lines = ['<table class="labelflip-study">', f"<caption>{e(caption)}</caption>", "<thead>"]
    lines.append("<tr><th>method</th>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    for m in table.methods:
        parts = []
        for col in table.columns:
            cell, best, sig = _marked(table, m, col)
            text = e(_cell_text(cell, digits))
            text = f"<strong>{text}</strong>" if best else text
            marker = f'<span class="sig">{DAGGER}</span>' if sig else ""
            parts.append(f"<td>{text}{marker}</td>")
        lines.append(f'<tr><th scope="row">{e(m)}</th>' + "".join(parts) + "</tr>")
    lines += ["</tbody>", "<tfoot>"]
    lines.append(f'<tr><td colspan="{len(table.columns) + 1}">{e(legend(table))}</td></tr>')
    lines += ["</tfoot>", "</table>"]
    return "\n".join(lines) + "\n"

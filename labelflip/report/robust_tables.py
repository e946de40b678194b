"""Tables of scalar cells (the SAE paper's Tables 2-4 and the Fig. 1 demo table): Markdown, CSV, LaTeX, HTML and
the terminal.

A :class:`ScalarTable` has a corner label, column headers and rows of numbers; a cell is a value, optionally with
the standard deviation over seeds (printed ``mean ± std`` when there is more than one seed, population std,
``ddof=0``). ``bold`` marks cells (``(row, column)`` indices) as the best of their column, as the paper's
bold. Text escaping reuses :func:`labelflip.report.tables.latex_escape` and :func:`html.escape`.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table as RichTable

from labelflip._validation import fail
from labelflip.report.tables import latex_escape

__all__ = ["ScalarTable", "scalar_csv", "scalar_html", "scalar_latex", "scalar_markdown", "scalar_rich"]


@dataclass
class ScalarTable:
    """Rows of numbers under column headers.

    Attributes:
        title: the caption. corner: the header of the row-label column. columns: the column headers.
        rows: ``(label, values)``; ``values[j]`` a float (NaN: not available) for column ``j``.
        spread: per row label, the std over seeds of each value (optional). digits: decimals printed.
        bold: ``(row index, column index)`` cells printed bold. notes: lines printed under the table.
    """

    title: str
    corner: str
    columns: list[str]
    rows: list[tuple[str, list[float]]]
    spread: dict[str, list[float]] = field(default_factory=dict)
    digits: int = 3
    bold: set[tuple[int, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for label, values in self.rows:
            if len(values) != len(self.columns):
                raise fail("ScalarTable", "rows", f"{len(self.columns)} values per row", f"{label}: {values}")

    def text(self, r: int, c: int) -> str:
        """The printed cell: ``"0.512"``, ``"0.512 ± 0.010"`` (seeds), ``"–"`` when not available."""
        label, values = self.rows[r]
        v = values[c]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        out = f"{v:.{self.digits}f}"
        sd = self.spread.get(label)
        if sd is not None and sd[c] is not None and not math.isnan(sd[c]):
            out += f" ± {sd[c]:.{self.digits}f}"
        return out


def _check(owner: str, table: ScalarTable) -> None:
    if not isinstance(table, ScalarTable):
        raise fail(owner, "table", "a ScalarTable", table, "build it with labelflip.report.robust.")


def scalar_markdown(table: ScalarTable) -> str:
    """A GitHub-flavoured Markdown table, the title first (bold) and the notes below."""
    _check("scalar_markdown", table)

    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [f"**{esc(table.title)}**", ""] if table.title else []
    lines.append(f"| {esc(table.corner)} | " + " | ".join(esc(c) for c in table.columns) + " |")
    lines.append("|---" + "|---:" * len(table.columns) + "|")
    for r, (label, _) in enumerate(table.rows):
        cells = [
            f"**{table.text(r, c)}**" if (r, c) in table.bold else table.text(r, c) for c in range(len(table.columns))
        ]
        lines.append(f"| {esc(label)} | " + " | ".join(cells) + " |")
    if table.notes:
        lines += ["", *table.notes]
    return "\n".join(lines) + "\n"


def scalar_csv(table: ScalarTable) -> str:
    """Long-format CSV: one row per cell (``row, column, value, std, best``), floats at full precision."""
    _check("scalar_csv", table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([table.corner or "row", "column", "value", "std", "best"])
    for r, (label, values) in enumerate(table.rows):
        sd = table.spread.get(label)
        for c, col in enumerate(table.columns):
            std = "" if sd is None or sd[c] is None else repr(float(sd[c]))
            writer.writerow([label, col, repr(float(values[c])), std, str((r, c) in table.bold)])
    return buf.getvalue()


def scalar_latex(table: ScalarTable) -> str:
    """A booktabs ``tabular`` (needs ``\\usepackage{booktabs}``); title and notes as ``%`` comments."""
    _check("scalar_latex", table)
    lines = [f"% {table.title}"] if table.title else []
    lines += [f"% {n}" for n in table.notes]
    lines.append(r"\begin{tabular}{l" + "r" * len(table.columns) + "}")
    lines += [
        r"\toprule",
        latex_escape(table.corner) + " & " + " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for r, (label, _) in enumerate(table.rows):
        cells = []
        for c in range(len(table.columns)):
            text = latex_escape(table.text(r, c)).replace("–", "--")
            cells.append(f"\\textbf{{{text}}}" if (r, c) in table.bold else text)
        lines.append(latex_escape(label) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def scalar_html(table: ScalarTable, *, caption: bool = True) -> str:
    """An HTML ``<table>`` (caption = title unless ``caption=False``, notes in ``<tfoot>``), every text escaped."""
    _check("scalar_html", table)
    e = html.escape
    lines = ['<table class="labelflip-robust">', *([f"<caption>{e(table.title)}</caption>"] if caption else [])]
    lines.append("<thead>")
    lines.append(f"<tr><th>{e(table.corner)}</th>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    for r, (label, _) in enumerate(table.rows):
        cells = []
        for c in range(len(table.columns)):
            text = e(table.text(r, c))
            cells.append(f"<td><strong>{text}</strong></td>" if (r, c) in table.bold else f"<td>{text}</td>")
        lines.append(f'<tr><th scope="row">{e(label)}</th>' + "".join(cells) + "</tr>")
    lines.append("</tbody>")
    if table.notes:
        notes = "<br>".join(e(n) for n in table.notes)
        lines += ["<tfoot>", f'<tr><td class="legend" colspan="{len(table.columns) + 1}">{notes}</td></tr>', "</tfoot>"]
    lines.append("</table>")
    return "\n".join(lines) + "\n"


def scalar_rich(table: ScalarTable) -> RichTable:
    """A terminal table (bold cells bold green), notes as the caption."""
    _check("scalar_rich", table)
    t = RichTable(title=table.title or None, title_justify="left")
    t.add_column(table.corner, style="bold")
    for col in table.columns:
        t.add_column(col, justify="right")
    for r, (label, _) in enumerate(table.rows):
        cells: Sequence[str] = [
            f"[bold green]{table.text(r, c)}[/]" if (r, c) in table.bold else table.text(r, c)
            for c in range(len(table.columns))
        ]
        t.add_row(label, *cells)
    if table.notes:
        t.caption = " ".join(table.notes)
        t.caption_justify = "left"
    return t

"""Every table labelflip prints or writes, in one place.

* :class:`~labelflip.report.statistics.StudyTable` (a study's statistics): Markdown, CSV, LaTeX, HTML, terminal.
* :class:`FlipTable` (``labelflip attack``'s quick table, no test): Markdown and terminal.
* Analysis tables: per-label attackability correlations (Table II) and targets vs flips (Fig. 7's numbers).

Every cell prints ``mean ± std`` with the **population** std (``ddof=0``, as the paper), rounded to
``digits`` decimals (the paper truncates; we round). The best cell of a column (see
:func:`~labelflip.report.statistics.compare_methods`) is bold, and a ``†`` follows every non-baseline cell
that differs significantly from the baseline after Holm's correction. Optional renderer arguments: ``eps``
(the absolute budget of each budget column, printed in the header, with ``n/255`` for L-inf) and ``stars``
(method -> columns where a subset attack targets every label, ``k = K``, so it *is* the baseline there: marked
``*`` as in the paper's tables). The CSV is the full long format: one row per (method, column) with every
:class:`~labelflip.report.statistics.CellStats` field plus ``best``, ``eps`` and ``targets_every_label``.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from rich.table import Table as RichTable

from labelflip._validation import check_int, fail
from labelflip.analysis import Attackability, TargetsVsFlips
from labelflip.attacks import AttackResult
from labelflip.report.statistics import CellStats, StudyTable

__all__ = [
    "FlipTable",
    "attackability_html",
    "attackability_markdown",
    "eps_text",
    "flip_table",
    "latex_escape",
    "legend",
    "targets_vs_flips_markdown",
    "to_csv",
    "to_html",
    "to_latex",
    "to_markdown",
    "to_rich",
]

DAGGER = "†"
STAR = "*"
Stars = Mapping[str, Collection[str]] | None
Budgets = Sequence[float] | None


def eps_text(eps: float, norm: str = "linf") -> str:
    """An absolute budget as printed in headers: ``"0.0445 = 11.4/255"`` (L-inf) or ``"0.5"`` (L2)."""
    return f"{eps:.4g}" + (f" = {eps * 255:.3g}/255" if norm == "linf" else "")


def _headers(table: StudyTable, eps: Sequence[float] | None, norm: str) -> list[tuple[str, str]]:
    """``(column, second line)`` per column: the absolute eps of a budget column, the meaning of Total."""
    cols = table.columns[:-1]
    if eps is not None and (isinstance(eps, str) or len(eps) != len(cols)):
        raise fail("table renderer", "eps", f"{len(cols)} budgets (one per budget column)", eps)
    subs = [f"eps {eps_text(float(e), norm)}" for e in eps] if eps is not None else [""] * len(cols)
    return [*zip(cols, subs, strict=True), (table.columns[-1], "sum over budgets")]


def _starred(stars: Stars, method: str, column: str) -> bool:
    return bool(stars) and column in stars.get(method, ())


def _check(owner: str, table: StudyTable, digits: int | None = None) -> None:
    if not isinstance(table, StudyTable):
        raise fail(owner, "table", "a StudyTable", table, "build it with labelflip.report.statistics.compare_methods.")
    if digits is not None:
        check_int(owner, "digits", digits, low=0, fix="pass the number of decimals, e.g. digits=2.")


def legend(table: StudyTable, stars: Stars = None) -> str:
    """One plain-text paragraph explaining the cells, Total, the test, the correction and the markers."""
    text = (
        "mean ± std over paired samples; std is the population std (ddof=0, as the paper). "
        f"{table.columns[-1]} = the per-sample sum of flips over the budget columns (its mean is the sum of the "
        "column means; a summary over budgets, not a budget). "
        f"Test = paired two-sided t-test vs {table.baseline} (a constant nonzero difference: exact sign test, "
        "p = 2·0.5^N), Holm-corrected across the table "
        f"at alpha = {table.alpha:g}. {DAGGER} = significantly different from {table.baseline}; "
        "bold = best mean of the column where significant."
    )
    if stars and any(stars.values()):
        text += (
            f" {STAR} = the subset attack targets every label at this budget (k = K), so it is exactly "
            f"{table.baseline} there and its cell equals {table.baseline}'s (the paper's *)."
        )
    return text


def _number(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _cell_text(c: CellStats, digits: int) -> str:
    return f"{_number(c.mean, digits)} ± {_number(c.std_pop, digits)}"


def _marked(table: StudyTable, method: str, column: str) -> tuple[CellStats, bool, bool]:
    """The cell, whether it is the marked best, and whether it carries the significance marker."""
    cell = table.cells[method][column]
    return cell, table.best.get(column) == method, method != table.baseline and cell.significant


def to_markdown(
    table: StudyTable, digits: int = 2, *, eps: Budgets = None, norm: str = "linf", stars: Stars = None
) -> str:
    """A GitHub-flavoured Markdown table (``| method | 5% | ... | Total |``) with the legend below it.

    The title, when set, is the first line; ``|`` in names is escaped as ``\\|``. With ``eps`` the budget
    headers read ``5% (eps 0.0111 = 2.84/255)``; ``stars`` marks cells with ``*`` (see the module docstring).
    """
    _check("to_markdown", table, digits)

    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [f"**{esc(table.title)}**", ""] if table.title else []
    heads = [esc(c) + (f" ({sub})" if sub and eps is not None else "") for c, sub in _headers(table, eps, norm)]
    lines.append("| method | " + " | ".join(heads) + " |")
    lines.append("|---" + "|---:" * len(table.columns) + "|")
    for m in table.methods:
        parts = []
        for col in table.columns:
            cell, best, sig = _marked(table, m, col)
            text = _cell_text(cell, digits)
            text = f"**{text}**" if best else text
            parts.append(text + (DAGGER if sig else "") + (STAR if _starred(stars, m, col) else ""))
        lines.append(f"| {esc(m)} | " + " | ".join(parts) + " |")
    lines += ["", legend(table, stars)]
    return "\n".join(lines) + "\n"


def to_csv(table: StudyTable, *, eps: Sequence[float] | None = None, stars: Stars = None) -> str:
    """Long-format CSV: one row per (method, column), every CellStats field plus ``best`` (True/False),
    ``eps`` (the absolute budget; empty for Total or when not given) and ``targets_every_label`` (the ``*``).

    Floats are written with ``repr`` (full precision, ``inf``/``nan`` as such), ``None`` as an empty field,
    so ``float()`` on a non-empty field gives back the exact number.
    """
    _check("to_csv", table)
    names = [f.name for f in dataclasses.fields(CellStats)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*names, "best", "eps", "targets_every_label"], lineterminator="\n")
    writer.writeheader()
    col_eps = dict(zip(table.columns[:-1], eps, strict=True)) if eps is not None else {}
    for m in table.methods:
        for col in table.columns:
            cell, best, _ = _marked(table, m, col)
            row = {}
            for name in names:
                value = getattr(cell, name)
                row[name] = "" if value is None else repr(value) if isinstance(value, float) else str(value)
            row["best"] = str(best)
            row["eps"] = repr(float(col_eps[col])) if col in col_eps else ""
            row["targets_every_label"] = str(_starred(stars, m, col))
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


def to_latex(
    table: StudyTable, digits: int = 2, *, eps: Budgets = None, norm: str = "linf", stars: Stars = None
) -> str:
    """A booktabs ``tabular`` (needs only ``\\usepackage{booktabs}``), title and legend as ``%`` comments.

    Cells are ``mean $\\pm$ std``; the best cell is ``\\textbf{...}``, a significant one gets ``$^\\dagger$``,
    a ``stars`` cell ``$^*$``. With ``eps`` a second header row gives each budget column's absolute eps.
    """
    _check("to_latex", table, digits)
    lines = []
    if table.title:
        lines.append("% " + table.title.replace("\n", " "))
    lines.append("% " + legend(table, stars).replace(DAGGER, "dagger").replace("±", "+/-"))
    lines.append(r"\begin{tabular}{l" + "r" * len(table.columns) + "}")
    lines.append(r"\toprule")
    lines.append("Method & " + " & ".join(latex_escape(c) for c in table.columns) + r" \\")
    if eps is not None:
        subs = [latex_escape(sub.removeprefix("eps ")) for _, sub in _headers(table, eps, norm)]
        lines.append(r"$\varepsilon$ & " + " & ".join(subs) + r" \\")
    lines.append(r"\midrule")
    for m in table.methods:
        parts = []
        for col in table.columns:
            cell, best, sig = _marked(table, m, col)
            text = f"{_number(cell.mean, digits)} $\\pm$ {_number(cell.std_pop, digits)}"
            text = f"\\textbf{{{text}}}" if best else text
            parts.append(text + ("$^\\dagger$" if sig else "") + ("$^*$" if _starred(stars, m, col) else ""))
        lines.append(latex_escape(m) + " & " + " & ".join(parts) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def to_html(table: StudyTable, digits: int = 2, *, eps: Budgets = None, norm: str = "linf", stars: Stars = None) -> str:
    """An HTML ``<table>`` with a ``<caption>`` (title, or a default) and the legend in ``<tfoot>``.

    All text is escaped with :func:`html.escape`; the best cell is ``<strong>``, the significance marker is
    ``<span class="sig">†</span>``, the ``k = K`` marker ``<span class="star">*</span>``. Headers carry a
    smaller lines (``<span class="sub">``): the absolute eps and its ``n/255`` (with ``eps``) and, for Total,
    what it sums. The report's style sheet keeps every cell on one line (``white-space: nowrap``).
    """
    _check("to_html", table, digits)
    e = html.escape
    caption = table.title or f"Flips per sample: mean ± std (vs {table.baseline})"
    lines = ['<table class="labelflip-study">', f"<caption>{e(caption)}</caption>", "<thead>"]

    def th(parts: Sequence[str]) -> str:
        return "<th>" + "<br>".join([e(parts[0]), *(f'<span class="sub">{e(p)}</span>' for p in parts[1:])]) + "</th>"

    first = ["method", *(["eps", "n/255"][: 2 if norm == "linf" else 1] if eps is not None else [])]
    heads = [th([c, *[p for p in sub.removeprefix("eps ").split(" = ") if p]]) for c, sub in _headers(table, eps, norm)]
    lines.append("<tr>" + th(first) + "".join(heads) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    for m in table.methods:
        parts = []
        for col in table.columns:
            cell, best, sig = _marked(table, m, col)
            text = e(_cell_text(cell, digits))
            text = f"<strong>{text}</strong>" if best else text
            marker = f'<span class="sig">{DAGGER}</span>' if sig else ""
            marker += f'<span class="star">{STAR}</span>' if _starred(stars, m, col) else ""
            parts.append(f"<td>{text}{marker}</td>")
        lines.append(f'<tr><th scope="row">{e(m)}</th>' + "".join(parts) + "</tr>")
    lines += ["</tbody>", "<tfoot>"]
    lines.append(f'<tr><td class="legend" colspan="{len(table.columns) + 1}">{e(legend(table, stars))}</td></tr>')
    lines += ["</tfoot>", "</table>"]
    return "\n".join(lines) + "\n"


def to_rich(table: StudyTable | FlipTable) -> RichTable:
    """A terminal table: mean ± std (population); for a StudyTable bold green = best where significant and
    † = significant vs the baseline; for a FlipTable green = the highest mean of the column (no test)."""
    t = RichTable(title=table.title or None, title_justify="left")
    t.add_column("method", style="bold")
    if isinstance(table, FlipTable):
        for label in table.column_labels:
            t.add_column(label, justify="right")
        t.add_column("Total", justify="right")
        best = [max(row[1][c][0] for row in table.rows) for c in range(len(table.budgets))]
        for name, cells, total in table.rows:
            rendered = []
            for c, (m, sd) in enumerate(cells):
                txt = f"{m:.2f} ± {sd:.2f}"
                rendered.append(f"[bold green]{txt}[/]" if m == best[c] and len(table.rows) > 1 else txt)
            t.add_row(name, *rendered, f"{total:.2f}")
        t.caption = "std: population (ddof=0). Green: highest mean of the column (no test; `labelflip study` tests)."
        return t
    for col in table.columns:
        t.add_column(col, justify="right")
    for method in table.methods:
        cells = []
        for col in table.columns:
            c = table.cells[method][col]
            txt = f"{c.mean:.2f} ± {c.std_pop:.2f}" + (DAGGER if c.significant else "")
            cells.append(f"[bold green]{txt}[/]" if table.best.get(col) == method else txt)
        t.add_row(method, *cells)
    t.caption = (
        f"std: population (ddof=0). {DAGGER}: paired two-sided t-test vs {table.baseline}, Holm-corrected, "
        f"p < {table.alpha}. Green: best where significant."
    )
    return t


# ----------------------------------------------------------------------------- quick flip tables (no test)
@dataclass
class FlipTable:
    """Rows of ``(method, [(mean, std) per budget], total)`` over shared budget columns (seed Tables IV-VI
    layout; std is the population std unless ``ddof=1``; Total is the sum of the column means)."""

    budgets: list[float]
    column_labels: list[str]
    rows: list[tuple[str, list[tuple[float, float]], float]]
    ddof: int = 0
    title: str = ""

    def to_markdown(self, digits: int = 2) -> str:
        head = "| method | " + " | ".join(self.column_labels) + " | Total |"
        sep = "|---" * (len(self.column_labels) + 2) + "|"
        lines = [head, sep]
        for name, cells, total in self.rows:
            body = " | ".join(f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in cells)
            lines.append(f"| {name} | {body} | {total:.{digits}f} |")
        return "\n".join(lines)


def flip_table(
    results: Mapping[str, AttackResult],
    *,
    column_labels: Sequence[str] | None = None,
    ddof: int = 0,
    title: str = "",
) -> FlipTable:
    """Build a :class:`FlipTable` from results that share the same budgets (checked)."""
    if not results:
        raise fail("flip_table", "results", "a non-empty mapping of method -> AttackResult", results)
    first = next(iter(results.values()))
    budgets = first.eps.tolist()
    for name, res in results.items():
        if res.eps.tolist() != budgets:
            raise fail(
                "flip_table",
                "results",
                f"results at the same budgets ({budgets})",
                f"{name!r} at {res.eps.tolist()}",
                "run every method on the same budget list.",
            )
    labels = list(column_labels) if column_labels is not None else [f"{e:.4g}" for e in budgets]
    if len(labels) != len(budgets):
        raise fail("flip_table", "column_labels", f"{len(budgets)} labels (one per budget)", labels)
    rows = []
    for name, res in results.items():
        mean, std = res.mean_flips(), res.std_flips(ddof)
        cells = [(float(mean[b]), float(std[b])) for b in range(len(budgets))]
        rows.append((name, cells, float(mean.sum())))
    return FlipTable(budgets=budgets, column_labels=labels, rows=rows, ddof=ddof, title=title)


# ----------------------------------------------------------------------------- analysis tables
_ATT_NAMES = {
    "RxC": "attackability vs confidence",
    "FxC": "frequency vs confidence",
    "FxR": "frequency vs attackability",
}


def attackability_markdown(att: Attackability, method: str = "pearson") -> str:
    """Table II layout: rows = correlation, one column (this model); ``*`` = p > 0.05."""
    c = att.correlations()
    lines = [f"| {method} correlation | value |", "|---|---|"]
    for d in ("up", "down"):
        for key, label in _ATT_NAMES.items():
            name = f"**flip {d}**: {label}" if key == "RxC" else f"flip {d}: {label}"
            lines.append(f"| {name} | {c[d][key].mark(method=method)} |")
    return "\n".join(lines)


def attackability_html(att: Attackability) -> str:
    """Table II for one model: Pearson and Spearman coefficients with p-values (``*`` = p > 0.05)."""
    c = att.correlations()
    rows = []
    for d in ("up", "down"):
        for key, label in _ATT_NAMES.items():
            st = c[d][key]
            rows.append(
                f"<tr><th scope='row'>flip {d}: {html.escape(label)}</th><td>{st.mark()}</td>"
                f"<td>{st.pearson_p:.3g}</td><td>{st.mark(method='spearman')}</td><td>{st.spearman_p:.3g}</td>"
                f"<td>{st.n}</td></tr>"
            )
    head = "<tr><th>correlation</th><th>Pearson r</th><th>p</th><th>Spearman ρ</th><th>p</th><th>labels</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def targets_vs_flips_markdown(tvf: TargetsVsFlips) -> str:
    """Mean flips per (budget, number of targets), with ``t_opt``, ``flips_opt`` and their ratio."""
    head = "| eps | " + " | ".join(str(n) for n in tvf.n_targets) + " | t_opt | flips_opt | ratio |"
    lines = [head, "|---" * (len(tvf.n_targets) + 4) + "|"]
    for b, eps in enumerate(tvf.budgets):
        t, f = tvf.optimum(b)
        cells = " | ".join(f"{v:.2f}" for v in tvf.mean_flips[b])
        ratio = f / t if t else float("nan")
        lines.append(f"| {eps:.4g} | {cells} | {t} | {f:.2f} | {ratio:.2f} |")
    return "\n".join(lines)

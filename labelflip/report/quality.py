"""Model quality against ground truth in the report: clean and under attack, per method and budget.

For one model, :func:`quality_table` scores the stored confidences of the study's evaluation samples against
their ground truth (``labels`` of the study's dataset artefact): mAP (:func:`labelflip.metrics.
mean_average_precision`, labels with at least one positive among the samples), micro-F1 and macro-F1
(:func:`labelflip.metrics.f1_scores`, a label is predicted when ``confidence > threshold``), once on the clean
inputs and once per (method, budget) on the adversarial inputs. Stochastic methods are averaged over seeds.
:func:`quality_html` and :func:`quality_markdown` render it: rows = metric x method, columns = clean and the
budgets (each header with its absolute eps).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from labelflip._validation import fail
from labelflip.metrics import f1_scores, mean_average_precision
from labelflip.report.tables import eps_text

__all__ = ["METRICS", "QualityTable", "quality_html", "quality_markdown", "quality_metrics", "quality_table"]

#: metric key -> printed name.
METRICS = {"map": "mAP", "micro_f1": "micro-F1", "macro_f1": "macro-F1"}


def quality_metrics(conf: np.ndarray, y: np.ndarray, threshold: float | np.ndarray) -> dict[str, float]:
    """``{"map", "micro_f1", "macro_f1"}`` of confidences ``conf`` ``(N, K)`` in [0, 1] against ``y`` ``(N, K)``
    in {0, 1}; ``threshold`` a float or ``(K,)`` (strict ``conf > threshold``). mAP is NaN when no label has a
    positive among the N samples."""
    conf = np.asarray(conf, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if conf.ndim != 2 or conf.shape != y.shape:
        raise fail("quality_metrics", "y", f"ground truth of the confidences' shape {conf.shape}", y.shape)
    micro, macro = f1_scores(conf > np.asarray(threshold, dtype=np.float64), y)
    return {"map": mean_average_precision(conf, y), "micro_f1": micro, "macro_f1": macro}


@dataclass
class QualityTable:
    """Quality of one model on ``n`` samples: ``clean[metric]`` and ``attacked[method][metric]`` (one value per
    budget column); ``reference`` holds the model's own recorded metrics (e.g. from training), if any."""

    model: str
    n: int
    columns: list[str]
    eps: list[float]
    norm: str
    clean: dict[str, float]
    attacked: dict[str, dict[str, list[float]]]
    reference: dict[str, float] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """What the numbers are, in one paragraph (the caption's second half)."""
        ref = ", ".join(f"{k} = {v:.3f}" for k, v in self.reference.items() if k != "train_seconds")
        return (
            f"Against the ground truth of the {self.n} evaluation samples: mAP over the labels with a positive among "
            "them, micro- and macro-F1 with a label predicted when its confidence > the threshold. 'clean' = no "
            "attack; each budget column = the adversarial inputs of that method (mean over seeds for stochastic "
            "methods). The attacks maximise flips against the clean prediction, not errors against the truth. "
            + (f"Recorded with the model: {ref}." if ref else "No quality metrics were recorded with the model.")
        )


def quality_table(
    model: str,
    clean_conf: np.ndarray,
    adversarial: Mapping[str, Sequence[Sequence[np.ndarray]]],
    labels: np.ndarray,
    threshold: float | np.ndarray,
    *,
    columns: Sequence[str],
    eps: Sequence[float],
    norm: str = "linf",
    reference: Mapping[str, float] | None = None,
) -> QualityTable:
    """Score clean and adversarial confidences against ``labels``.

    Args:
        model: the model's name.
        clean_conf: ``(N, K)`` clean confidences of the evaluation samples.
        adversarial: method -> per seed -> per budget the ``(N, K)`` adversarial confidences.
        labels: ``(N, K)`` ground truth in {0, 1}, in sample order.
        threshold: the model's decision threshold, a float or ``(K,)``.
        columns, eps: the budget columns' labels and absolute budgets.
        norm: ``"linf"`` (headers add ``n/255``) or ``"l2"``.
        reference: the model's recorded metrics (shown in the note).
    """
    y = np.asarray(labels, dtype=np.float64)
    clean = quality_metrics(clean_conf, y, threshold)
    attacked: dict[str, dict[str, list[float]]] = {}
    for method, per_seed in adversarial.items():
        scores = [[quality_metrics(conf, y, threshold) for conf in budgets] for budgets in per_seed]
        attacked[method] = {
            key: [float(np.mean([s[b][key] for s in scores])) for b in range(len(columns))] for key in METRICS
        }
    return QualityTable(
        model, int(y.shape[0]), list(columns), [float(e) for e in eps], norm, clean, attacked, dict(reference or {})
    )


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def quality_html(table: QualityTable) -> str:
    """An HTML table: a row group per metric (rows = methods), columns = clean then the budgets."""
    e = html.escape

    def th(parts: Sequence[str]) -> str:
        return "<th>" + "<br>".join([e(parts[0]), *(f'<span class="sub">{e(p)}</span>' for p in parts[1:])]) + "</th>"

    eps_rows = ["eps", "n/255"] if table.norm == "linf" else ["eps"]
    heads = [th([c, *eps_text(x, table.norm).split(" = ")]) for c, x in zip(table.columns, table.eps, strict=True)]
    lines = [
        '<table class="labelflip-quality">',
        f"<thead><tr>{th(['metric'])}{th(['method', *eps_rows])}{th(['clean', 'no attack'])}{''.join(heads)}</tr>"
        "</thead>",
        "<tbody>",
    ]
    methods = list(table.attacked)
    for key, name in METRICS.items():
        for i, method in enumerate(methods):
            row = f'<th scope="row">{e(method)}</th>'
            if i == 0:
                span = f' rowspan="{len(methods)}"'
                clean = f'<td class="clean"{span}>{_num(table.clean[key])}</td>'
                row = f'<th scope="rowgroup"{span}>{e(name)}</th>{row}{clean}'
            cells = "".join(f"<td>{_num(v)}</td>" for v in table.attacked[method][key])
            lines.append(f"<tr>{row}{cells}</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"


def quality_markdown(table: QualityTable) -> str:
    """The same table in Markdown (the clean value repeated on every row of its metric), with the note."""
    heads = " | ".join(f"{c} (eps {eps_text(x, table.norm)})" for c, x in zip(table.columns, table.eps, strict=True))
    lines = [f"| metric | method | clean | {heads} |", "|---|---" + "|---:" * (len(table.columns) + 1) + "|"]
    for key, name in METRICS.items():
        for method, values in table.attacked.items():
            cells = " | ".join(_num(v) for v in values[key])
            escaped = method.replace("|", "\\|")
            lines.append(f"| {name} | {escaped} | {_num(table.clean[key])} | {cells} |")
    return "\n".join([*lines, "", table.note]) + "\n"

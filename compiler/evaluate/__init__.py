"""Evaluating generated records: validity, fidelity, memorisation, and an HTML report.

Needs the `evaluate` extra (SDMetrics, pandas, plotly): pip install 'keraspec[evaluate]'.
"""

from compiler.evaluate.evaluation import ColumnReport, Evaluation, Scores, evaluate

__all__ = ["ColumnReport", "Evaluation", "Scores", "evaluate", "write_html"]


def write_html(evaluation: Evaluation, path: str) -> None:
    """Write the evaluation as a self-contained HTML report (atomically)."""
    from compiler.evaluate.html import write_html as write

    write(evaluation, path)

"""Fidelity and distance metrics of synthetic records, with SDMetrics.

Rows are turned into pandas frames typed by their columns' kinds: integer and decimal
columns are numbers, temporal columns datetimes (a value that does not parse is missing),
categorical columns strings, and a text column is its values' lengths. SDMetrics then
measures:

- column shapes: each column's distribution, synthetic against real (KSComplement for
  numbers, datetimes and text lengths; TVComplement for categories), from 0 to 1;
- column pair trends: each pair's correlation or contingency table (text columns left out);
- distance to closest record (DCR): per record, the distance to the nearest reference record
  over the non-text columns (range-scaled differences of numbers and datetimes, 0/1 for
  categories, averaged), from 0 (a copy) to 1.

pandas and SDMetrics are imported here only: they are the `evaluate` extra.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Sequence

import numpy as np

from compiler.data.columns import Column

# DCR compares every record with every reference record (SDMetrics does it in pandas
# chunks): beyond this many reference records a random sample of them is used.
MAX_DCR_REFERENCE = 10_000
MAX_DCR_ROWS = 2_000

_TABLE = "records"
_SDTYPE = {
    "integer": "numerical",
    "decimal": "numerical",
    "date": "datetime",
    "datetime": "datetime",
    "time": "datetime",
    "categorical": "categorical",
    "text": "numerical",  # its values' lengths
}


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """How close synthetic rows are to real ones, from 0 (unrelated) to 1 (identical).

    Attributes:
        column_shapes: The mean of `shapes`.
        column_pair_trends: The mean pair score (None with fewer than two non-text columns).
        shapes: Per column name: (metric, score).
        pairs: Per pair: (column, column, metric, score).
    """

    column_shapes: float
    column_pair_trends: Optional[float]
    shapes: dict[str, tuple[str, float]]
    pairs: list[tuple[str, str, str, float]]

    @property
    def score(self) -> float:
        """The mean of the two components (column shapes alone when there are no pairs)."""
        parts = [self.column_shapes]
        if self.column_pair_trends is not None:
            parts.append(self.column_pair_trends)
        return float(np.mean(parts))


def metadata(columns: Sequence[Column]) -> dict[str, Any]:
    """SDMetrics single-table metadata of the columns."""
    return {"columns": {c.name: {"sdtype": _SDTYPE[c.kind]} for c in columns}}


def frame(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> Any:
    """Rows (each with one value per column) as a typed pandas DataFrame."""
    import pandas as pd

    data: dict[str, Any] = {}
    for i, column in enumerate(columns):
        values = pd.Series([row[i] for row in rows], dtype="object")
        if column.kind in ("integer", "decimal"):
            data[column.name] = pd.to_numeric(values.where(values != ""), errors="coerce")
        elif column.kind in ("date", "datetime", "time"):
            data[column.name] = pd.to_datetime(
                values.where(values != ""), format=column.format, errors="coerce"
            )
        elif column.kind == "text":
            data[column.name] = values.str.len().astype(float)
        else:
            data[column.name] = values.astype(str)
    return pd.DataFrame(data, columns=[c.name for c in columns])


def fidelity(columns: Sequence[Column], real: Any, synthetic: Any) -> Fidelity:
    """Column shapes and column pair trends of synthetic against real frames."""
    from sdmetrics.reports import QualityReport

    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate({_TABLE: real}, {_TABLE: synthetic},
                        {"tables": {_TABLE: metadata(columns)}}, verbose=False)
    shapes: dict[str, tuple[str, float]] = {}
    for row in report.get_details("Column Shapes").to_dict("records"):
        score = row.get("Score")
        shapes[str(row["Column"])] = (str(row["Metric"]), _score(score))
    for column in columns:  # a column SDMetrics could not score scores 0
        shapes.setdefault(column.name, ("none", 0.0))
    text = {c.name for c in columns if c.kind == "text"}
    pairs = []
    if len(columns) - len(text) >= 2:
        for row in report.get_details("Column Pair Trends").to_dict("records"):
            a, b = str(row["Column 1"]), str(row["Column 2"])
            if a in text or b in text or row.get("Meets Threshold?") is False:
                continue  # SDMetrics leaves out pairs the real data does not relate
            pairs.append((a, b, str(row["Metric"]), _score(row.get("Score"))))
    return Fidelity(
        column_shapes=float(np.mean([s for _, s in shapes.values()])),
        column_pair_trends=float(np.mean([p[3] for p in pairs])) if pairs else None,
        shapes=shapes,
        pairs=pairs,
    )


def _score(value: Any) -> float:
    """A metric's score; one SDMetrics could not compute (e.g. a synthetic column with no
    value that parses) is 0."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        return 0.0
    return score if np.isfinite(score) else 0.0


def distances(columns: Sequence[Column], rows: Any, reference: Any, seed: int) -> Optional[Any]:
    """Each row's distance to its closest reference record (numpy array), over the non-text
    columns; None when there are none. Large inputs are sampled (MAX_DCR_*)."""
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    kept = [c for c in columns if c.kind != "text"]
    if not kept or len(rows) == 0 or len(reference) == 0:
        return None
    names = [c.name for c in kept]
    rng = np.random.default_rng(seed)
    if len(reference) > MAX_DCR_REFERENCE:
        reference = reference.iloc[rng.choice(len(reference), MAX_DCR_REFERENCE, replace=False)]
    if len(rows) > MAX_DCR_ROWS:
        rows = rows.iloc[rng.choice(len(rows), MAX_DCR_ROWS, replace=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = calculate_dcr(rows[names].reset_index(drop=True),
                              reference[names].reset_index(drop=True), metadata(kept))
    return found.to_numpy(dtype=float)

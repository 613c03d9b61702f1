"""Columns of delimited records, and the validators generated records are checked with.

A delimited corpus (CSV and the like, one record per line) has a dialect (delimiter,
quote character, whether its first line is a header) and columns. Each column has a kind:

    integer      digits with an optional sign, within a range
    decimal      a number with a decimal point, within a range, at most N decimals
    date         a calendar date in one strftime format (2025-06-31 is not one)
    datetime     a date and a time of day in one format
    time         a time of day in one format
    categorical  one of a set of values (low cardinality)
    text         free text, of a bounded length, from a set of characters

Columns are learned from training records (`infer_columns`), or declared in the spec's
`data` block. A record is valid when it parses (a real CSV parser, quotes respected) into
the field count and every field passes its column's rule. A DP run learns no rule from its
records, whose values the guarantee covers: it keeps the field count only, unless the spec
declares its columns (`learn_validators`). No TensorFlow and no pandas here.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import re
from typing import Any, Iterable, Optional, Sequence

from compiler.data.corpus import record_shape

VALIDATORS_FILE = "validators.json"
KINDS = ("integer", "decimal", "date", "datetime", "time", "categorical", "text")
TEMPORAL = ("date", "datetime", "time")

# strftime formats tried, in order, for each temporal kind: the first that every value of a
# column parses with (and keeps the same digit layout) is the column's format.
FORMATS: dict[str, tuple[str, ...]] = {
    "datetime": (
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S.%f",
        "%Y-%m-%d %H:%M:%S.%f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
        "%d/%m/%Y %H:%M:%S",
        "%m/%d/%Y %H:%M:%S",
        "%d/%m/%Y %H:%M",
        "%m/%d/%Y %H:%M",
    ),
    "date": ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y"),
    "time": ("%H:%M:%S", "%H:%M", "%H:%M:%S.%f"),
}
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)")
# A learned numeric or temporal range is the training range widened by this share of its
# span on each side: a model that generalises a little is not failed for it.
MARGIN = 0.1
# A column is categorical when it has at most this many distinct values, each appearing five
# times on average (twice, for up to 20 values); fewer repeats make it text.
MAX_CATEGORIES = 1000
_REPEATS = 5
# Text longer than the longest training value by more than this share fails.
_LENGTH_MARGIN = 0.5


@dataclasses.dataclass(frozen=True)
class Column:
    """One column's rule. Bounds are inclusive and already include any margin.

    Attributes:
        name: The column's name (header, declared, or `field_N`).
        kind: One of KINDS.
        nullable: Whether an empty value is allowed.
        values: categorical: the allowed values.
        minimum, maximum: integer and decimal: numbers; temporal kinds: values in `format`.
        format: temporal kinds: the strftime format.
        decimals: decimal: the most digits after the point.
        max_length: text: the most characters.
        characters: text: the characters allowed (None: any).
        layouts: temporal kinds: the digit layouts allowed ("9999-99-99"; None: any), so
            that 2025-6-9 fails where training wrote 2025-06-09.
    """

    name: str
    kind: str
    nullable: bool = False
    values: Optional[tuple[str, ...]] = None
    minimum: Optional[Any] = None
    maximum: Optional[Any] = None
    format: Optional[str] = None
    decimals: Optional[int] = None
    max_length: Optional[int] = None
    characters: Optional[str] = None
    layouts: Optional[tuple[str, ...]] = None

    def check(self, value: str) -> Optional[str]:
        """Why `value` fails this column's rule, or None when it passes."""
        if value == "":
            return None if self.nullable else "empty"
        if self.kind == "categorical":
            return None if self.values is None or value in self.values else "category"
        if self.kind == "text":
            if self.max_length is not None and len(value) > self.max_length:
                return "length"
            if self.characters is not None and not set(value) <= set(self.characters):
                return "characters"
            return None
        if self.kind in TEMPORAL:
            parsed = parse_temporal(value, self.format or "")
            if parsed is None or (self.layouts is not None and _layout(value) not in self.layouts):
                return "type"
            low = None if self.minimum is None else parse_temporal(str(self.minimum), self.format)
            high = None if self.maximum is None else parse_temporal(str(self.maximum), self.format)
            return "range" if (low and parsed < low) or (high and parsed > high) else None
        number = parse_number(value, self.kind)
        if number is None:
            return "type"
        if (
            self.kind == "decimal"
            and self.decimals is not None
            and _decimals(value) > self.decimals
        ):
            return "decimals"
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            return "range"
        return None

    def describe(self) -> str:
        """The rule in a few words, for reports."""
        parts = [self.kind]
        if self.format:
            parts.append(self.format)
        if self.values is not None:
            shown = ", ".join(self.values[:3]) + (", ..." if len(self.values) > 3 else "")
            parts.append(f"of {len(self.values)} ({shown})")
        if self.minimum is not None or self.maximum is not None:
            parts.append(f"[{_show(self.minimum)}, {_show(self.maximum)}]")
        if self.decimals is not None:
            parts.append(f"<= {self.decimals} decimals")
        if self.max_length is not None:
            parts.append(f"<= {self.max_length} chars")
        if self.nullable:
            parts.append("may be empty")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(self).items()
            if v is not None
        }


def _show(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class Failure:
    """Why a record is not valid: a wrong field count (column None), or one field's rule."""

    column: Optional[str]
    reason: str
    value: str


@dataclasses.dataclass(frozen=True)
class Validators:
    """How generated records are checked.

    Attributes:
        source: "learned" (from the training records at train time), "declared" (the spec's
            `data` block) or "field_count" (a DP run: the field count only).
        delimiter, quotechar: The CSV dialect.
        fields: The field count every record must have.
        header: Whether the data file's first line is a header (not a record).
        columns: One rule per field; None checks the field count only.
    """

    source: str
    delimiter: str
    quotechar: str
    fields: int
    header: bool = False
    columns: Optional[tuple[Column, ...]] = None

    @property
    def names(self) -> list[str]:
        if self.columns is not None:
            return [c.name for c in self.columns]
        return default_names(self.fields)

    def split(self, record: str) -> Optional[list[str]]:
        """The record's fields, or None when it does not parse as one CSV row."""
        return split_record(record, self.delimiter, self.quotechar)

    def failures(self, record: str) -> list[Failure]:
        """Every rule the record breaks; empty when it is valid."""
        row = self.split(record)
        if row is None or len(row) != self.fields:
            received = (
                "an unparseable record"
                if row is None
                else (f"{len(row)} field" + ("s" if len(row) != 1 else ""))
            )
            return [Failure(None, "fields", received)]
        if self.columns is None:
            return []
        found = []
        for column, value in zip(self.columns, row):
            reason = column.check(value)
            if reason is not None:
                found.append(Failure(column.name, reason, value))
        return found

    def is_valid(self, record: str) -> bool:
        return not self.failures(record)

    def describe_source(self) -> str:
        return {
            "learned": "learned from the training records when the run started",
            "declared": "declared in the spec's data block",
            "declared+learned": "declared in the spec's data block, the rules of fields "
            "without a kind learned from the training records",
            "field_count": "the field count only: a DP run learns no rule from its records "
            "(declare the columns in the spec's data block for more)",
        }[self.source]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "delimiter": self.delimiter,
            "quotechar": self.quotechar,
            "fields": self.fields,
            "header": self.header,
            "columns": None if self.columns is None else [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_shape(cls, shape: dict[str, Any]) -> "Validators":
        """Field-count validators from a run's `record_shape` (runs written before columns)."""
        return cls("field_count", str(shape["delimiter"]), '"', int(shape["fields"]))


def default_names(count: int) -> list[str]:
    return [f"field_{i + 1}" for i in range(count)]


def split_record(record: str, delimiter: str, quotechar: str = '"') -> Optional[list[str]]:
    """One record's fields, parsed as a CSV row (quotes respected), or None if malformed."""
    try:
        rows = list(csv.reader([record], delimiter=delimiter, quotechar=quotechar, strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def parse_number(value: str, kind: str) -> Optional[float]:
    pattern = _INTEGER if kind == "integer" else _DECIMAL
    if not pattern.fullmatch(value):
        return None
    return float(value)


def parse_temporal(value: str, fmt: Optional[str]) -> Optional[dt.datetime]:
    if not fmt:
        return None
    try:
        return dt.datetime.strptime(value, fmt)
    except ValueError:
        return None


def _decimals(value: str) -> int:
    return len(value.split(".", 1)[1]) if "." in value else 0


def _layout(value: str) -> str:
    return re.sub(r"\d", "9", value)


# ------------------------------------------------------------------------------- learning


def infer_column(name: str, values: Sequence[str]) -> Column:
    """A column's rule learned from its training values (margins included)."""
    present = [v for v in values if v != ""]
    nullable = len(present) < len(values)
    if not present:
        return Column(name, "text", nullable=True, max_length=0)
    kind = _numeric_kind(present)
    if kind is not None:
        numbers = [float(v) for v in present]
        low, high = _widen(min(numbers), max(numbers))
        if kind == "integer":
            low, high = float(int(low // 1)), float(-int(-high // 1))
        decimals = max(_decimals(v) for v in present) if kind == "decimal" else None
        return Column(name, kind, nullable, minimum=low, maximum=high, decimals=decimals)
    for temporal in ("datetime", "date", "time"):
        fmt = _temporal_format(temporal, present)
        if fmt is not None:
            parsed = [dt.datetime.strptime(v, fmt) for v in present]
            first, last = min(parsed), max(parsed)
            span = last - first
            low, high = first - span * MARGIN, last + span * MARGIN
            if temporal == "time":  # a time of day wraps nowhere: stay within the day
                low, high = max(low, first.replace(hour=0, minute=0, second=0, microsecond=0)), min(
                    high, first.replace(hour=23, minute=59, second=59, microsecond=999999)
                )
            return Column(
                name,
                temporal,
                nullable,
                minimum=_format_bound(low, fmt),
                maximum=_format_bound(high, fmt),
                format=fmt,
                layouts=tuple(sorted({_layout(v) for v in present})),
            )
    counts = collections.Counter(present)
    distinct, n = len(counts), len(present)
    if distinct <= MAX_CATEGORIES and (
        distinct * _REPEATS <= n or (distinct <= 20 and distinct * 2 <= n)
    ):
        return Column(name, "categorical", nullable, values=tuple(sorted(counts)))
    longest = max(len(v) for v in present)
    return Column(
        name,
        "text",
        nullable,
        max_length=int(longest * (1 + _LENGTH_MARGIN)) + 1,
        characters="".join(sorted(set("".join(present)))),
    )


def _numeric_kind(values: Sequence[str]) -> Optional[str]:
    if all(_INTEGER.fullmatch(v) for v in values):
        # Leading zeros (zip codes, identifiers) are a format, not a number.
        if any(len(v.lstrip("+-")) > 1 and v.lstrip("+-").startswith("0") for v in values):
            return None
        return "integer"
    if all(_DECIMAL.fullmatch(v) for v in values):
        return "decimal"
    return None


def _temporal_format(kind: str, values: Sequence[str]) -> Optional[str]:
    for fmt in FORMATS[kind]:
        if all(parse_temporal(v, fmt) is not None for v in values):
            return fmt
    return None


def _format_bound(value: dt.datetime, fmt: str) -> str:
    try:
        return value.strftime(fmt)
    except ValueError:  # before year 1 or after 9999: no bound on that side
        return ""


def _widen(low: float, high: float) -> tuple[float, float]:
    """The range widened by MARGIN of its span; a range of non-negative values stays so."""
    span = high - low
    margin = span * MARGIN if span > 0 else max(abs(low) * MARGIN, 1.0)
    return (low - margin if low < 0 else max(low - margin, 0.0)), high + margin


def infer_columns(rows: Sequence[Sequence[str]], names: Sequence[str]) -> tuple[Column, ...]:
    """Every column's rule, learned from rows of the same field count."""
    return tuple(infer_column(name, [row[i] for row in rows]) for i, name in enumerate(names))


def _looks_like_header(first: Sequence[str], rest: Sequence[Sequence[str]]) -> bool:
    """Whether the first row names the columns: some column is numeric or temporal in the
    other rows but not with the first row, or (all columns text) csv.Sniffer's
    heuristic agrees and the first row's values appear nowhere else in their columns."""
    if not rest:
        return False
    typed = False
    for i, value in enumerate(first):
        others = [row[i] for row in rest if row[i] != ""]
        if not others:
            continue
        alone = infer_column("", others).kind
        if alone not in ("categorical", "text"):
            typed = True
            if infer_column("", [value, *others]).kind != alone and value != "":
                return True
    if typed:
        return False
    seen = [set(row[i] for row in rest) for i in range(len(first))]
    return (
        len(set(first)) == len(first)
        and all(v != "" and not v[0].isdigit() and v not in seen[i] for i, v in enumerate(first))
        and len(rest) >= 2
        and any(
            infer_column("", [row[i] for row in rest]).kind == "categorical"
            for i in range(len(first))
        )
    )


def learn_validators(
    records: Sequence[str],
    *,
    private: bool,
    declared: Any = None,
    header_line: Optional[str] = None,
) -> Optional[Validators]:
    """The validators of a run's generated records.

    Args:
        records: The training records (every line of the data file but a declared header).
        private: A DP run: learn nothing from the records' values (field count only).
        declared: The spec's `data` block (a DataSpec), or None.
        header_line: The declared header line (already taken out of `records`), which
            names the columns of a non-DP run.

    Returns:
        None when the records are not delimited and nothing is declared.
    """
    if declared is not None and declared.format == "text":
        return None
    if declared is not None and declared.fields:
        return _declared_validators(records, private, declared)
    shape = record_shape(list(records))
    delimiter = (declared.delimiter if declared is not None else None) or (
        shape["delimiter"] if shape else None
    )
    if delimiter is None:
        return None
    quotechar = declared.quotechar if declared is not None else '"'
    rows = [split_record(r, str(delimiter), quotechar) for r in records]
    counts = collections.Counter(len(r) for r in rows if r is not None)
    if not counts:
        return None
    fields = int(shape["fields"]) if shape else counts.most_common(1)[0][0]
    header = bool(declared.header) if declared is not None and declared.header is not None else None
    if private:
        return Validators("field_count", str(delimiter), quotechar, fields, bool(header))
    good = [r for r in rows if r is not None and len(r) == fields]
    if header is None:
        header = (
            bool(good)
            and rows[0] is not None
            and len(rows[0]) == fields
            and _looks_like_header(rows[0], good[1:])
        )
    names = default_names(fields)
    named = None if header_line is None else split_record(header_line, str(delimiter), quotechar)
    if named is not None and len(named) == fields:
        names = unique_names(named)  # the declared header, outside the records
    elif header_line is None and header and good and rows[0] is not None and len(rows[0]) == fields:
        names = unique_names(rows[0])  # a detected header: the first record
        good = good[1:]
    return Validators(
        "learned", str(delimiter), quotechar, fields, header, infer_columns(good, names)
    )


def _declared_validators(records: Sequence[str], private: bool, declared: Any) -> Validators:
    """Declared fields; a field without a kind gets the rule learned from its values (none
    in a DP run)."""
    fields = declared.fields
    shape = record_shape(list(records)) if declared.delimiter is None else None
    delimiter = declared.delimiter or (str(shape["delimiter"]) if shape else ",")
    learned: Optional[tuple[Column, ...]] = None
    if not private and any(f.kind is None for f in fields):
        rows = [split_record(r, delimiter, declared.quotechar) for r in records]
        good = [r for r in rows if r is not None and len(r) == len(fields)]
        learned = infer_columns(good, [f.name for f in fields])
    columns = tuple(
        (
            declared_column(f)
            if f.kind is not None
            else (learned[i] if learned is not None else Column(f.name, "text"))
        )
        for i, f in enumerate(fields)
    )
    source = "declared+learned" if learned is not None else "declared"
    return Validators(
        source, delimiter, declared.quotechar, len(columns), bool(declared.header), columns
    )


def unique_names(values: Iterable[str]) -> list[str]:
    """Header values as column names: blanks and repeats get a number."""
    names: list[str] = []
    for i, value in enumerate(values):
        name = value.strip() or f"field_{i + 1}"
        while name in names:
            name = f"{name}_{i + 1}"
        names.append(name)
    return names


def declared_column(field: Any) -> Column:
    """A declared field (the spec's data.fields[i]) as a rule, taken as written."""
    return Column(
        name=field.name,
        kind=field.kind,
        nullable=bool(field.nullable),
        values=None if field.values is None else tuple(field.values),
        minimum=field.min,
        maximum=field.max,
        format=field.format,
        decimals=field.decimals,
        max_length=field.max_length,
    )


def declared_header(spec: Any) -> bool:
    """Whether the spec declares that its data file starts with a header line."""
    return spec.data is not None and spec.data.header is True


def validators_json(validators: Validators) -> bytes:
    import json

    return (json.dumps(validators.to_dict(), indent=1, ensure_ascii=False) + "\n").encode()


def load_validators(directory: str, shape: Optional[dict[str, Any]] = None) -> Optional[Validators]:
    """The validators saved in a run directory or an export's metadata directory.

    Falls back to field-count validators from `shape` (a run's record_shape, with
    `delimiter` and `fields`) for runs written before validators were saved; None when
    neither exists.

    Raises:
        DataError: the file exists but is not validators keraspec wrote, located.
    """
    import os

    import pydantic

    from compiler.diagnostics import DataError
    from compiler.files import read_json_as

    path = os.path.join(directory, VALIDATORS_FILE)
    if not os.path.lexists(path):
        return None if shape is None else Validators.from_shape(shape)
    return read_json_as(
        path,
        pydantic.TypeAdapter(Validators),
        error=DataError,
        code="validators_corrupt",
        advice="they are written when a run starts: restore the file, or train a new run",
    )

"""Records valid by construction: a run's validators compiled into an automaton over its
vocabulary, which generation applies as a mask on the logits before every sample.

Structured generation (outlines, XGrammar, llama.cpp grammars) in its simplest exact form:

1. Each column's rule is a small deterministic machine over characters (`_Text`,
   `_Categorical`, `_Number`, `_Temporal`, `_Anything`); `_Record` chains them with the CSV
   dialect: unquoted fields end at the delimiter, quoted fields may hold it, a doubled
   quote is a literal one, and a record ends only after its last field.
2. Every state reachable from the start is enumerated over the characters the vocabulary
   can write, and states from which no complete record can be reached are dropped. A kept
   state is therefore a prefix that some valid record extends.
3. For each kept state and each token id, the whole token string is walked: the token is
   allowed when the walk ends in a kept state, so a SentencePiece piece that spans a
   delimiter is allowed exactly when the whole piece keeps the record valid. `<eor>` is
   allowed in the states that end a valid record; `<pad>`, `<unk>` and ids the tokenizer
   does not use never are. States with no way to a record's end in tokens are dropped
   too, so a sampler can never be left without an allowed token.

The result is one int32 table [states, vocab_size] (`Automaton.table`: the next state, or
-1 for a masked token) and a start state: data, not code, which an export holds as a
tensor with its digest.

Which rules are exact (no record that breaks them can come out) and which are checked
when the record ends (a record that breaks them is resampled): see `Automaton.resampled`.
Exact: the dialect and quoting, the field count, categorical values, text characters and
maximum length, empty or not, integer and decimal formats with their digits, decimals and
ranges (the range is compared digit by digit, exactly as a decimal). Resampled: temporal
values beyond their digit layout (a day that its month does not have, the range).
No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from decimal import Decimal, InvalidOperation
from typing import Any, Hashable, Optional, Sequence

import numpy as np

from compiler.data.columns import TEMPORAL, Column, Validators, parse_temporal
from compiler.data.tokenizer import EOR_ID, Tokenizer

# A table larger than this many entries (4 bytes each) gives up the exact value sets of its
# largest categorical columns (they become text of the same characters and length, checked
# when the record ends) until it fits.
MAX_TABLE_ENTRIES = 1 << 25
# Digits of a number without a bound on that side.
_UNBOUNDED_DIGITS = 15

_State = Hashable


class _Anything:
    """Any text (no rule): a field of a field-count-only record."""

    def __init__(self, nullable: bool = True):
        self.nullable = nullable

    def start(self) -> _State:
        return 0

    def step(self, state: _State, char: str) -> Optional[_State]:
        return 1

    def accepts(self, state: _State) -> bool:
        return state == 1 or self.nullable


class _Text:
    """At most `max_length` characters of `characters` (either may be unbounded)."""

    def __init__(self, max_length: Optional[int], characters: Optional[str], nullable: bool):
        self.max_length, self.nullable = max_length, nullable
        self.characters = None if characters is None else frozenset(characters)

    def start(self) -> _State:
        return 0

    def step(self, state: _State, char: str) -> Optional[_State]:
        if self.characters is not None and char not in self.characters:
            return None
        if self.max_length is None:
            return 1
        return state + 1 if state < self.max_length else None  # type: ignore[operator]

    def accepts(self, state: _State) -> bool:
        return state != 0 or self.nullable


class _Categorical:
    """One of `values`: a state is the prefix written so far."""

    def __init__(self, values: Sequence[str], nullable: bool):
        self.values = frozenset(v for v in values if v != "" or nullable)
        self.prefixes = frozenset(v[:i] for v in self.values for i in range(len(v) + 1))
        self.nullable = nullable

    def start(self) -> _State:
        return ""

    def step(self, state: _State, char: str) -> Optional[_State]:
        grown = state + char  # type: ignore[operator]
        return grown if grown in self.prefixes else None

    def accepts(self, state: _State) -> bool:
        return state in self.values or (state == "" and self.nullable)


def _cmp(a: str, b: str) -> str:
    return "L" if a < b else ("G" if a > b else "E")


def _decimal(value: Any) -> Optional[Decimal]:
    if value is None or value == "":
        return None
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _digits(magnitude: Decimal) -> tuple[str, str]:
    """A non-negative number's integer digits (no leading zeros) and fraction digits (no
    trailing zeros)."""
    text = format(magnitude, "f")
    whole, _, fraction = text.partition(".")
    return (whole.lstrip("0") or "0"), fraction.rstrip("0")


class _Number:
    """An integer or decimal within [minimum, maximum], at most `decimals` after the point.

    Written as the validators parse it, in its plain form: an optional '-', integer digits
    without leading zeros, and for a decimal optionally '.' and 1 to `decimals` digits. The
    range is exact: each sign's magnitude is compared with the bound's digits as they are
    written (integer digits by count, then digit by digit), which is the order of the
    numbers; decimal comparison of the float bounds' shortest form never admits a value
    whose float lies outside them.

    States: ("i", sign, digits, zero, vs-low, vs-high) while writing integer digits, and
    ("f", sign, digits, vs-low, vs-high) after the point; vs-* is "L", "E" or "G": how the
    digits so far compare with the bound's.
    """

    def __init__(self, column: Column):
        self.nullable = column.nullable
        if column.kind == "integer":
            self.decimals: Optional[int] = 0
        else:
            self.decimals = column.decimals
        low, high = _decimal(column.minimum), _decimal(column.maximum)
        cap = Decimal(10) ** _UNBOUNDED_DIGITS - 1
        self.bounds: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {}
        positive = (max(low, Decimal(0)) if low is not None else Decimal(0), high)
        negative = (max(-high, Decimal(0)) if high is not None else Decimal(0), low)
        if positive[1] is None or positive[1] >= positive[0]:
            self.bounds["+"] = (_digits(positive[0]), _digits(min(positive[1] or cap, cap)))
        if low is None or low < 0:
            top = cap if low is None else min(-low, cap)
            if top >= negative[0]:
                self.bounds["-"] = (_digits(negative[0]), _digits(top))
        longest = max((len(b[1][1]) for b in self.bounds.values()), default=0)
        longest = max([longest, *(len(b[0][1]) for b in self.bounds.values())])
        # Without a limit on decimals, digits past both bounds' no longer change a comparison.
        self.fraction_cap = self.decimals if self.decimals is not None else longest + 1

    def start(self) -> _State:
        return ("s",)

    def step(self, state: _State, char: str) -> Optional[_State]:
        kind = state[0]  # type: ignore[index]
        if kind == "s":
            if char == "-" and "-" in self.bounds:
                return ("i", "-", 0, False, "E", "E")
            if char.isdigit() and "+" in self.bounds:
                return self._digit(("i", "+", 0, False, "E", "E"), char)
            return None
        if kind == "i":
            if char == "." and state[2] > 0 and self.decimals != 0:  # type: ignore[index]
                low, high = self._whole(state)
                if low == "L" or high == "G":
                    return None  # below the low bound (or above the high) whatever follows
                return ("f", state[1], 0, low, high)  # type: ignore[index]
            return self._digit(state, char) if char in "0123456789" else None
        if char not in "0123456789":
            return None
        _, sign, count, low, high = state  # type: ignore[misc]
        if self.decimals is not None and count >= self.decimals:
            return None
        (_, low_fraction), (_, high_fraction) = self.bounds[sign]
        low = low if low != "E" else _cmp(char, _at(low_fraction, count))
        high = high if high != "E" else _cmp(char, _at(high_fraction, count))
        if high == "G":
            return None
        return ("f", sign, min(count + 1, self.fraction_cap), low, high)

    def _digit(self, state: _State, char: str) -> Optional[_State]:
        if char not in "0123456789":
            return None
        _, sign, count, zero, low, high = state  # type: ignore[misc]
        if zero:
            return None  # no digit after a leading 0
        (low_whole, _), (high_whole, _) = self.bounds[sign]
        count += 1
        if count > len(high_whole):
            return None  # more integer digits than the largest value has
        low = (
            "G"
            if count > len(low_whole)
            else (low if low != "E" else _cmp(char, low_whole[count - 1]))
        )
        high = high if high != "E" else _cmp(char, high_whole[count - 1])
        return ("i", sign, count, char == "0" and count == 1, low, high)

    def _whole(self, state: _State) -> tuple[str, str]:
        """How the finished integer part compares with each bound's."""
        _, sign, count, _, low, high = state  # type: ignore[misc]
        (low_whole, _), (high_whole, _) = self.bounds[sign]
        low = "L" if count < len(low_whole) else low
        high = "L" if count < len(high_whole) else high
        return low, high

    def accepts(self, state: _State) -> bool:
        kind = state[0]  # type: ignore[index]
        if kind == "s":
            return self.nullable
        if kind == "i":
            if state[2] == 0:  # type: ignore[index]
                return False
            sign = state[1]  # type: ignore[index]
            low, high = self._whole(state)
            count = 0
        else:
            _, sign, count, low, high = state  # type: ignore[misc]
            if count == 0:
                return False
        (_, low_fraction), (_, high_fraction) = self.bounds[sign]
        # Digits not written are zeros: a bound with more non-zero digits is above.
        if low == "E" and low_fraction[count:].strip("0"):
            low = "L"
        if high == "E" and high_fraction[count:].strip("0"):
            high = "L"
        return low != "L" and high != "G"


def _at(digits: str, i: int) -> str:
    return digits[i] if i < len(digits) else "0"


_DIGITS = "0123456789"
# Zero-padded strftime directives: the digits each position may hold. A two-digit field's
# second digit depends on its first: {first digit: second digits} (month 01-12, day 01-31,
# hour 00-23).
_DIRECTIVES: dict[str, tuple[Any, ...]] = {
    "Y": (_DIGITS,) * 4,
    "y": (_DIGITS,) * 2,
    "m": ("01", {"0": "123456789", "1": "012"}),
    "d": ("0123", {"0": "123456789", "1": _DIGITS, "2": _DIGITS, "3": "01"}),
    "H": ("012", {"0": _DIGITS, "1": _DIGITS, "2": "0123"}),
    "M": ("012345", _DIGITS),
    "S": ("012345", _DIGITS),
    "f": (_DIGITS,) * 6,
}


def _format_pattern(fmt: str) -> Optional[tuple[Any, ...]]:
    """A format's characters, one set per position ("0123" for a day's first digit, or a
    {previous digit: digits} map), or None when it has a directive of no fixed width."""
    out: list[Any] = []
    i = 0
    while i < len(fmt):
        if fmt[i] != "%":
            out.append(fmt[i])
            i += 1
            continue
        if i + 1 >= len(fmt):
            return None
        code = fmt[i + 1]
        if code == "%":
            out.append("%")
        elif code in _DIRECTIVES:
            out.extend(_DIRECTIVES[code])
        else:
            return None
        i += 2
    return tuple(out)


class _Temporal:
    """A date, time or datetime in one of the column's digit layouts ("9999-99-99"), each
    position's digits narrowed by the format (a month is 01 to 12, an hour 00 to 23).
    Whether the day exists in its month, and the range, are checked when the record ends."""

    def __init__(self, column: Column):
        self.nullable = column.nullable
        pattern = _format_pattern(column.format or "")
        layouts = column.layouts
        patterns: list[tuple[Any, ...]] = []
        if layouts:
            for layout in layouts:
                narrowed = (
                    pattern
                    if pattern is not None and _layout_of(pattern) == layout
                    else tuple(_DIGITS if c == "9" else c for c in layout)
                )
                patterns.append(narrowed)
        elif pattern is not None:
            patterns.append(pattern)
        self.patterns = tuple(patterns)
        self.any = None if patterns else _Anything(column.nullable)

    def start(self) -> _State:
        return (frozenset(range(len(self.patterns))), 0, "") if self.any is None else 0

    def step(self, state: _State, char: str) -> Optional[_State]:
        if self.any is not None:
            return self.any.step(state, char)
        alive, at, previous = state  # type: ignore[misc]
        kept = frozenset(
            i
            for i in alive
            if at < len(self.patterns[i]) and _matches(self.patterns[i][at], char, previous)
        )
        return (kept, at + 1, char) if kept else None

    def accepts(self, state: _State) -> bool:
        if self.any is not None:
            return self.any.accepts(state)
        alive, at, _ = state  # type: ignore[misc]
        if at == 0:
            return self.nullable
        return any(len(self.patterns[i]) == at for i in alive)


def _matches(allowed: Any, char: str, previous: str) -> bool:
    if isinstance(allowed, dict):
        return char in allowed.get(previous, "")
    if len(allowed) == 1:
        return char == allowed
    return char in allowed


def _layout_of(pattern: tuple[Any, ...]) -> str:
    return "".join("9" if isinstance(p, dict) or len(p) > 1 else p for p in pattern)


# A temporal column with at most this many values in its range (a date column over
# thirteen years, a time column of minutes) is a set of values, exact; a wider one is its
# digit layouts, and its calendar and range are checked when the record ends.
MAX_TEMPORAL_VALUES = 5000
_STEPS = {"%f": dt.timedelta(microseconds=1), "%S": dt.timedelta(seconds=1)}


def _temporal_values(column: Column) -> Optional[list[str]]:
    """Every value of a temporal column's range, written in its format, or None when there
    are more than MAX_TEMPORAL_VALUES (or the range or format does not allow counting)."""
    fmt = column.format or ""
    low, high = (
        parse_temporal(str(b), fmt) if b not in (None, "") else None
        for b in (column.minimum, column.maximum)
    )
    if low is None or high is None or _format_pattern(fmt) is None:
        return None
    if "%f" in fmt or "%S" in fmt:
        step = _STEPS["%f" if "%f" in fmt else "%S"]
    elif "%M" in fmt:
        step = dt.timedelta(minutes=1)
    elif "%H" in fmt:
        step = dt.timedelta(hours=1)
    else:
        step = dt.timedelta(days=1)
    if (high - low) / step >= MAX_TEMPORAL_VALUES:
        return None
    values, at = [], low
    while at <= high:
        text = at.strftime(fmt)
        if column.check(text) is None:
            values.append(text)
        at += step
    return values


def _machine(column: Optional[Column]) -> Any:
    if column is None:
        return _Anything()
    if column.kind == "categorical" and column.values is not None:
        return _Categorical(column.values, column.nullable)
    if column.kind == "text":
        return _Text(column.max_length, column.characters, column.nullable)
    if column.kind in ("integer", "decimal"):
        return _Number(column)
    if column.kind in TEMPORAL:
        values = _temporal_values(column)
        if values is not None:
            return _Categorical(values, column.nullable)
        return _Temporal(column)
    return _Anything(column.nullable)


def _may_hold(machine: Any, chars: set[str]) -> bool:
    """Whether a column's values may hold one of `chars`."""
    if isinstance(machine, _Text):
        return machine.characters is None or bool(chars & machine.characters)
    if isinstance(machine, _Categorical):
        return any(c in v for v in machine.values for c in chars)
    if isinstance(machine, _Number):
        return False
    if isinstance(machine, _Temporal):
        return machine.any is not None or any(
            isinstance(p, str) and c in p
            for pattern in machine.patterns
            for p in pattern
            for c in chars
        )
    return True


class _Record:
    """The columns' machines chained by the CSV dialect. A state is (field, mode, column
    state); mode is "start" (nothing written yet), "plain" (unquoted), "quoted" (inside
    quotes) or "closing" (after a quote inside quotes: a second one is a literal quote,
    else the field has ended)."""

    def __init__(self, validators: Validators, columns: Sequence[Optional[Column]]):
        self.delimiter, self.quote = validators.delimiter, validators.quotechar
        self.machines = [_machine(c) for c in columns]
        self.fields = len(self.machines)
        # Quotes as csv and pandas write them (QUOTE_MINIMAL): around a field that may
        # hold the delimiter or the quote character, never around a number.
        special = {self.delimiter, self.quote}
        self.quotable = [_may_hold(m, special) for m in self.machines]

    def start(self) -> _State:
        return (0, "start", self.machines[0].start())

    def _next_field(self, field: int, state: _State) -> Optional[_State]:
        if not self.machines[field].accepts(state) or field + 1 >= self.fields:
            return None
        return (field + 1, "start", self.machines[field + 1].start())

    def step(self, state: _State, char: str) -> Optional[_State]:
        field, mode, inner = state  # type: ignore[misc]
        machine = self.machines[field]
        if char in "\r\n":
            return None  # one record is one line
        if mode in ("start", "plain"):
            if char == self.delimiter:
                return self._next_field(field, inner)
            if char == self.quote:
                return (
                    (field, "quoted", inner) if mode == "start" and self.quotable[field] else None
                )
            grown = machine.step(inner, char)
            return None if grown is None else (field, "plain", grown)
        if mode == "quoted":
            if char == self.quote:
                return (field, "closing", inner)
            grown = machine.step(inner, char)
            return None if grown is None else (field, "quoted", grown)
        # closing
        if char == self.quote:
            grown = machine.step(inner, self.quote)
            return None if grown is None else (field, "quoted", grown)
        if char == self.delimiter:
            return self._next_field(field, inner)
        return None

    def accepts(self, state: _State) -> bool:
        field, mode, inner = state  # type: ignore[misc]
        if state == self.start():
            return False  # an empty line is no record
        return (
            field == self.fields - 1
            and mode in ("start", "plain", "closing")
            and self.machines[field].accepts(inner)
        )


@dataclasses.dataclass(frozen=True)
class Automaton:
    """The mask and transitions of constrained generation.

    Attributes:
        table: int32 [states, vocab_size]: the state after a token, -1 where it is masked.
            `<eor>` leads back to the state itself, where a record may end.
        start: The state of an empty record.
        resampled: The rules not enforced exactly, as "column: what"; a record that breaks
            them is checked when it ends and resampled.
    """

    table: np.ndarray
    start: int
    resampled: tuple[str, ...] = ()

    @property
    def states(self) -> int:
        return int(self.table.shape[0])

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.int64(self.start).tobytes())
        h.update(np.asarray(self.table.shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(self.table, np.int32).tobytes())
        return h.hexdigest()

    def allowed(self, states: np.ndarray) -> np.ndarray:
        """[rows, vocab] bool: the tokens each row's state allows."""
        return self.table[states] >= 0

    def walk(self, ids: Sequence[int], state: Optional[int] = None) -> Optional[int]:
        """The state after `ids` from `state` (default: a record's start), or None when
        they leave every valid record."""
        at = self.start if state is None else state
        for token in ids:
            at = int(self.table[at, int(token)])
            if at < 0:
                return None
        return at


def token_strings(tokenizer: Tokenizer) -> list[Optional[str]]:
    """What each token id writes into a record; None for ids that write nothing a record
    may hold (`<pad>`, `<eor>`, `<unk>`, control and byte pieces)."""
    if tokenizer.kind == "char":
        return [None, None, *tokenizer.chars]  # type: ignore[union-attr]
    sp = tokenizer._sp  # type: ignore[union-attr]
    out: list[Optional[str]] = []
    for i in range(tokenizer.size):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.is_byte(i):
            out.append(None)
        else:
            out.append(sp.id_to_piece(i).replace("\u2581", " "))
    return out


def compile_automaton(validators: Validators, tokenizer: Tokenizer, vocab_size: int) -> Automaton:
    """The automaton of records that pass `validators`, over the tokenizer's vocabulary.

    Raises:
        ValueError: no record that passes the validators can be written with the
            vocabulary (a categorical value of characters the tokenizer never saw, say).
    """
    columns: list[Optional[Column]] = list(validators.columns or [None] * validators.fields)
    strings = token_strings(tokenizer)
    resampled: list[str] = []
    while True:
        record = _Record(validators, columns)
        if not resampled:  # a temporal column too wide to list its values
            resampled = [
                f"{c.name}: calendar validity and range"
                for c, m in zip(columns, record.machines)
                if c is not None and isinstance(m, _Temporal)
            ]
        chars, states, accepting = _enumerate(record, strings)
        table = _token_table(chars, states, accepting, strings, vocab_size)
        if table is None:
            raise ValueError(
                "no record that passes the validators can be written with the tokenizer's "
                "vocabulary"
            )
        if table.size <= MAX_TABLE_ENTRIES:
            return Automaton(table, 0, tuple(resampled))
        widest = _largest_categorical(columns)
        if widest is None:
            return Automaton(table, 0, tuple(resampled))
        column = columns[widest]
        assert column is not None and column.values is not None
        columns[widest] = dataclasses.replace(
            column,
            kind="text",
            values=None,
            max_length=max(len(v) for v in column.values),
            characters="".join(sorted(set("".join(column.values)))),
        )
        resampled.append(f"{column.name}: the set of values (too many for the table)")


def _largest_categorical(columns: Sequence[Optional[Column]]) -> Optional[int]:
    sizes = [
        (sum(len(v) for v in c.values), i)
        for i, c in enumerate(columns)
        if c is not None and c.kind == "categorical" and c.values
    ]
    return max(sizes)[1] if sizes else None


def _enumerate(
    record: _Record, strings: Sequence[Optional[str]]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every state reachable from the start over the vocabulary's characters, those that
    cannot reach a record's end dropped: ([chars], int32 [states, chars] next state or -1,
    bool [states] accepting), the start being state 0."""
    chars = sorted({c for s in strings if s for c in s})
    index: dict[_State, int] = {record.start(): 0}
    order: list[_State] = [record.start()]
    rows: list[list[int]] = []
    i = 0
    while i < len(order):
        state = order[i]
        row = []
        for char in chars:
            nxt = record.step(state, char)
            if nxt is None:
                row.append(-1)
                continue
            j = index.get(nxt)
            if j is None:
                j = index[nxt] = len(order)
                order.append(nxt)
            row.append(j)
        rows.append(row)
        i += 1
    delta = np.asarray(rows, dtype=np.int32).reshape(len(order), len(chars))
    accepting = np.array([record.accepts(s) for s in order], dtype=bool)
    return chars, delta, accepting


def _live(delta: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """States from which an accepting state is reachable (a fixed point over reverse edges)."""
    live = accepting.copy()
    while True:
        safe = np.where(delta >= 0, delta, 0)
        grown = live | ((delta >= 0) & live[safe]).any(axis=1)
        if (grown == live).all():
            return live
        live = grown


def _token_table(
    chars: list[str],
    delta: np.ndarray,
    accepting: np.ndarray,
    strings: Sequence[Optional[str]],
    vocab_size: int,
) -> Optional[np.ndarray]:
    live = _live(delta, accepting) if len(chars) else accepting.copy()
    if not live[0]:
        return None
    column = {c: i for i, c in enumerate(chars)}
    states = delta.shape[0]
    table = np.full((states, vocab_size), -1, dtype=np.int32)
    for token, text in enumerate(strings[:vocab_size]):
        if not text:
            continue
        at = np.arange(states, dtype=np.int32)
        ok = live.copy()
        for char in text:
            nxt = delta[np.where(ok, at, 0), column[char]]
            ok &= nxt >= 0
            at = np.where(ok, nxt, 0)
            ok &= live[at]
        table[:, token] = np.where(ok, at, -1)
    table[:, EOR_ID] = np.where(accepting, np.arange(states), -1)
    # Token by token, some live character states may have no way on (a character that only
    # longer pieces write); drop them until every kept state can end a record in tokens.
    keep = live.copy()
    while True:
        safe = np.where(table >= 0, table, 0)
        reach = (table >= 0) & keep[safe]
        grown = keep & (reach.any(axis=1))
        if (grown == keep).all():
            break
        keep = grown
        table = np.where(reach & keep[:, None], table, -1)
    if not keep[0]:
        return None
    table = np.where((table >= 0) & keep[np.where(table >= 0, table, 0)], table, -1)
    # Renumber the kept states densely, the start staying 0.
    new = np.cumsum(keep) - 1
    kept = table[keep]
    return np.where(kept >= 0, new[np.where(kept >= 0, kept, 0)], -1).astype(np.int32)

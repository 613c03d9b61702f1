"""Training examples from tokenized records, as arrays (NumPy only, no TensorFlow).

Three ways to cut records into examples; a run uses the first that applies:

- **records** (DP training): each example holds exactly one record, `<eor>` + record +
  `<eor>`, truncated or padded with `<pad>` to sequence_length + 1 tokens. Padding is
  masked out of the loss by per-token weights, so an example's gradient depends on its one
  record only, and DP-SGD's per-example guarantee is a per-record guarantee.
- **aligned** (standard training): whole records packed into examples of sequence_length
  + 1 tokens, each example starting with `<eor>` at a record's start, padding masked out;
  the model is trained stateless, every example from zero state, which is where
  generation starts. See `aligned_examples`.
- **windows** (runs trained before aligned examples, the reference's way): records joined
  into one token stream, cut into non-overlapping windows anywhere in it. A model trained
  so never saw a record start from zero state, and its generated records often began
  mid-record.

Records are split into training and validation before any example is cut, so no record
contributes to both. Each epoch visits the training examples in an order drawn from the
run's seed and the epoch number, so a resumed run replays exactly the order it would have
had.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Sequence

import numpy as np

from compiler.data.tokenizer import EOR_ID, PAD_ID
from compiler.diagnostics import DataError, Diagnostic

Unit = Literal["aligned", "window", "record"]


def unit_of(spec: Any) -> Unit:
    """What one training example is: a record under DP (the privacy unit), else whole
    records packed from a record's start (`aligned_examples`)."""
    if spec.training.privacy is not None:
        return "record"
    return "window" if spec.training.examples == "windows" else "aligned"


def start_tokens(unit: Unit) -> tuple[int, ...]:
    """What a sampler feeds a model from zero state before a record's first token.

    A record-unit model (DP) and an aligned one trained on exactly that: every example
    starts from zero state with `<eor>` and a record. A window-unit model (runs trained
    before examples were aligned) trained on a stream whose state was never
    zero at a record's start (stateful windows run on; stateless ones begin anywhere), so
    one `<eor>` from zero state leaves it unsure it is at a record's start: many records
    began mid-field. Two `<eor>` settle the state on "a record begins". Measured with 400
    records at temperature 1, the share that passes the run's validators went from 0.70 to
    0.79 (char-small, 6 epochs), 0.94 to 0.95 (19 epochs) and 0.38 to 0.61 (a 16-unit test
    model); three or more gave no more.
    """
    return (EOR_ID, EOR_ID) if unit == "window" else (EOR_ID,)


# Aligned examples of a model with no context bound grow to hold the longest record, up to
# this many tokens.
MAX_ALIGNED_LENGTH = 1024


def example_length(spec: Any, unit: Unit, records: Sequence[np.ndarray]) -> int:
    """Tokens an example's input holds: the spec's sequence_length, or, for aligned examples
    of a model with no context bound (recurrent layers; no position table or cache), enough
    for the longest record with its two `<eor>`, up to MAX_ALIGNED_LENGTH.

    A record longer than an example is trained in pieces, each from zero state: the model
    never learns how such a record goes on from its start, or where it ends. Measured on
    scikit-learn's breast cancer table (569 records of about 250 characters), with
    char-small's sequence_length of 64: see docs/records.md.
    """
    from compiler.layers.states import context_length

    length = int(spec.training.sequence_length)
    if unit != "aligned" or context_length(spec) is not None or not len(records):
        return length
    longest = max(len(r) for r in records) + 1
    return max(length, min(longest, MAX_ALIGNED_LENGTH))


def default_max_new_tokens(spec: Any, longest_record: Optional[int]) -> int:
    """Tokens generation samples at most per record unless told: the longest training
    record plus a quarter (and 4), so that no record the corpus could hold is cut short,
    within the export's request limit.

    A DP run keeps no statistic of its records: its model was trained on records of at
    most sequence_length tokens, which bounds it instead. A run trained before the longest
    record was kept gets the former default, twice the sequence length.
    """
    length = spec.training.sequence_length
    if longest_record is None:
        budget = 2 * length if spec.training.privacy is None else length + length // 4 + 4
    else:
        budget = longest_record + longest_record // 4 + 4
    return max(1, min(budget, spec.export.limits.max_new_tokens))


@dataclasses.dataclass(frozen=True)
class Examples:
    """Model inputs, next-token targets and (record examples only) per-token loss weights."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.inputs)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Examples for a run and what they were made of.

    Attributes:
        train, validation: The examples (validation is None without a validation split).
        unit: "window" (standard) or "record" (DP: one record per example).
        records: Training records.
        validation_records: Records held out for validation.
        tokens: Tokens in the training records, `<eor>` included.
        truncated: Record examples cut short at sequence_length (DP runs only).
    """

    train: Examples
    validation: Optional[Examples]
    unit: Unit
    records: int
    validation_records: int
    tokens: int
    truncated: int

    @property
    def weighted(self) -> bool:
        """Whether examples carry per-token weights (padding masked out of the loss)."""
        return self.train.weights is not None


def _problem(code: str, message: str, path: str, file: str) -> DataError:
    return DataError([Diagnostic("error", code, message, path, file)])


def split_records(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation records, each in file order."""
    held_out = int(n * validation_split)
    order = np.random.default_rng((seed, 0x5EED)).permutation(n)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def windows(records: Sequence[np.ndarray], sequence_length: int) -> Examples:
    """Non-overlapping windows of sequence_length + 1 tokens over the record stream."""
    span = sequence_length + 1
    eor = np.array([EOR_ID], dtype=np.int32)
    stream = np.concatenate([part for r in records for part in (r, eor)]) if records else eor[:0]
    count = len(stream) // span
    cut = stream[: count * span].reshape(count, span)
    return Examples(cut[:, :-1].copy(), cut[:, 1:].copy())


def aligned_examples(records: Sequence[np.ndarray], sequence_length: int) -> Examples:
    """Whole records packed into examples of sequence_length + 1 tokens, each example
    starting at a record's start: `<eor>` r1 `<eor>` r2 `<eor>` ..., padded with `<pad>`
    (masked out of the loss). A record that does not fit in what is left of an example
    starts the next one; a record longer than an example goes on in the next examples,
    which start with its continuation (not `<eor>`), so a model learns that `<eor>` from
    zero state (where generation starts) is a record's start.

    Every token is trained once, as with windows; unlike windows cut anywhere in the
    stream, no example starts mid-record after `<eor>`.
    """
    span = sequence_length + 1
    rows: list[np.ndarray] = []
    current: list[np.ndarray] = []
    used = 0

    def close() -> None:
        nonlocal current, used
        if current:
            row = np.full(span, PAD_ID, dtype=np.int32)
            joined = np.concatenate(current)
            row[: len(joined)] = joined
            rows.append(row)
        current, used = [], 0

    for ids in records:
        piece = np.concatenate(([EOR_ID], ids, [EOR_ID])).astype(np.int32)
        # An example's records share their <eor>s: a record follows the previous one's end.
        if current:
            piece = piece[1:]
        if used + len(piece) > span:
            close()
            piece = np.concatenate(([EOR_ID], ids, [EOR_ID])).astype(np.int32)
        while len(piece) > span:  # longer than an example: continued in the next ones
            current.append(piece[:span])
            used = span
            close()
            piece = piece[span - 1 :]  # the next example's first input is the last target
        current.append(piece)
        used += len(piece)
    close()
    full = np.stack(rows) if rows else np.zeros((0, span), dtype=np.int32)
    inputs, targets = full[:, :-1].copy(), full[:, 1:].copy()
    mask = (targets != PAD_ID) & (inputs != PAD_ID)
    # One weight for every real token: the loss is the mean over real tokens.
    scale = mask.size / max(int(mask.sum()), 1)
    return Examples(inputs, targets, (mask * scale).astype(np.float32))


def record_examples(records: Sequence[np.ndarray], sequence_length: int) -> tuple[Examples, int]:
    """One example per record, padded or truncated; returns the examples and the truncations."""
    span = sequence_length + 1
    full = np.full((len(records), span), PAD_ID, dtype=np.int32)
    truncated = 0
    for i, ids in enumerate(records):
        example = np.concatenate(([EOR_ID], ids, [EOR_ID])).astype(np.int32)
        if len(example) > span:
            truncated += 1
            example = example[:span]
        full[i, : len(example)] = example
    inputs, targets = full[:, :-1].copy(), full[:, 1:].copy()
    mask = (targets != PAD_ID).astype(np.float32)
    # Per-token weights that make each example's mean loss the mean over its real tokens.
    weights = mask * (sequence_length / np.maximum(mask.sum(axis=1, keepdims=True), 1.0))
    return Examples(inputs, targets, weights.astype(np.float32)), truncated


def prepare(
    records: Sequence[np.ndarray],
    *,
    unit: Unit,
    batch_size: int,
    sequence_length: int,
    validation_split: float,
    seed: int,
    data_name: str,
) -> TrainingData:
    """Split tokenized records and cut them into examples.

    Args:
        records: Token ids of each record (without `<eor>`).
        unit: "window" or "record", see the module docstring.
        batch_size, sequence_length: From the resolved spec's training block.
        validation_split: Fraction of records held out for validation.
        seed: The run's seed.
        data_name: The corpus file, for error messages.

    Raises:
        DataError: fewer examples than one training batch, or than one validation batch
            when a validation split is asked for; the message says how many are needed.
    """
    train_idx, val_idx = split_records(len(records), validation_split, seed)
    train_records = [records[i] for i in train_idx]
    val_records = [records[i] for i in val_idx]
    truncated = 0
    if unit == "aligned":
        train = aligned_examples(train_records, sequence_length)
        validation = aligned_examples(val_records, sequence_length) if len(val_idx) else None
    elif unit == "window":
        train = windows(train_records, sequence_length)
        validation = windows(val_records, sequence_length) if len(val_idx) else None
    else:
        train, truncated = record_examples(train_records, sequence_length)
        validation = record_examples(val_records, sequence_length)[0] if len(val_idx) else None
    tokens = int(sum(len(r) + 1 for r in train_records))
    if len(train) < batch_size:
        raise _problem(
            "data_too_small",
            _too_small(unit, "training", len(train), tokens, batch_size, sequence_length),
            "data",
            data_name,
        )
    if validation_split > 0 and (validation is None or len(validation) < batch_size):
        have = 0 if validation is None else len(validation)
        raise _problem(
            "validation_too_small",
            f"expected validation_split = {validation_split} to hold out at least one batch "
            f"of {batch_size} {_EXAMPLE_NAMES[unit]}, received {have} ({len(val_idx)} of "
            f"{len(records)} "
            "records); use a larger corpus or validation_split, or set validation_split: 0",
            "training.validation_split",
            data_name,
        )
    return TrainingData(
        train=train,
        validation=validation,
        unit=unit,
        records=len(train_records),
        validation_records=len(val_records),
        tokens=tokens,
        truncated=truncated,
    )


_EXAMPLE_NAMES = {"aligned": "examples", "window": "windows", "record": "records"}


def _too_small(unit: Unit, part: str, have: int, tokens: int, batch: int, length: int) -> str:
    if unit == "aligned":
        return (
            f"expected at least one {part} batch of {batch} examples of {length + 1} tokens "
            f"(whole records packed from a record's start), received {tokens:,} tokens "
            f"({have} examples); use a larger corpus or a smaller batch_size or "
            "sequence_length"
        )
    if unit == "window":
        need = batch * (length + 1)
        return (
            f"expected at least one {part} batch of {batch} windows of {length + 1} tokens "
            f"(= {need:,} tokens), received {tokens:,} tokens ({have} windows); use a larger "
            "corpus or a smaller batch_size or sequence_length"
        )
    return (
        f"expected at least one {part} batch of {batch} records (DP trains on one record "
        f"per example), received {have} records; use a larger corpus or a smaller batch_size"
    )


def epoch_order(examples: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` (0-based) visits the examples."""
    return np.random.default_rng((seed, epoch)).permutation(examples)

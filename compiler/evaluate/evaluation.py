"""`keraspec evaluate`: how valid, faithful and novel a model's records are.

Synthetic records (generated from a run or an export, or read from a file) are compared
with the real records of the data file:

- validity: the share that passes the run's validators (what `generate --valid-only`
  keeps), with failures counted per column;
- fidelity: SDMetrics' column shapes and column pair trends of the well-formed records
  (those with the field count) against the training records, as `quality_score` (0-100);
- memorisation: the share of records that are exact copies of training records, and the
  distance to the closest training record.

When the data file is the run's own and the run held records out (validation_split), the
held-out records are scored the same way: they are real records the model never trained on,
so they show what a perfect generator would score, and how close unseen real records come
to training records. None of this is a privacy guarantee.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from compiler.data.columns import (
    Column,
    Validators,
    declared_header,
    learn_validators,
    split_record,
)
from compiler.data.corpus import read_corpus
from compiler.diagnostics import DataError, Diagnostic

DEFAULT_COUNT = 1000
# The "delimiter" of records that are not delimited: each is one text field.
_WHOLE = "\x1f"
# Fewer well-formed records than this and the fidelity scores are noted as unreliable.
FEW_RECORDS = 30
MAX_FAILURE_EXAMPLES = 20
NOT_A_GUARANTEE = (
    "Memorisation and distance to closest record are measurements of these records, not a "
    "privacy guarantee: a model can leak without copying. For a guarantee train with DP "
    "(training.privacy); to test one, run keraspec audit."
)


@dataclasses.dataclass(frozen=True)
class Scores:
    """One set of records scored against the training records.

    Attributes:
        records: How many records.
        well_formed: How many have the field count (the ones fidelity is measured on).
        valid_share: Share that passes the validators (None without validators).
        quality_score: 100 x the mean of column shapes and column pair trends.
        column_shapes, column_pair_trends: The components, from 0 to 1.
        memorized_share: Share that is an exact copy of a training record.
        dcr: Distance to the closest training record: quantiles and the share at 0.
    """

    records: int
    well_formed: int
    valid_share: Optional[float]
    quality_score: float
    column_shapes: Optional[float]
    column_pair_trends: Optional[float]
    memorized_share: float
    dcr: Optional[dict[str, float]]


@dataclasses.dataclass(frozen=True)
class ColumnReport:
    """One column: its validator rule (None: field count only), failures by reason, and its
    column shape score (metric, synthetic, held-out)."""

    name: str
    kind: str
    rule: Optional[str]
    failures: dict[str, int]
    metric: Optional[str]
    score: Optional[float]
    baseline_score: Optional[float]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured. `to_dict` is the JSON output.

    Attributes:
        name: The model's name.
        source: The run directory or export version evaluated.
        step: The training step of its weights.
        data: The real data file.
        synthetic: Where the records came from: "generated" or the --synthetic file.
        generation: count, seed and temperature when generated.
        synthetic_scores: The synthetic records' scores.
        baseline: The held-out records' scores (None without a split of this data file).
        columns: Per column: its rule, failures and column shape score.
        validators: Where the validators came from.
        failing: Up to 20 invalid records, each with why.
        closer_than_holdout: Share of synthetic records closer to a training record than
            95% of held-out records are (about 0.05 when nothing is copied).
        privacy: The run's (epsilon, delta) guarantee; None when it was not trained with DP.
        notes: Caveats of this evaluation.
        spec: The resolved spec (YAML).
    """

    name: str
    source: str
    step: Optional[int]
    data: str
    synthetic: str
    generation: Optional[dict[str, Any]]
    synthetic_scores: Scores
    baseline: Optional[Scores]
    columns: list[ColumnReport]
    validators: Optional[str]
    failing: list[dict[str, str]]
    closer_than_holdout: Optional[float]
    privacy: Optional[dict[str, Any]]
    notes: list[str]
    spec: str
    # The typed frames behind the plots of the HTML report; not part of the JSON.
    frames: Any = dataclasses.field(default=None, repr=False, compare=False)
    fidelity_columns: tuple[Column, ...] = dataclasses.field(default=(), repr=False, compare=False)

    @property
    def valid_share(self) -> Optional[float]:
        return self.synthetic_scores.valid_share

    @property
    def quality_score(self) -> float:
        return self.synthetic_scores.quality_score

    @property
    def memorized_share(self) -> float:
        return self.synthetic_scores.memorized_share

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "source": self.source,
            "step": self.step,
            "data": self.data,
            "synthetic": self.synthetic,
            "generation": self.generation,
            "valid_share": self.valid_share,
            "quality_score": self.quality_score,
            "memorized_share": self.memorized_share,
            "scores": dataclasses.asdict(self.synthetic_scores),
            "baseline": None if self.baseline is None else dataclasses.asdict(self.baseline),
            "closer_than_holdout": self.closer_than_holdout,
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "validators": self.validators,
            "failing": self.failing,
            "privacy": self.privacy,
            "not_a_guarantee": NOT_A_GUARANTEE,
            "notes": self.notes,
        }
        return out


@dataclasses.dataclass
class _Source:
    name: str
    path: str
    step: Optional[int]
    spec: Any
    spec_text: str
    validators: Optional[Validators]
    data_sha256: Optional[str]
    seed: Optional[int]
    privacy: Optional[dict[str, Any]]


def _open_source(path: str) -> _Source:
    from compiler.export.opened import open_export
    from compiler.training.rundir import SPEC_FILE
    from compiler.training.trained import open_trained

    opened = open_export(path)
    if opened is not None:
        spec = opened.spec()  # a located error for a SavedModel not written by keraspec
        run = opened.run
        return _Source(
            spec.name,
            opened.version_dir,
            opened.step,
            spec,
            opened.spec_text,
            opened.validators(),
            run.get("data_sha256"),
            run.get("seed"),
            run.get("privacy"),
        )
    trained = open_trained(path)  # a located error when it is not a trained run
    identity = trained.identity
    return _Source(
        trained.spec.name,
        path,
        trained.step,
        trained.spec,
        _read(trained.run.file(SPEC_FILE)),
        trained.validators,
        identity.data_sha256,
        identity.seed,
        trained.privacy,
    )


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def evaluate(
    path: Union[str, os.PathLike[str]],
    data: Union[str, os.PathLike[str]],
    *,
    synthetic: Union[str, os.PathLike[str], Sequence[str], None] = None,
    count: int = DEFAULT_COUNT,
    seed: Optional[int] = 0,
    temperature: float = 1.0,
    checkpoint: str = "best",
    constrained: bool = True,
) -> Evaluation:
    """Evaluate the records a run or an export generates (or a file of synthetic records).

    Args:
        path: A run directory, or an export (BASE/NAME or BASE/NAME/VERSION).
        data: The real records: the run's training file, for a held-out comparison.
        synthetic: Records to evaluate instead of generating them: a file (one per line)
            or a list of strings.
        count: Records to generate when `synthetic` is not given.
        seed: Seed of generation (and of the DCR samples).
        temperature: Sampling temperature.
        checkpoint: A run directory's "best" or "latest" checkpoint.
        constrained: Generate as `generate` does by default, masked by the validators
            (False: the raw model).

    Raises:
        RunError: `path` is neither a trained run nor a keraspec export.
        DataError: `data` or `synthetic` is unreadable, or holds no records.
    """
    source = _open_source(os.fspath(path))
    spec = source.spec
    corpus = read_corpus(data, header=declared_header(spec))
    notes: list[str] = []
    # The columns fidelity is measured on: declared, else learned from the real records now
    # (an evaluation is local: it may look at values a DP run's validators must not keep).
    structure = (
        learn_validators(
            corpus.records, private=False, declared=spec.data, header_line=corpus.header
        )
        or source.validators
    )
    detected_header = bool(structure and structure.header and not declared_header(spec))
    training, held_out = _split(source, corpus, detected_header, notes)
    if synthetic is None:
        from compiler.generation import ValidRecordsExhausted, generate

        try:
            generated = generate(
                path,
                count=count,
                seed=seed,
                temperature=temperature,
                checkpoint=checkpoint,
                constrained=constrained,
            )
        except ValidRecordsExhausted as e:  # the records found are evaluated, and it is said
            generated = e.generated
            notes.append(e.diagnostics[0].message)
        synthetic_records = generated.records
        synthetic_name = "generated"
        generation: Optional[dict[str, Any]] = {
            "count": count,
            "seed": seed,
            "temperature": temperature,
            "constrained": generated.constrained,
            "sampled": generated.sampled,
        }
        if generated.masked_mass is not None:
            masked = np.asarray(generated.masked_mass)
            generation.update(
                {
                    "resampled": generated.sampled - len(generated.records),
                    "resampled_rules": list(generated.resampled_rules),
                    "masked_mass_mean": float(masked.mean()) if len(masked) else 0.0,
                    "masked_mass_median": float(np.median(masked)) if len(masked) else 0.0,
                    "masked_mass": [round(float(m), 6) for m in masked],
                }
            )
    else:
        synthetic_records, synthetic_name = _read_synthetic(
            synthetic, {corpus.header, corpus.records[0] if detected_header else None}
        )
        generation = None
    if structure is None:
        # Not delimited: each record is one text column.
        structure = Validators("learned", _WHOLE, '"', 1, False, (Column("record", "text"),))
        notes.append("the records are not delimited: fidelity compares record lengths only")
    scorer = _Scorer(structure, source.validators, training, corpus.path, seed or 0)
    synthetic_scores, quality, synthetic_dcr, synthetic_frame = scorer.score(synthetic_records, 1)
    baseline = baseline_quality = held_dcr = None
    if held_out:
        baseline, baseline_quality, held_dcr, _ = scorer.score(held_out, 2)
    if synthetic_scores.well_formed < FEW_RECORDS:
        notes.append(
            f"only {synthetic_scores.well_formed} records have the field count: the "
            "fidelity scores rest on too few records to say much"
        )
    closer = None
    if synthetic_dcr is not None and held_dcr is not None and len(held_dcr):
        closer = float(np.mean(synthetic_dcr < np.quantile(held_dcr, 0.05)))
    columns, failing = _column_reports(
        scorer.columns, structure, source.validators, synthetic_records, quality, baseline_quality
    )
    return Evaluation(
        name=source.name,
        source=source.path,
        step=source.step,
        data=corpus.path,
        synthetic=synthetic_name,
        generation=generation,
        synthetic_scores=synthetic_scores,
        baseline=baseline,
        columns=columns,
        validators=None if source.validators is None else source.validators.describe_source(),
        failing=failing,
        closer_than_holdout=closer,
        privacy=source.privacy,
        notes=notes,
        spec=source.spec_text,
        frames={"real": scorer.train_frame, "synthetic": synthetic_frame},
        fidelity_columns=tuple(scorer.columns),
    )


def _split(
    source: _Source, corpus: Any, detected_header: bool, notes: list[str]
) -> tuple[list[str], list[str]]:
    """The training records and the held-out ones, as the run split them (its seed and
    validation_split) when `corpus` is the file it trained on."""
    from compiler.data.dataset import split_records

    records = corpus.records
    train_idx, held_idx = np.arange(len(records)), np.array([], dtype=int)
    split = source.spec.training.validation_split
    if source.data_sha256 == corpus.sha256 and source.seed is not None and split > 0:
        train_idx, held_idx = split_records(len(records), split, int(source.seed))
    elif source.data_sha256 is not None and source.data_sha256 != corpus.sha256:
        notes.append(
            f"{corpus.path} is not the file the run trained on (its sha256 differs): "
            "every record is compared as a training record, and nothing is held out"
        )
    elif split == 0:
        notes.append("the run held no records out (validation_split: 0): no held-out baseline")
    if detected_header:  # the first line names the columns: it is no record
        train_idx, held_idx = train_idx[train_idx != 0], held_idx[held_idx != 0]
    return [records[i] for i in train_idx], [records[i] for i in held_idx]


def _read_synthetic(
    synthetic: Union[str, os.PathLike[str], Sequence[str]], headers: set[Optional[str]]
) -> tuple[list[str], str]:
    if isinstance(synthetic, (str, os.PathLike)):
        records, name = list(read_corpus(synthetic).records), os.fspath(synthetic)
        if records and records[0] in headers:
            records = records[1:]  # the data file's header line
    else:
        records, name = list(synthetic), "<records>"
    if not records:
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "no_synthetic_records",
                    "expected at least one " "synthetic record, received none",
                    "",
                    name,
                )
            ]
        )
    return records, name


class _Scorer:
    """Scores sets of records against the training records."""

    def __init__(
        self,
        structure: Validators,
        validators: Optional[Validators],
        training: list[str],
        data_name: str,
        seed: int,
    ):
        from compiler.evaluate import fidelity

        self.fidelity = fidelity
        self.columns = _fidelity_columns(structure)
        self.parse = _parser(structure)
        self.validators = validators
        self.seed = seed
        rows = [r for r in map(self.parse, training) if r is not None]
        if not rows:
            raise DataError(
                [
                    Diagnostic(
                        "error",
                        "no_real_records",
                        "expected real records " f"with {structure.fields} fields, received none",
                        "",
                        data_name,
                    )
                ]
            )
        self.train_frame = fidelity.frame(self.columns, rows)
        self.train_keys = {_key(r, self.parse) for r in training}

    def score(self, texts: list[str], salt: int) -> tuple[Scores, Any, Any, Any]:
        """The scores of `texts`, with the fidelity detail, the distances and the frame."""
        fid = self.fidelity
        rows = [r for r in map(self.parse, texts) if r is not None]
        valid = (
            None
            if self.validators is None
            else float(np.mean([self.validators.is_valid(t) for t in texts]))
        )
        memorized = float(np.mean([_key(t, self.parse) in self.train_keys for t in texts]))
        frame = fid.frame(self.columns, rows)
        if not rows:
            return Scores(len(texts), 0, valid, 0.0, None, None, memorized, None), None, None, frame
        quality = fid.fidelity(self.columns, self.train_frame, frame)
        dcr = fid.distances(self.columns, frame, self.train_frame, self.seed + salt)
        return (
            Scores(
                len(texts),
                len(rows),
                valid,
                100 * quality.score,
                quality.column_shapes,
                quality.column_pair_trends,
                memorized,
                _summary(dcr),
            ),
            quality,
            dcr,
            frame,
        )


def _column_reports(
    columns: list[Column],
    structure: Validators,
    validators: Optional[Validators],
    records: list[str],
    quality: Any,
    baseline: Any,
) -> tuple[list[ColumnReport], list[dict[str, str]]]:
    """Per column: its rule, failures and shape scores; and the first failing records."""
    from compiler.generation import describe_problem

    failing: list[dict[str, str]] = []
    counts: dict[str, dict[str, int]] = {}
    rules: dict[str, Column] = {}
    if validators is not None:
        rules = dict(zip(validators.names, validators.columns or ()))
        for record in records:
            found = validators.failures(record)
            for f in found:
                bucket = counts.setdefault("fields" if f.column is None else f.column, {})
                bucket[f.reason] = bucket.get(f.reason, 0) + 1
            if found and len(failing) < MAX_FAILURE_EXAMPLES:
                failing.append({"record": record, "problem": describe_problem(found)})
    reports = []
    for column in columns:
        rule = rules.get(column.name)
        metric, value = quality.shapes.get(column.name) if quality else (None, None)
        reports.append(
            ColumnReport(
                column.name,
                column.kind,
                None if rule is None else rule.describe(),
                counts.get(column.name, {}),
                metric,
                value,
                baseline.shapes.get(column.name, (None, None))[1] if baseline else None,
            )
        )
    if "fields" in counts:
        reports.append(
            ColumnReport(
                "(field count)",
                "structure",
                f"{structure.fields} fields",
                counts["fields"],
                None,
                None,
                None,
            )
        )
    return reports, failing


def _fidelity_columns(structure: Validators) -> list[Column]:
    if structure.columns is not None:
        return list(structure.columns)
    return [Column(name, "text") for name in structure.names]


def _parser(structure: Validators):
    def parse(record: str) -> Optional[list[str]]:
        if structure.delimiter == _WHOLE:
            return [record]
        row = split_record(record, structure.delimiter, structure.quotechar)
        return row if row is not None and len(row) == structure.fields else None

    return parse


def _key(record: str, parse) -> Any:
    """A record's identity for exact copies: its fields when it parses (so quoting does not
    matter), else its text."""
    row = parse(record)
    return tuple(row) if row is not None else record


def _summary(dcr: Optional[np.ndarray]) -> Optional[dict[str, float]]:
    if dcr is None or not len(dcr):
        return None
    return {
        "p5": float(np.quantile(dcr, 0.05)),
        "median": float(np.median(dcr)),
        "mean": float(dcr.mean()),
        "zero_share": float(np.mean(dcr == 0)),
        "records": int(len(dcr)),
    }

"""Generating records: from an export's in-graph `generate` signature, or from a run.

- From an export (BASE/NAME or BASE/NAME/VERSION), `generate` is a local client of the
  SavedModel's `generate` signature: the whole sampling loop runs in the graph.
- From a run directory, it is a plain Keras sampling loop, the reference generator's: the
  spec's model is rebuilt with a batch of `count` rows and every recurrent layer stateful,
  the run's weights are loaded, the prompt (after the start tokens: one `<eor>`, the state
  "a record begins here", or two for a run trained on windows, see `start_tokens`) is fed
  once, then one sampled token at a time until every row has emitted `<eor>` or
  `max_new_tokens` tokens.

For a delimited corpus (CSV and the like), generation is constrained by default: before
every sample, the tokens that would break the run's validators (`compiler.data.columns`;
the field count only for a DP run) are masked, through their automaton
(`compiler.data.automaton`). Unconstrained, each record is checked by the validators, and
with `valid_only`, sampling goes on in batches until enough records pass, as the
reference generator's line validator does.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from compiler.data.automaton import Automaton, compile_automaton
from compiler.data.columns import Failure, Validators
from compiler.data.dataset import default_max_new_tokens, start_tokens, unit_of
from compiler.data.tokenizer import EOR_ID, PAD_ID, Tokenizer, encode_prompt
from compiler.diagnostics import DataError, Diagnostic, RunError
from compiler.layers.states import context_length
from compiler.training.rundir import BEST, RunDir
from compiler.training.trained import TrainedRun, open_trained
from compiler.training.weights import copy_weights, load_weights, reshaped_spec

if TYPE_CHECKING:
    from compiler.export.opened import OpenedExport


@dataclasses.dataclass(frozen=True)
class Generated:
    """Records sampled from a run or an export.

    Attributes:
        records: The texts, prompt included.
        complete: Per record, whether the model ended it (emitted `<eor>`) before
            `max_new_tokens` ran out.
        valid: Per record, whether it passes the run's validators (its columns' rules, or
            the field count only; None when the corpus was not delimited).
        source: The run directory or export version directory sampled from.
        step: The training step of the weights, when known.
        problems: Per record, why it is not valid ("" when it is; None without validators).
        sampled: Records sampled in all: the rejected ones too (with `valid_only`, or
            records constrained generation resampled).
        validators: Where the validators came from (None without validators).
        masked_mass: Per record, under constrained generation, the share of its
            probability (along the path sampled) that the mask removed: how often the raw
            model would have broken a rule on the way. None when unconstrained.
        resampled_rules: Under constrained generation, the rules the automaton does not
            enforce exactly; a record that breaks one is resampled.
    """

    records: list[str]
    complete: list[bool]
    valid: Optional[list[bool]]
    source: str
    step: Optional[int]
    problems: Optional[list[str]] = None
    sampled: int = 0
    validators: Optional[str] = None
    masked_mass: Optional[list[float]] = None
    resampled_rules: tuple[str, ...] = ()

    @property
    def valid_share(self) -> Optional[float]:
        return None if self.valid is None else sum(self.valid) / max(len(self.valid), 1)

    @property
    def constrained(self) -> bool:
        return self.masked_mass is not None

    @property
    def acceptance_rate(self) -> Optional[float]:
        """Valid records per record sampled."""
        if self.valid is None or not self.sampled:
            return None
        return sum(self.valid) / self.sampled


class ValidRecordsExhausted(RunError):
    """`valid_only` spent its budget of invalid records before it had `count` valid ones.

    Attributes:
        generated: The valid records found before the budget ran out.
    """

    def __init__(self, diagnostics: list[Diagnostic], generated: Generated):
        super().__init__(diagnostics)
        self.generated = generated


def describe_problem(failures: list[Failure]) -> str:
    """One line saying why a record failed its validators."""
    first = failures[0]
    if first.column is None:
        return f"expected the field count, received {first.value}"
    more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
    return f"{first.column}: {first.reason} {first.value!r}{more}"


def load_run_model(
    run_dir: Union[str, TrainedRun],
    rows: Optional[int],
    which: str = BEST,
    *,
    stateful: bool = True,
) -> tuple[TrainedRun, Any, int]:
    """A trained run, its model with the checkpoint's weights, and the checkpoint's step.

    Args:
        run_dir: A run directory written by `train`, or the run already opened.
        rows: The model's batch size (None: any, for a stateless model).
        which: "best" or "latest" checkpoint.
        stateful: Build the recurrent layers stateful (sampling one token at a time) or
            stateless (scoring whole sequences).

    Raises:
        RunError: the directory holds no trained run, or its checkpoint does not load.
    """
    from compiler.build import compile_spec

    trained = run_dir if isinstance(run_dir, TrainedRun) else open_trained(run_dir, which)
    spec = trained.spec
    model = compile_spec(reshaped_spec(spec, batch_size=rows, stateful=stateful)).model
    with trained.run.reading(which) as pointer:  # a training run's cleanup leaves it in place
        load_weights(model, pointer.prefix)
    return trained, model, pointer.step


# Rows sampled together while looking for valid records (at most the export's max_batch).
VALID_ONLY_BATCH = 64
DEFAULT_MAX_INVALID = 1000
# Rows a run directory's sampling loop runs at once, at most.
RUN_BATCH_CAP = 1024


def generate(
    path: Union[str, os.PathLike[str]],
    *,
    count: int = 5,
    prompt: str = "",
    max_new_tokens: Optional[int] = None,
    temperature: float = 1.0,
    seed: Optional[int] = None,
    checkpoint: str = BEST,
    valid_only: bool = False,
    max_invalid: int = DEFAULT_MAX_INVALID,
    constrained: bool = True,
) -> Generated:
    """Sample `count` records from an export or a trained run.

    Where the run has validators (a delimited corpus), generation is constrained by
    default: before every sample, the tokens that would break the record's rules are
    masked (`compiler.data.automaton`), so every record passes them by construction. A
    record that breaks a rule the automaton cannot enforce exactly is resampled; one that
    runs out of `max_new_tokens` before it ends is returned as it is (`complete` False).

    Args:
        path: An export (BASE/NAME, whose highest version is used, or BASE/NAME/VERSION),
            or a run directory written by `train`.
        count: Records to sample: together, as one batch, unless `valid_only` or more
            than one batch may hold (the export's max_batch; 1024 from a run directory).
        prompt: Text every record starts with; its characters must be in the vocabulary.
        max_new_tokens: Tokens to sample at most per record (default: the longest training
            record's tokens and a quarter more; see `default_max_new_tokens`).
        temperature: Divides the logits; lower is more conservative; 0 is greedy.
        seed: Seed of the sampler; the same seed gives the same records (default: random).
        checkpoint: For a run directory, "best" or "latest".
        valid_only: Keep sampling, in batches, until `count` records pass the run's
            validators; records that fail are dropped (gretel-synthetics' line validator).
        max_invalid: With `valid_only` or constrained generation: how many invalid records
            to sample at most before giving up.
        constrained: Mask the tokens that break the validators (False: the raw model, as
            `--unconstrained`).

    Raises:
        RunError: `path` is neither an export nor a trained run; with `valid_only`, the run
            has no validators (its corpus is not delimited).
        ValidRecordsExhausted: with `valid_only`, more than `max_invalid` invalid records
            were sampled; it carries the valid ones found.
        DataError: the prompt has a character the tokenizer has never seen, or (constrained)
            no record that passes the validators starts with it.
        RunError: the request exceeds the export's limits (export.limits).
        ValueError: count < 1, max_new_tokens < 1, max_invalid < 0, or a temperature that is
            negative or not finite.
    """
    from compiler.export.opened import open_export

    if (
        count < 1
        or (max_new_tokens is not None and max_new_tokens < 1)
        or max_invalid < 0
        or not 0 <= temperature < float("inf")
    ):
        raise ValueError(
            "expected count >= 1, max_new_tokens >= 1, max_invalid >= 0 and a "
            "finite temperature >= 0"
        )
    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    opened = open_export(path)
    if opened is None and not RunDir(os.fspath(path)).exists():
        raise RunError(
            [
                Diagnostic(
                    "error",
                    "not_generatable",
                    "expected an export (BASE/NAME or BASE/NAME/VERSION with saved_model.pb) "
                    "or a run directory written by keraspec train, received "
                    + _what_is_there(os.fspath(path)),
                    "",
                    os.fspath(path),
                )
            ]
        )
    # The most rows one batch holds: the export's max_batch, or RUN_BATCH_CAP from a run.
    export = None if opened is None else _export_sampler(opened, constrained)
    cap = RUN_BATCH_CAP if export is None else export.spec.export.limits.max_batch
    rows = min(count, cap) if not valid_only else min(max(count, VALID_ONLY_BATCH), cap)
    if export is not None:
        export.rows = rows
        sampler: _Sampler = export
    else:
        sampler = _run_sampler(os.fspath(path), rows, checkpoint, constrained)
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(sampler.spec, sampler.longest_record)
    ids = encode_prompt(sampler.tokenizer, prompt)
    if sampler.automaton is not None and sampler.automaton.walk(ids) is None:
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "prompt_breaks_rules",
                    f"expected a prompt that starts a record passing the run's validators "
                    f"({sampler.validators.describe_source()}), received {prompt!r}, which no "
                    "valid record starts with; change the prompt, or pass --unconstrained",
                    file="<prompt>",
                )
            ]
        )
    # The export's request limits bound a run directory's sampling too (the same spec), but
    # for its rows: a local loop runs up to RUN_BATCH_CAP at once.
    _check_limits(sampler.spec, sampler.source, rows if opened else None, len(ids), max_new_tokens)
    if valid_only and sampler.validators is None:
        raise RunError(
            [
                Diagnostic(
                    "error",
                    "no_validators",
                    "expected a run with validators for --valid-only (a "
                    "delimited corpus, or columns declared in the spec's data block), received one "
                    "whose records are not delimited",
                    "",
                    sampler.source,
                )
            ]
        )

    def draw(batch: int) -> _Batch:
        # The first batch uses the seed itself: without valid_only, the records are those of
        # one batch of `count` rows, as before.
        batch_seed = (
            seed
            if batch == 0
            else int(np.random.SeedSequence([seed % 2**63, batch]).generate_state(1)[0])
        )
        out = sampler.sample(ids, max_new_tokens, temperature, batch_seed)
        return dataclasses.replace(out, texts=[prompt + t for t in out.texts])

    if not valid_only and sampler.automaton is None:
        records: list[str] = []
        complete: list[bool] = []
        batch = 0
        while len(records) < count:  # one batch unless count exceeds the batch cap
            drawn = draw(batch)
            batch += 1
            records += drawn.texts[: count - len(records)]
            complete += drawn.complete[: count - len(complete)]
        return _checked(records, complete, sampler, len(records))
    # Constrained, a record the model did not end within max_new_tokens is returned as it
    # is (resampling would not give it more tokens); with valid_only, it is dropped.
    return _valid_only(draw, sampler, count, max_invalid, keep_unfinished=not valid_only)


def _checked(
    records: list[str], complete: list[bool], sampler: "_Sampler", sampled: int
) -> Generated:
    validators = sampler.validators
    if validators is None:
        return Generated(records, complete, None, sampler.source, sampler.step, None, sampled)
    failures = [validators.failures(r) for r in records]
    return Generated(
        records,
        complete,
        [not f for f in failures],
        sampler.source,
        sampler.step,
        [describe_problem(f) if f else "" for f in failures],
        sampled,
        validators.describe_source(),
    )


def _valid_only(
    draw, sampler: "_Sampler", count: int, max_invalid: int, keep_unfinished: bool = False
) -> Generated:
    """Records that pass the validators, in batches until `count` (constrained generation
    resamples the few that break a rule it does not enforce exactly). With
    `keep_unfinished`, a record that ran out of tokens is kept as it is."""
    validators = sampler.validators
    kept: list[str] = []
    kept_complete: list[bool] = []
    kept_masked: list[float] = []
    kept_failures: list[list[Failure]] = []
    invalid = sampled = batch = 0
    reasons: dict[str, int] = {}
    while len(kept) < count:
        drawn = draw(batch)
        batch += 1
        masked = drawn.masked_mass or [0.0] * len(drawn.texts)
        for record, done, mass in zip(drawn.texts, drawn.complete, masked):
            if len(kept) == count:
                break  # the rest of the batch is not looked at: the rate counts what was
            sampled += 1
            failures = validators.failures(record)
            if failures and not (keep_unfinished and not done):
                invalid += 1
                key = (
                    "field count"
                    if failures[0].column is None
                    else f"{failures[0].column}: {failures[0].reason}"
                )
                reasons[key] = reasons.get(key, 0) + 1
            else:
                kept.append(record)
                kept_complete.append(done)
                kept_masked.append(mass)
                kept_failures.append(failures)
            if invalid > max_invalid:
                break
        if invalid > max_invalid:
            break
    automaton = sampler.automaton
    result = Generated(
        kept,
        kept_complete,
        [not f for f in kept_failures],
        sampler.source,
        sampler.step,
        [describe_problem(f) if f else "" for f in kept_failures],
        sampled,
        validators.describe_source(),
        masked_mass=None if automaton is None else kept_masked,
        resampled_rules=() if automaton is None else automaton.resampled,
    )
    if len(kept) < count:
        common = ", ".join(
            f"{k} ({n})" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]
        )
        raise ValidRecordsExhausted(
            [
                Diagnostic(
                    "error",
                    "max_invalid",
                    f"expected {count} valid records, received {len(kept)} before more than "
                    f"--max-invalid = {max_invalid} invalid ones (acceptance rate "
                    f"{len(kept) / sampled:.1%} of {sampled} sampled; most common failures: "
                    f"{common}); raise --max-invalid (or --max-new-tokens when records run "
                    "out of tokens), lower --temperature, or train longer",
                    "",
                    sampler.source,
                )
            ],
            result,
        )
    return result


@dataclasses.dataclass(frozen=True)
class _Batch:
    """One batch of sampled records: texts, whether each ended, and (constrained) the
    probability mass the mask removed from each."""

    texts: list[str]
    complete: list[bool]
    masked_mass: Optional[list[float]] = None


class _Sampler:
    """A model to sample batches of `rows` records from, with what checks them.

    `automaton` is set when generation is constrained (the run has validators and the
    caller did not ask for the raw model)."""

    source: str
    step: Optional[int]
    spec: Any
    tokenizer: Tokenizer
    validators: Optional[Validators]
    automaton: Optional[Automaton] = None
    longest_record: Optional[int] = None  # tokens of the longest training record, if kept
    start: tuple[int, ...] = ()  # what a record's first token follows (`start_tokens`)

    context: Optional[int] = None  # positions the model can place (None: unbounded)

    def sample(self, ids: np.ndarray, max_new_tokens: int, temperature: float, seed: int) -> _Batch:
        raise NotImplementedError

    def _constrain(self, constrained: bool) -> None:
        """Compile the validators into the automaton, when generation is constrained."""
        if constrained and self.validators is not None:
            self.automaton = compile_automaton(
                self.validators, self.tokenizer, self.spec.input.vocab_size
            )

    def _room(self, positions: int, max_new_tokens: int) -> int:
        """Tokens a row may get after a prompt taking `positions` (start tokens included)."""
        if self.context is None:
            return max_new_tokens
        if positions > self.context:
            raise RunError(
                [
                    Diagnostic(
                        "error",
                        "context",
                        f"expected a prompt that fits the model's context of "
                        f"{self.context} positions with the record's start, received one taking "
                        f"{positions}",
                        "--prompt",
                        self.source,
                    )
                ]
            )
        return min(max_new_tokens, self.context - positions)


def _what_is_there(path: str) -> str:
    """What a path that is neither an export nor a run is, with a hint when one is near."""
    if not os.path.exists(path):
        return "a path that does not exist"
    if not os.path.isdir(path):
        return "a file"
    from compiler.export.savedmodel import resolve_export
    from compiler.export.serving import MODELS_CONFIG

    names = sorted(n for n in os.listdir(path) if resolve_export(os.path.join(path, n)) is not None)
    if names:
        hint = ", ".join(os.path.join(path, n) for n in names[:5])
        where = (
            f" ({MODELS_CONFIG} lists them)"
            if os.path.exists(os.path.join(path, MODELS_CONFIG))
            else ""
        )
        return f"a base directory of exports: name one of them, e.g. {hint}{where}"
    return "a directory holding neither"


def _export_sampler(opened: "OpenedExport", constrained: bool) -> _Sampler:
    """The export's in-graph `generate`, or for the raw model of an export whose `generate`
    is constrained, a client loop over its `step` signature."""
    if not constrained and opened.metadata.get("automaton") is not None:
        return _StepSampler(opened)
    return _ExportSampler(opened, constrained)


class _ExportSampler(_Sampler):
    """A local client of an export's in-graph `generate` signature, `rows` per request (set
    by the caller once the export's max_batch is known)."""

    def __init__(self, opened: "OpenedExport", constrained: bool = True):
        from compiler.tf import tensorflow

        version_dir = opened.version_dir
        self.source, self.step, self.rows = version_dir, opened.step, 1
        self.spec = opened.spec()
        self.tokenizer = opened.tokenizer()
        self.validators = opened.validators()
        self.longest_record = opened.run.get("longest_record_tokens")
        self.start = tuple(opened.metadata.get("start_tokens") or start_tokens(unit_of(self.spec)))
        if opened.metadata.get("automaton") is not None:
            self._constrain(constrained)  # the signature's own: for checking prompts
        self.tf = tensorflow()
        loaded = self.tf.saved_model.load(version_dir)
        if "generate" not in loaded.signatures:
            raise RunError(
                [
                    Diagnostic(
                        "error",
                        "no_generate_signature",
                        "expected an export with a "
                        f"generate signature, received one with {sorted(loaded.signatures)}",
                        "",
                        version_dir,
                    )
                ]
            )
        self.loaded = loaded  # the signature's function holds no reference to its object
        self.context = context_length(self.spec.spec)

    def sample(self, ids, max_new_tokens, temperature, seed):
        tf, rows = self.tf, self.rows
        self._room(len(self.start) + len(ids), max_new_tokens)
        prompts = np.tile(ids.astype(np.int32), (rows, 1))
        # One value per row (the signature is batchable); each row its own seed, derived
        # from the request's, so that the rows differ.
        out = self.loaded.signatures["generate"](
            prompt=tf.constant(prompts.reshape(rows, len(ids))),
            max_new_tokens=tf.fill([rows], tf.constant(max_new_tokens, tf.int32)),
            temperature=tf.fill([rows], tf.constant(temperature, tf.float32)),
            seed=tf.constant(np.arange(rows, dtype=np.int64) + np.int64(seed) * 1_000_003),
        )
        tokens, lengths = out["tokens"].numpy(), out["lengths"].numpy()
        texts = [self.tokenizer.decode(tokens[i, : lengths[i]]) for i in range(rows)]
        masked = None
        if self.automaton is not None and "masked_mass" in out:
            masked = [float(m) for m in out["masked_mass"].numpy()]
        return _Batch(texts, [bool(c) for c in out["complete"].numpy()], masked)


def _check_limits(
    spec: Any, where: str, count: Optional[int], prompt_tokens: int, max_new: int
) -> None:
    """The spec's request limits (export.limits), checked before sampling, as located errors."""
    limits = spec.export.limits
    problems = [
        ("--count", count or 0, limits.max_batch, "max_batch"),
        ("--max-new-tokens", max_new, limits.max_new_tokens, "max_new_tokens"),
        ("--prompt", prompt_tokens, limits.max_prompt_length, "max_prompt_length"),
    ]
    found = [
        Diagnostic(
            "error",
            "export_limit",
            f"expected at most export.limits.{field} = {limit} (the export's request "
            f"limit), received {value}",
            flag,
            where,
        )
        for flag, value, limit, field in problems
        if value > limit
    ]
    if found:
        raise RunError(found)


class _RunSampler(_Sampler):
    """The reference generator's Keras loop: the run's model rebuilt stateful, `rows` wide."""

    def __init__(self, trained: TrainedRun, rows: int, checkpoint: str, constrained: bool):
        from compiler.tf import tensorflow

        self.tf = tensorflow()
        self.spec, self.tokenizer = trained.spec, trained.tokenizer
        self.validators = trained.validators
        self.longest_record = trained.identity.longest_record_tokens
        self.start = trained.start
        self._constrain(constrained)
        self.source, self.rows = trained.path, rows
        self._build(trained, checkpoint)

    def _build(self, trained: TrainedRun, checkpoint: str) -> None:
        """The model to sample from, with the checkpoint's weights, and its call."""
        _, self.model, self.step = load_run_model(trained, self.rows, checkpoint)
        self.vocab = self.model.output_shape[-1]
        model = self.model
        self.call = self.tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def _first(self, context: np.ndarray) -> np.ndarray:
        """The last position's logits after the prompt, from a fresh state."""
        self.model.reset_states()
        return self.call(self.tf.constant(context))[:, -1, :].numpy()

    def _next(self, sampled: np.ndarray) -> np.ndarray:
        """The logits after one more token per row."""
        return self.call(self.tf.constant(sampled[:, None]))[:, -1, :].numpy()

    def sample(self, ids, max_new_tokens, temperature, seed):
        rows = self.rows
        start = self.start
        context = np.tile(np.concatenate((start, ids)).astype(np.int32), (rows, 1))
        room = self._room(context.shape[1], max_new_tokens)
        rng = np.random.default_rng(seed)
        # Only ids the tokenizer can produce, never padding: the model's vocab may be larger.
        allowed = np.zeros(self.vocab, dtype=bool)
        allowed[: self.tokenizer.size] = True
        allowed[PAD_ID] = False
        out = np.zeros((rows, max_new_tokens), dtype=np.int32)
        done = np.zeros(rows, dtype=bool)
        lengths = np.full(rows, room)
        logits = self._first(context)
        rules = _Rules(self.automaton, ids, rows)
        for t in range(room):
            sampled = _sample(
                logits, rules.mask(allowed, done, logits, temperature), temperature, rng
            )
            sampled[done] = EOR_ID
            rules.advance(sampled, done)
            out[:, t] = sampled
            finished = ~done & (sampled == EOR_ID)
            lengths[finished] = t
            done |= finished
            if done.all() or t == room - 1:
                break
            logits = self._next(sampled)
        texts = [self.tokenizer.decode(out[i, : lengths[i]]) for i in range(rows)]
        return _Batch(texts, [bool(d) for d in done], rules.masked_mass())


class _CachedRunSampler(_RunSampler):
    """For a model that places tokens (a position table, an attention cache): the run's
    serving model (`build_state_model`), fed its states back one token at a time, so the
    prefix is never recomputed. A row whose context fills up ends incomplete."""

    def _build(self, trained: TrainedRun, checkpoint: str) -> None:
        from compiler.build import build_state_model

        _, keras_model, self.step = load_run_model(trained, None, checkpoint, stateful=False)
        serving_spec = reshaped_spec(trained.spec, batch_size=None, stateful=False)
        model, self.states = build_state_model(serving_spec)
        copy_weights(keras_model, model)
        self.context = context_length(serving_spec.spec)
        self.vocab = keras_model.output_shape[-1]
        self.call = self.tf.function(
            lambda inputs: model(inputs, training=False), reduce_retracing=True
        )

    def _advance(self, tokens: np.ndarray) -> np.ndarray:
        outputs = self.call([self.tf.constant(tokens), *self.values])
        self.values = list(outputs[1:])
        return outputs[0][:, -1, :].numpy()

    def _first(self, context: np.ndarray) -> np.ndarray:
        tf = self.tf
        self.values = [tf.zeros([len(context), *st.shape], st.dtype) for st in self.states]
        return self._advance(context)

    def _next(self, sampled: np.ndarray) -> np.ndarray:
        return self._advance(sampled[:, None])


def _run_sampler(run_dir: str, rows: int, checkpoint: str, constrained: bool) -> _RunSampler:
    """The reference's stateful loop, or for a model that places tokens, the cached one."""
    trained = open_trained(run_dir, checkpoint)
    cached = context_length(trained.spec.spec) is not None
    return (_CachedRunSampler if cached else _RunSampler)(trained, rows, checkpoint, constrained)


class _Rules:
    """A batch's automaton states and the log of the probability each row's mask kept (the
    loop in the graph does the same, in `compiler.export.signatures`)."""

    def __init__(self, automaton: Optional[Automaton], prompt: np.ndarray, rows: int):
        self.automaton = automaton
        start = automaton.walk(prompt) if automaton is not None else None
        self.states = np.full(rows, start if start is not None else 0, dtype=np.int64)
        self.kept = np.zeros(rows)

    def mask(
        self, allowed: np.ndarray, done: np.ndarray, logits: np.ndarray, temperature: float
    ) -> np.ndarray:
        """[rows, vocab]: the ids each row may sample."""
        if self.automaton is None:
            return np.broadcast_to(allowed, logits.shape)
        rule = self.automaton.allowed(self.states) | done[:, None]
        z = np.where(allowed, logits.astype(np.float64) / (temperature or 1.0), -np.inf)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        removed = np.where(rule, 0.0, p).sum(axis=1)
        self.kept += np.where(done, 0.0, np.log1p(-np.minimum(removed, 1 - 1e-12)))
        return allowed & rule

    def advance(self, sampled: np.ndarray, done: np.ndarray) -> None:
        if self.automaton is not None:
            moved = self.automaton.table[self.states, sampled]
            self.states = np.where(done, self.states, moved)

    def masked_mass(self) -> Optional[list[float]]:
        if self.automaton is None:
            return None
        return [float(m) for m in 1.0 - np.exp(self.kept)]


def _sample(logits: np.ndarray, allowed: np.ndarray, temperature: float, rng: Any) -> np.ndarray:
    logits = np.where(allowed, logits.astype(np.float64), -np.inf)
    if temperature == 0:
        return logits.argmax(axis=1).astype(np.int32)
    z = logits / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    cumulative = p.cumsum(axis=1)
    # u in [0, total): the first index whose cumulative mass reaches u has p > 0.
    u = rng.random((len(p), 1)) * cumulative[:, -1:]
    return (cumulative <= u).sum(axis=1).astype(np.int32)


class _StepSampler(_RunSampler):
    """The raw model of an export whose `generate` is constrained: a client loop over its
    `step` signature, one token per row and request, the states fed back."""

    def __init__(self, opened: "OpenedExport"):
        from compiler.tf import tensorflow

        self.tf = tensorflow()
        self.source, self.step, self.rows = opened.version_dir, opened.step, 1
        self.spec = opened.spec()
        self.tokenizer = opened.tokenizer()
        self.validators = opened.validators()
        self.longest_record = opened.run.get("longest_record_tokens")
        self.start = tuple(opened.metadata.get("start_tokens") or start_tokens(unit_of(self.spec)))
        self.loaded = self.tf.saved_model.load(opened.version_dir)
        if "step" not in self.loaded.signatures:
            raise RunError(
                [
                    Diagnostic(
                        "error",
                        "no_step_signature",
                        "expected an export with a step signature for the raw model "
                        "(--unconstrained), received one with "
                        f"{sorted(self.loaded.signatures)}; generate from the run instead",
                        "",
                        opened.version_dir,
                    )
                ]
            )
        self.states = opened.metadata.get("states") or []
        self.context = context_length(self.spec.spec)
        self.vocab = self.spec.input.vocab_size

    def _advance(self, tokens: np.ndarray) -> np.ndarray:
        tf = self.tf
        inputs = {self.spec.input.name: tf.constant(tokens, tf.int32)}
        inputs.update({st["name"]: value for st, value in zip(self.states, self.values)})
        out = self.loaded.signatures["step"](**inputs)
        self.values = [out[st["name"]] for st in self.states]
        return out["logits"][:, -1, :].numpy()

    def _first(self, context: np.ndarray) -> np.ndarray:
        tf = self.tf
        self.values = [tf.zeros([len(context), *st["shape"]], st["dtype"]) for st in self.states]
        return self._advance(context)

    def _next(self, sampled: np.ndarray) -> np.ndarray:
        return self._advance(sampled[:, None])

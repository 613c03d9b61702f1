"""Training: a spec and a corpus of records to a run directory, standard or DP.

`train(spec, data, run_dir)` reads the corpus, fits (or, resuming, loads) the tokenizer,
cuts examples (`compiler.data.dataset`), compiles the spec (`compiler.build`) and runs the
training loop with Keras' own train step, checkpointing into the run directory
(`compiler.training.rundir`). It prints nothing: progress goes to an optional callback, the outcome
comes back as a `TrainReport`.

Recurrent state. Standard runs train the spec's model as written; a stateful layer carries
its state from one batch to the next (the reference's behaviour), and the states are reset
at the start of every epoch and before and after validation, so an epoch never starts from
the previous epoch's last batch and validation never starts from training's. DP runs train a
stateless copy of the model (same layers, same weights, so checkpoints load into the
stateful one): every batch starts from zero states, so no record's data reaches another
batch's gradients through the state, which clipping could not bound.

Randomness. Weights are initialised from the run's seed; dropout draws from
`tf.random.Generator`s whose states are saved in every checkpoint; each epoch visits the
examples in an order drawn from (seed, epoch). A resumed run therefore continues exactly as
an uninterrupted one would.

Distribution. Under `training.distribution` the model is built and compiled in the
strategy's scope (`compiler.training.distribution`), every worker cuts the same examples (checked)
from the chief's seed, and each replica trains on its share of the same global batches a
single process would see. Only the chief writes the run directory; the other workers write
their part of each checkpoint to a temporary place, as Keras does, and every worker saves
at the same steps. A worker that loses the others stops with an error naming the step;
restarting every worker resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any, Callable, Optional, Union

from compiler.data.columns import (
    VALIDATORS_FILE,
    declared_header,
    learn_validators,
    validators_json,
)
from compiler.data.corpus import Corpus, read_corpus, record_shape
from compiler.data.dataset import TrainingData, example_length, prepare, unit_of
from compiler.data.tokenizer import Tokenizer, fit_tokenizer, load_tokenizer
from compiler.diagnostics import Diagnostic, RunError, SpecError
from compiler.files import resource_errors
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec, checked, derived, spec_of
from compiler.privacy.accounting import privacy_report
from compiler.privacy.canaries import GradientCanaries
from compiler.training import distribution
from compiler.training.loop import _Loop
from compiler.training.report import Progress, TrainReport
from compiler.training.rundir import RunDir
from compiler.training.runfiles import RunIdentity
from compiler.training.weights import AnySpec, with_stateful


def _with_epochs(spec: CheckedSpec, epochs: Optional[int]) -> CheckedSpec:
    if epochs is None:
        return spec
    if epochs < 1:
        raise SpecError(
            [
                Diagnostic(
                    "error",
                    "epochs",
                    f"expected epochs >= 1, received {epochs}",
                    "training.epochs",
                    "<arguments>",
                )
            ]
        )
    return spec.variant(
        spec.spec.model_copy(
            update={"training": spec.training.model_copy(update={"epochs": epochs})}
        )
    )


def training_spec(
    original: AnySpec, unit: Optional[str] = None, length: Optional[int] = None
) -> AnySpec:
    """The spec the loop compiles: stateless, but for a run of stream windows.

    Every example of a DP run (one record) or an aligned run (records packed from a
    record's start) starts from zero state; Keras cannot run stateful RNNs under a
    tf.distribute strategy. Only a run begun before examples were aligned (`unit`
    "window", resumed) keeps its layers stateful. The layers and their weights are the
    spec's own, so checkpoints of the training model load into the spec's model (stateful
    or not). Poisson-sampled DP runs draw a batch of random size at every step: their
    model takes any batch size (the expected size only scales the update).
    """
    spec = spec_of(original)
    privacy = spec.training.privacy
    d = spec.training.distribution
    window = (unit or unit_of(spec)) == "window"
    if not window or (d is not None and d.strategy != "one_device"):
        spec = with_stateful(spec, False)
    if privacy is not None and privacy.sampling == "poisson":
        spec = spec.model_copy(update={"input": spec.input.model_copy(update={"batch_size": None})})
    if length is not None and length != spec.input.sequence_length:  # `example_length`
        spec = spec.model_copy(
            update={"input": spec.input.model_copy(update={"sequence_length": length})}
        )
    return derived(original, spec)


def _encode_records(tokenizer: Tokenizer, corpus: Corpus) -> list[Any]:
    from compiler.diagnostics import DataError

    encoded = []
    for line, record in enumerate(corpus.records, start=1):
        try:
            encoded.append(tokenizer.encode(record))
        except KeyError as e:  # only when a saved vocabulary meets new text
            raise DataError(
                [
                    Diagnostic(
                        "error",
                        "unknown_character",
                        f"expected characters of the run's vocabulary, received " f"{e.args[0]!r}",
                        "data",
                        corpus.path,
                        line,
                    )
                ]
            ) from None
    return encoded


def run_files(
    spec: CheckedSpec, tokenizer: Tokenizer, corpus: Optional[Corpus]
) -> dict[str, bytes]:
    """A new run's own files: its tokenizer, and the validators of its records (none
    without a corpus).

    A DP run learns no rule from its records (the field count only), unless the spec's
    `data` block declares them.
    """
    files = dict(tokenizer.files())
    if corpus is None:
        return files
    validators = learn_validators(
        corpus.records,
        private=spec.training.privacy is not None,
        declared=spec.data,
        header_line=corpus.header,
    )
    if validators is not None:
        files[VALIDATORS_FILE] = validators_json(validators)
    return files


def _noise_for_run(spec: s.Spec, records: int) -> Optional[float]:
    privacy = spec.training.privacy
    if privacy is None:
        return None
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    return privacy_report(spec, records).noise_multiplier


def train(
    spec: Union[s.Spec, CheckedSpec],
    data: Union[str, os.PathLike[str]],
    run_dir: Union[str, os.PathLike[str]],
    *,
    epochs: Optional[int] = None,
    max_steps: Optional[int] = None,
    checkpoint_every: Optional[int] = None,
    callback: Optional[Callable[[Progress], None]] = None,
    cluster: Optional[dict[str, Any]] = None,
    canaries: Optional[GradientCanaries] = None,
) -> TrainReport:
    """Train a spec on a corpus of records into a run directory, resuming if it holds one.

    Args:
        spec: A checked spec (`load_spec`; a `Spec` built in Python is checked first).
        data: A UTF-8 text file, one record per line.
        run_dir: Where checkpoints, tokenizer, logs and the report go. If it holds a run
            of the same spec and corpus, training resumes from its latest checkpoint.
        epochs: Overrides training.epochs (a resumed run may be given more).
        max_steps: Stop when this many steps (in total, across resumes) have been taken.
        checkpoint_every: Also save the latest checkpoint every this many steps (it is
            always saved after each epoch, every few minutes, and when the run stops).
        callback: Called with a `Progress` at the start, after each step and epoch, and
            at the end.
        cluster: For a multi_worker spec, the cluster and this process's task
            (`distribution.cluster_config`, or `distribution.parse_tf_config` of a TF_CONFIG
            text); required for multi_worker.
        canaries: Gradient canaries of a white-box audit (`compiler.evaluate.audit`): each
            included one is an extra example of every step's Poisson sample, and the
            scores of all of them are kept in the run's checkpoints. Needs the fast DP
            implementation with Poisson sampling.

    Returns:
        The report, also written to RUN_DIR/report.json.

    Raises:
        SpecError: the spec cannot train on this corpus (e.g. its vocab_size is too small).
        DataError: the corpus is unreadable, not UTF-8 text, or too small.
        RunError: the run directory is unusable or holds a different run.
        Nothing is written to the run directory before all of these checks have passed.
    """
    spec = _with_epochs(checked(spec), epochs)
    privacy = spec.training.privacy
    if canaries is not None and (
        privacy is None or privacy.implementation != "fast" or privacy.sampling != "poisson"
    ):
        raise ValueError("gradient canaries need the fast DP implementation, Poisson sampling")
    run = RunDir(os.fspath(run_dir))
    run.check_usable()
    corpus = read_corpus(data, header=declared_header(spec))
    resuming = run.exists()
    if resuming:
        identity = run.check_same_run(spec, corpus.sha256)
        run.verify_files()
        tokenizer = load_tokenizer(run.path)
    else:
        tokenizer = fit_tokenizer(spec, corpus.records)
        seed = spec.training.seed
        identity = RunIdentity(
            name=spec.name,
            data=os.path.abspath(corpus.path),
            data_sha256=corpus.sha256,
            seed=seed if seed is not None else secrets.randbelow(2**31),
            record_shape=record_shape(corpus.records),
            spec={},  # the spec's fingerprint: `RunDir.start` fills it in
        )
    seed = identity.seed
    tr = spec.training
    unit = identity.unit or unit_of(spec)  # a resumed run keeps its own
    encoded = _encode_records(tokenizer, corpus)
    length = identity.example_length or example_length(spec_of(spec), unit, encoded)

    def examples(seed: int) -> TrainingData:
        return prepare(
            encoded,
            unit=unit,
            batch_size=tr.batch_size,
            sequence_length=length,
            validation_split=tr.validation_split,
            seed=seed,
            data_name=corpus.path,
        )

    training_data = examples(seed)
    noise = identity.noise_multiplier
    if noise is None:
        noise = _noise_for_run(spec, training_data.records)
    from compiler.tf import tensorflow  # after every check that needs no TensorFlow

    tf = tensorflow()
    placement = distribution.place(tf, spec, cluster)  # before TensorFlow runs anything else
    if placement.workers > 1:
        # Every worker must draw the same weights, validation split and example order: the
        # chief's seed.
        agreed = distribution.agree(placement, seed)
        if agreed != seed:
            seed = identity.seed = agreed
            training_data = examples(seed)
        distribution.check_same_data(placement, training_data, tokenizer)
    # Compiling can still fail (TensorFlow refusing a layer): before anything is written.
    loop = _Loop(
        tf,
        spec,
        training_spec(spec, unit, length),
        noise,
        run,
        corpus,
        tokenizer,
        training_data,
        seed,
        max_steps,
        checkpoint_every,
        callback if placement.chief else None,
        placement,
        canaries,
    )
    # One writer per run directory: the chief holds its lock from the first write to the end.
    # Running out of space (or permission) is an ordinary error: every write is atomic, so
    # the last complete checkpoint stays, and the same command resumes once there is room.
    with (
        resource_errors(
            run.path,
            "the run's files and checkpoints",
            "nothing complete was lost; make room and run the same command "
            "again to resume from the last checkpoint",
            RunError,
        ),
        run.writer() if placement.chief else contextlib.nullcontext(),
    ):
        if resuming:
            run.check_same_run(spec, corpus.sha256)  # again, now that no one else writes
        if not resuming and placement.chief:
            if run.exists():
                raise RunError(
                    [
                        Diagnostic(
                            "error",
                            "run_dir_busy",
                            "expected a new run directory, received one "
                            "another process started meanwhile; run the command again to resume it",
                            "",
                            run.path,
                        )
                    ]
                )
            identity.noise_multiplier = noise
            identity.unit = unit
            identity.example_length = length
            if spec.training.privacy is None:  # a DP run keeps no statistic of its records
                identity.longest_record_tokens = max((len(r) for r in encoded), default=0)
            run.start(spec, identity, run_files(spec, tokenizer, corpus))
        elif placement.chief:
            run.record_spec(spec)  # the epochs (or distribution) this resume asks for
        return loop.run()

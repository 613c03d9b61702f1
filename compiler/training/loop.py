"""The training loop of one run: checkpoints, recurrent state, Poisson or shuffled batches,
epsilon, TensorBoard, early stopping and the report (see `compiler.training.run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import tempfile
import threading
import time
from typing import Any, Optional

import numpy as np

from compiler.data.dataset import Examples, TrainingData, epoch_order
from compiler.data.sampling import (
    BatchSizes,
    padded_shares,
    poisson_indices,
    secret_key,
    shuffled_order,
)
from compiler.data.tokenizer import PAD_ID
from compiler.diagnostics import Diagnostic, RunError
from compiler.lang.checked import CheckedSpec
from compiler.privacy.accounting import PrivacyReport, privacy_report, privacy_warnings
from compiler.privacy.canaries import GradientCanaries, Observer
from compiler.training import distribution
from compiler.training.report import PRIVACY_UNIT, Progress, TrainReport
from compiler.training.rundir import BEST, LATEST
from compiler.training.runfiles import CheckpointState

# PLD accounting takes about 0.4 s: the running epsilon is refreshed this often (and at
# every epoch, and at the end), so that it costs training about 1%.
EPSILON_EVERY_SECONDS = 30.0


CHECKPOINT_EVERY_SECONDS = 300.0


def _random_generators(model: Any) -> list[Any]:
    """The dropout layers' tf.random.Generators (their state is checkpointed)."""
    found = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if generator is not None:
            found.append(generator)
    return found


def _recurrent_states(model: Any, spec: CheckedSpec) -> list[Any]:
    """The state variables of the stateful layers of `model`, built from `spec`."""
    return [
        v
        for layer in spec.model.layers
        if layer.is_stateful
        for v in model.get_layer(layer.name).states
    ]


def _weights_digest(model: Any) -> str:
    """sha256 of the trainable weights: equal on every worker of a distributed run."""
    digest = hashlib.sha256()
    for weight in model.trainable_weights:
        digest.update(weight.numpy().tobytes())
    return digest.hexdigest()


def _compile(
    tf: Any, spec: CheckedSpec, seed: int, weighted: bool, noise: Optional[float] = None
) -> Any:
    from compiler.build import compile_spec
    from compiler.tf import tf_keras

    keras = tf_keras()
    keras.utils.set_random_seed(seed)
    experimental = keras.backend.experimental
    was_enabled = experimental.is_tf_random_generator_enabled()
    # Dropout's random state must live in variables the checkpoint can hold.
    experimental.enable_tf_random_generator()
    try:
        # Record examples carry per-token weights that mask the padding: metrics use them too.
        return compile_spec(spec, weighted_metrics=weighted, noise_multiplier=noise)
    finally:
        if not was_enabled:
            experimental.disable_tf_random_generator()


def _dataset(tf: Any, examples: Examples, order: Any, batch_size: int) -> Any:
    arrays = [examples.inputs[order], examples.targets[order]]
    if examples.weights is not None:
        arrays.append(examples.weights[order])
    return (
        tf.data.Dataset.from_tensor_slices(tuple(arrays))
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


class _StopRequest:
    """The first Ctrl-C asks the loop to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Loop:
    def __init__(
        self,
        tf,
        spec,
        train_spec,
        noise,
        run,
        corpus,
        tokenizer,
        data: TrainingData,
        seed,
        max_steps,
        checkpoint_every,
        callback,
        placement: distribution.Placement,
        canaries: Optional[GradientCanaries] = None,
    ):
        self.tf = tf
        self.spec = spec
        self.train_spec = train_spec
        self.noise = noise
        self.run_dir = run
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.data = data
        self.seed = seed
        self.max_steps = max_steps
        self.checkpoint_every = checkpoint_every
        self.callback = callback or (lambda progress: None)
        tr = spec.training
        self.batch = tr.batch_size
        self.length = data.train.inputs.shape[1]  # sequence_length, or `example_length`
        self.epochs = tr.epochs
        self.steps_per_epoch = len(data.train) // self.batch
        self.placement = placement
        with placement.strategy.scope():
            self.compiled = _compile(tf, train_spec, seed, weighted=data.weighted, noise=noise)
        self.model = self.compiled.model
        self.optimizer = self.compiled.optimizer
        privacy = train_spec.training.privacy
        self.canaries = canaries
        self.observer: Optional[Observer] = None
        if canaries is not None:
            with placement.strategy.scope():
                self.observer = Observer(
                    self.model.trainable_variables,
                    canaries,
                    sampling_probability=self.batch / len(data.train),
                    noise_multiplier=noise,
                    l2_norm_clip=self.compiled.dp_step.dp.l2_norm_clip,
                )
            self.compiled.dp_step.canaries = self.observer
        self.sampling = privacy.sampling if privacy is not None else None
        # DP runs draw their batches (and the fast implementation its noise) from secret
        # keys: operating-system entropy, kept only in the checkpoints, the chief's on
        # every worker (each worker must cut the same batches and draw the same noise).
        self.secrets = None
        keys = []
        if privacy is not None:
            self.secrets = tf.train.Checkpoint(
                sampling_key=tf.Variable(secret_key(), trainable=False, name="sampling_key")
            )
            keys.append(self.secrets.sampling_key)
        dp_step = self.compiled.dp_step
        if dp_step is not None:
            keys.append(dp_step.noise.key)
        if placement.workers > 1:
            for variable in keys:
                agreed = distribution.agree_bytes(placement, variable.numpy().tobytes())
                variable.assign(np.frombuffer(agreed, dtype=np.int64))
        if privacy is not None and dp_step is None:
            # tensorflow-privacy's optimizers draw their noise from TensorFlow's global
            # seed, which set_random_seed(seed) made public: re-seed it from the operating
            # system's entropy (afresh in every process, so no noise stream ever repeats)
            # before the train step is traced.
            tf.random.set_seed(int.from_bytes(os.urandom(7), "little"))
        self.checkpoint = self._checkpoint(with_states=True)
        self.state = CheckpointState()
        self._epsilon_at: tuple[float, Optional[float], int] = (0.0, None, -1)
        self.last_logs: dict[str, float] = {}

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, *, with_states: bool) -> Any:
        """What a checkpoint holds: weights, optimizer, dropout RNGs, the DP secrets and,
        with_states, the stateful layers' states."""
        parts: dict[str, Any] = dict(
            model=self.model, optimizer=self.optimizer, rng=_random_generators(self.model)
        )
        if with_states:
            parts["states"] = _recurrent_states(self.model, self.train_spec)
        if self.secrets is not None:
            parts["secrets"] = self.secrets
        if self.compiled.dp_step is not None:
            parts["dp_noise"] = self.compiled.dp_step.noise
        if self.observer is not None:
            parts["canaries"] = self.observer.state
        return self.tf.train.Checkpoint(**parts)

    def restore(self) -> None:
        latest = self.run_dir.pointer(LATEST)
        if self.placement.chief:
            self.run_dir.collect_garbage()
        if latest is None:
            return
        self.run_dir.verify_checkpoint(latest)
        try:
            checkpoint = self.checkpoint
            saved = self.tf.train.list_variables(latest.prefix)
            if self.secrets is not None and not any(
                name.startswith("secrets/") for name, _ in saved
            ):
                raise ValueError(
                    "it holds no secret sampling key (written before batches were drawn "
                    "from one): train into a new run directory"
                )
            if not any(name.startswith("states/") for name, _ in saved):
                # Saved by a stateless training model (DP, or a distributed run): recurrent
                # states start from zero, as they do at every epoch's start.
                checkpoint = self._checkpoint(with_states=False)
            checkpoint.read(latest.prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError, IndexError, self.tf.errors.OpError) as e:
            raise RunError(
                [
                    Diagnostic(
                        "error",
                        "checkpoint_unreadable",
                        f"expected a checkpoint of this spec's model, received one that "
                        f"does not load: {str(e).splitlines()[0][:300]}",
                        "",
                        latest.prefix,
                    )
                ]
            ) from e
        self.state = latest.state.model_copy(update={"files": {}})

    def save(self, *, best: bool = False) -> None:
        if not self.placement.chief:
            # Every worker takes part in writing a checkpoint; only the chief's is kept.
            with tempfile.TemporaryDirectory(prefix="keraspec-worker-") as scratch:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            self._saved_step = self.state.step
            return
        with self.run_dir.new_checkpoint(self.state.step, self.state) as prefix:
            self.checkpoint.write(prefix)
        if best:
            self.run_dir.point(BEST, self.state.step)
        self.run_dir.point(LATEST, self.state.step)
        self.run_dir.collect_garbage()
        self._saved_step = self.state.step
        self._saved_at = time.monotonic()

    # ------------------------------------------------------------------ privacy

    def privacy(self, compare: bool = False) -> Optional[PrivacyReport]:
        if self.train_spec.training.privacy is None:
            return None
        return privacy_report(
            self.train_spec,
            self.data.records,
            steps=self.state.step,
            noise_multiplier=self.noise,
            compare=compare,
        )

    def epsilon(self, force: bool = False) -> Optional[float]:
        if self.train_spec.training.privacy is None:
            return None
        at, value, _ = self._epsilon_at
        now = time.monotonic()
        if force or value is None or now - at > EPSILON_EVERY_SECONDS:
            value = self.privacy().epsilon
            self._epsilon_at = (now, value, self.state.step)
        return value

    # ------------------------------------------------------------------ the loop

    def total_steps(self) -> int:
        planned = self.epochs * self.steps_per_epoch
        total = planned if self.max_steps is None else min(planned, self.max_steps)
        return max(total, self.state.step)  # never a step past the total

    def progress(self, event: str, logs: dict[str, float]) -> None:
        # The epoch in progress; after an epoch and at the end, the epochs completed (as the
        # report counts them).
        done = event in ("epoch", "end")
        epoch = self.state.epoch if done else min(self.state.epoch + 1, self.epochs)
        self.callback(
            Progress(
                event,
                self.state.step,
                self.total_steps(),
                epoch,
                self.epochs,
                logs,
                self.epsilon(force=event != "step"),
            )
        )

    def run(self) -> TrainReport:
        tf = self.tf
        # The optimizer's slots exist before a restore, so it fills them now, not on use.
        self._create_variables()
        self.restore()
        self._saved_step = self.state.step
        self._saved_at = time.monotonic()
        if self.placement.chief:
            logs_dir = self.run_dir.file("logs")
            self.train_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "train"))
            self.val_writer = tf.summary.create_file_writer(os.path.join(logs_dir, "validation"))
        else:
            self.train_writer = self.val_writer = tf.summary.create_noop_writer()
        started = time.monotonic()
        wall_before = self.state.wall_time
        stopped_by = "epochs"
        self.progress("start", {})
        peer_lost = False
        with _StopRequest() as stop:
            try:
                stopped_by = self._epochs(stop)
            except distribution.peer_errors(tf) as e:
                if self.placement.workers == 1:
                    raise
                peer_lost = True
                raise distribution.lost_peer(self.placement, self.state.step, e) from None
            finally:
                self.state.wall_time = wall_before + time.monotonic() - started
                if self.state.step != self._saved_step and not peer_lost:
                    self.save()
                self.train_writer.flush()
                self.val_writer.flush()
        report = self.report(stopped_by)
        if self.placement.chief:
            self.run_dir.write_report(report)
        self.progress("end", {"loss": report.loss} if report.loss is not None else {})
        return report

    def _create_variables(self) -> None:
        """Create the optimizer's slots and the metrics' variables before the first step.

        Created inside the first step, they would make TensorFlow trace the training step
        twice (once to lift the new variables out), doubling the start-up time.
        """
        tf, model = self.tf, self.model
        vocab = self.spec.input.vocab_size
        y_pred = tf.zeros([1, 1, vocab], tf.float32)
        y_true = tf.zeros([1, 1], tf.int32)
        with self.placement.strategy.scope():
            self.optimizer._create_all_weights(model.trainable_variables)
            _ = self.optimizer.iterations
            if not model.compiled_loss.built:
                model.compiled_loss.build(y_pred)
            if not model.compiled_metrics.built:
                model.compiled_metrics.build(y_pred, y_true)

    def _epochs(self, stop: _StopRequest) -> str:
        tf = self.tf
        train_fn = self.model.make_train_function()
        state = self.state
        if state.stopped_early:
            return "early_stopping"
        while state.epoch < self.epochs:
            if state.step_in_epoch == 0:
                self.model.reset_states()
            self.model.reset_metrics()
            iterator = iter(self._epoch_batches())
            logs: dict[str, float] = {}
            while state.step_in_epoch < self.steps_per_epoch:
                if self.max_steps is not None and state.step >= self.max_steps:
                    return "max_steps"
                if stop.requested:
                    return "interrupted"
                t0 = time.perf_counter()
                logs = {k: float(v) for k, v in train_fn(iterator).items()}
                self.last_logs = logs
                state.train_time += time.perf_counter() - t0
                if self.sampling == "poisson":
                    self._count_batch(state.step)
                state.step += 1
                state.step_in_epoch += 1
                with self.train_writer.as_default(step=state.step):
                    for key, value in logs.items():
                        tf.summary.scalar(key, value)
                    epsilon = self.epsilon()
                    # Logged at the steps it was computed for (every EPSILON_EVERY_SECONDS).
                    fresh = self._epsilon_at[2] == state.step
                    if fresh and epsilon is not None and math.isfinite(epsilon):
                        tf.summary.scalar("epsilon", epsilon)
                self.progress("step", logs)
                if self._checkpoint_due() and state.step_in_epoch < self.steps_per_epoch:
                    self.save()
            if self._end_epoch(logs):
                return "early_stopping"
        return "epochs"

    def _epoch_batches(self) -> Any:
        """The rest of the current epoch's training batches."""
        state = self.state
        if self.sampling == "poisson":
            first = state.step - state.step_in_epoch
            return self._poisson_dataset(first + state.step_in_epoch, first + self.steps_per_epoch)
        if self.sampling == "shuffle":
            order = shuffled_order(self._sampling_key(), len(self.data.train), state.epoch)
        else:
            order = epoch_order(len(self.data.train), self.seed, state.epoch)
        order = order[state.step_in_epoch * self.batch : self.steps_per_epoch * self.batch]
        return self._dataset(self.data.train, order)

    def _sampling_key(self) -> np.ndarray:
        return self.secrets.sampling_key.numpy()

    def _poisson_indices(self, step: int) -> np.ndarray:
        """Step `step`'s examples; with gradient canaries, the included canaries follow the
        training examples (numbers from len(train)), each sampled as an example is."""
        examples = len(self.data.train)
        extra = 0 if self.canaries is None else len(self.canaries.trained)
        return poisson_indices(self._sampling_key(), step, examples + extra, self.batch / examples)

    def _count_batch(self, step: int) -> None:
        sizes = BatchSizes(**(self.state.batch_sizes or {}))
        sizes.add(len(self._poisson_indices(step)))
        self.state.batch_sizes = dataclasses.asdict(sizes)

    def _poisson_dataset(self, start: int, stop: int) -> Any:
        """Poisson-sampled batches of steps [start, stop), this worker's replicas' shares.

        Each step's batch is split into equal shares, one per replica, padded with masked
        slots (no tokens, loss weight 0: no loss, no gradient, no norm), so the replicas
        together train on exactly the sampled records.
        """
        tf = self.tf
        examples, placement = self.data.train, self.placement
        first = placement.worker * placement.replicas_per_worker
        mine = range(first, first + placement.replicas_per_worker)

        trained = None if self.canaries is None else self.canaries.trained

        def batches() -> Any:
            for step in range(start, stop):
                drawn = self._poisson_indices(step)
                records = drawn[drawn < len(examples)]
                shares = padded_shares(records, placement.replicas)
                if trained is not None:
                    sampled = trained[drawn[drawn >= len(examples)] - len(examples)]
                    canary_shares = np.array_split(sampled.astype(np.int32), placement.replicas)
                for replica, (part, _) in enumerate(shares):
                    if replica not in mine:
                        continue
                    real = part >= 0
                    rows = np.where(real, part, 0)
                    inputs = np.where(real[:, None], examples.inputs[rows], PAD_ID)
                    targets = np.where(real[:, None], examples.targets[rows], PAD_ID)
                    weights = np.where(real[:, None], examples.weights[rows], 0.0)
                    x = inputs if trained is None else (inputs, canary_shares[replica])
                    yield x, targets, weights.astype(np.float32)

        length = examples.inputs.shape[1]
        inputs = tf.TensorSpec([None, length], tf.int32)
        signature = (
            inputs if trained is None else (inputs, tf.TensorSpec([None], tf.int32)),
            tf.TensorSpec([None, length], tf.int32),
            tf.TensorSpec([None, length], tf.float32),
        )
        if placement.replicas == 1:
            return tf.data.Dataset.from_generator(batches, output_signature=signature)
        return placement.strategy.distribute_datasets_from_function(
            lambda context: tf.data.Dataset.from_generator(batches, output_signature=signature)
        )

    def _dataset(self, examples: Examples, order: Any) -> Any:
        """Batches of `examples` in `order`; under distribution, each replica's share."""
        placement = self.placement
        if placement.replicas == 1:
            return _dataset(self.tf, examples, order, self.batch)
        order = order[: len(order) // self.batch * self.batch]
        mine = distribution.worker_order(order, self.batch, placement)
        share = self.batch // placement.replicas
        return placement.strategy.distribute_datasets_from_function(
            lambda context: _dataset(self.tf, examples, mine, share)
        )

    def _checkpoint_due(self) -> bool:
        if self.checkpoint_every and self.state.step - self._saved_step >= self.checkpoint_every:
            return True
        if self.placement.workers > 1:
            return False  # every worker must save at the same steps: no clock-based saves
        return time.monotonic() - self._saved_at > CHECKPOINT_EVERY_SECONDS

    def _end_epoch(self, logs: dict[str, float]) -> bool:
        """Validate, record the epoch, save; True when early stopping ends the run."""
        state = self.state
        entry = {"epoch": state.epoch + 1, "step": state.step, **logs}
        if self.data.validation is not None:
            self.model.reset_states()
            order = np.arange(len(self.data.validation))
            val = self.model.evaluate(
                self._dataset(self.data.validation, order),
                steps=len(order) // self.batch,  # a distributed dataset needs the count
                verbose=0,
                return_dict=True,
            )
            self.model.reset_states()
            entry.update({f"val_{k}": float(v) for k, v in val.items()})
            with self.val_writer.as_default(step=state.step):
                for key, value in val.items():
                    self.tf.summary.scalar(key, float(value))
        state.history.append(entry)
        state.epoch += 1
        state.step_in_epoch = 0
        monitor = "val_loss" if "val_loss" in entry else "loss"
        improved = state.best_value is None or entry[monitor] < state.best_value
        if improved:
            state.best_value, state.best_step = entry[monitor], state.step
        stop = self._early_stopping(entry)
        self.save(best=improved)
        self.progress("epoch", {k: v for k, v in entry.items() if k not in ("epoch", "step")})
        if stop and self.spec.training.early_stopping.restore_best_weights:
            best = self.run_dir.pointer(BEST)
            if best is not None:
                self.checkpoint.read(best.prefix).expect_partial()
        return stop

    def _early_stopping(self, entry: dict[str, float]) -> bool:
        es = self.spec.training.early_stopping
        if es is None:
            return False
        state = self.state
        value = entry.get(es.monitor)
        if value is None:
            return False
        sign = -1.0 if es.monitor.endswith("accuracy") else 1.0  # accuracy: higher is better
        if state.stop_value is None or sign * (value - state.stop_value) < -es.min_delta:
            state.stop_value, state.stop_wait = value, 0
            return False
        state.stop_wait += 1
        if state.stop_wait >= es.patience:
            state.stopped_early = True
        return state.stopped_early

    # ------------------------------------------------------------------ the report

    def report(self, stopped_by: str) -> TrainReport:
        state = self.state
        data = self.data
        last = state.history[-1] if state.history else {}
        best_val = min((h["val_loss"] for h in state.history if "val_loss" in h), default=None)
        tokens = state.step * self.batch * self.length
        privacy = None
        warnings = []
        if data.truncated:
            warnings.append(
                f"{data.truncated} of {data.records} training records are longer than "
                f"sequence_length = {self.length} tokens (with <eor> at both ends) and were "
                "truncated; raise sequence_length to train on whole records"
            )
        report = self.privacy(compare=True)
        if report is not None:
            privacy = {
                **report.to_dict(),
                "privacy_unit": PRIVACY_UNIT,
                "validation_records_protected": False,
                "sampling": self._sampling_report(),
                "randomness": {
                    "secret": ["batch sampling"]
                    + (
                        ["noise (per step from a key in the checkpoint)"]
                        if self.compiled.dp_step is not None
                        else [
                            "noise (TensorFlow's global generator, re-seeded from the "
                            "operating system in every process)"
                        ]
                    ),
                    "seeded": ["weight initialisation", "dropout", "validation split"],
                },
            }
            privacy["assumptions"] = privacy["assumptions"] + [
                f"each training example holds exactly one record ({PRIVACY_UNIT}); no "
                "recurrent state crosses from one batch to another",
                f"the {data.validation_records} validation records only choose the best "
                "checkpoint and are not covered by the guarantee",
            ]
            warnings.extend(privacy_warnings(report))
        return TrainReport(
            name=self.spec.name,
            run_dir=self.run_dir.path,
            data=self.corpus.path,
            stopped_by=stopped_by,
            epochs=state.epoch,
            steps=state.step,
            steps_per_epoch=self.steps_per_epoch,
            examples=len(data.train),
            unit=data.unit,
            records=data.records,
            validation_records=data.validation_records,
            batch_size=self.batch,
            sequence_length=self.length,
            seed=self.seed,
            wall_time=round(state.wall_time, 3),
            tokens_per_second=round(tokens / state.train_time, 1) if state.train_time else 0.0,
            loss=self.last_logs.get("loss", last.get("loss")),
            best_monitor="val_loss" if data.validation is not None else "loss",
            best_value=state.best_value,
            best_step=state.best_step,
            best_val_loss=best_val,
            truncated_records=data.truncated,
            tokenizer=self.tokenizer.kind,
            vocabulary=self.tokenizer.size,
            history=state.history,
            privacy=privacy,
            warnings=warnings,
            distribution=self._distribution_report(),
            weights_sha256=_weights_digest(self.model),
        )

    def _sampling_report(self) -> dict[str, Any]:
        if self.sampling != "poisson":
            return {"method": "shuffle", "batch": self.batch, "truncation": "none"}
        sizes = BatchSizes(**(self.state.batch_sizes or {}))
        return {
            "method": "poisson",
            "expected_batch": self.batch,
            "probability": self.batch / len(self.data.train),
            # The model takes any batch size: a sampled batch is never truncated, and it
            # is padded only to split it equally among the replicas.
            "capacity": None,
            "truncation": "never",
            "overflow": 0,
            "mean_batch": round(sizes.mean, 3),
            "min_batch": sizes.smallest if sizes.steps else None,
            "max_batch": sizes.largest if sizes.steps else None,
        }

    def _distribution_report(self) -> Optional[dict[str, Any]]:
        d = self.spec.training.distribution
        if d is None:
            return None
        p = self.placement
        return {
            "strategy": d.strategy,
            "workers": p.workers,
            "worker": p.worker,
            "replicas": p.replicas,
            "replica_batch": self.batch // p.replicas,
        }

"""Run directories: what `keraspec train` writes, and how a run is recognised and resumed.

Layout of RUN_DIR:

    run.json               identity of the run: spec digest, corpus digest, seed, data unit,
                           noise multiplier (DP); written once, when the run starts
    spec.resolved.yaml     the resolved spec the run trains (what export rebuilds)
    tokenizer.json         the tokenizer (+ tokenizer.model for SentencePiece)
    checkpoints/
      latest.json          points at the newest complete checkpoint directory
      best.json            points at the best one (validation loss, else training loss)
      step-00000120/       ckpt.index, ckpt.data-*, state.json
    logs/train, logs/validation    TensorBoard event files
    report.json            the last report

Checkpoints are written to a temporary directory beside the others, fsynced, renamed into
place, and only then pointed at by `latest.json` (itself replaced atomically). A run killed
at any moment leaves the previous pointer and the directory it names intact, and stray
temporary directories are removed on the next start. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Iterator, Optional

from compiler.data.columns import load_validators
from compiler.diagnostics import Diagnostic, RunError
from compiler.files import (
    digest_mismatch,
    file_sha256,
    fsync_directory,
    fsync_tree,
    read_json_as,
    write_atomic,
)
from compiler.lang.render import dump_yaml, flatten, to_data
from compiler.lang.spec import Spec
from compiler.training.report import REPORT_ADAPTER, RunReport
from compiler.training.runfiles import (
    CheckpointState,
    Pointer,
    RunIdentity,
    SavedCheckpoint,
)

RUN_FILE = "run.json"
SPEC_FILE = "spec.resolved.yaml"
REPORT_FILE = "report.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"
STATE_FILE = "state.json"
LATEST, BEST = "latest", "best"
LOCK_FILE = ".lock"
_TMP = ".tmp-"
_CHECKPOINT_DIR = re.compile(r"step-\d{8}")

# Fields (and field groups) a resumed run may change: training longer is what resuming is
# for; moving a run to other devices or machines changes where its steps run, not its model,
# data or optimizer.
RESUMABLE_CHANGES = ("training.epochs", "training.distribution")


def _resumable(key: str) -> bool:
    return any(key == field or key.startswith(field + ".") for field in RESUMABLE_CHANGES)


def _error(run_dir: str, code: str, message: str, path: str = "") -> RunError:
    return RunError([Diagnostic("error", code, message, path, run_dir)])


def spec_fingerprint(spec: Spec) -> dict[str, Any]:
    """The spec data a resumed run must match (everything but RESUMABLE_CHANGES)."""
    flat = flatten(to_data(spec))
    return {k: v for k, v in flat.items() if not _resumable(k)}


def spec_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints, one per field."""
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            show = lambda v: "nothing" if v is missing else json.dumps(v)  # noqa: E731
            lines.append(f"{key}: run has {show(a)}, this spec has {show(b)}")
    return lines


@dataclasses.dataclass
class RunDir:
    """A run directory, checked for use before anything is written into it."""

    path: str

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.path, CHECKPOINTS)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check_usable(self) -> None:
        """Refuse a path that is a file, or a directory (or parent) that is not writable.

        Raises:
            RunError: naming the path and what is wrong with it.
        """
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise _error(path, "run_dir_file", "expected a directory for the run, received a file")
        existing = path
        while not os.path.exists(existing):
            parent = os.path.dirname(existing) or "."
            if parent == existing:
                break
            existing = parent
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            raise _error(
                path,
                "run_dir_unwritable",
                f"expected a writable directory, received {existing!r}, which is not writable",
            )
        if os.path.isdir(path):
            linked = [
                n
                for n in (
                    RUN_FILE,
                    SPEC_FILE,
                    REPORT_FILE,
                    CHECKPOINTS,
                    "logs",
                    "tokenizer.json",
                    "tokenizer.model",
                    "validators.json",
                )
                if os.path.islink(os.path.join(path, n))
            ]
            if linked:
                raise _error(
                    path,
                    "run_dir_link",
                    f"expected plain files and directories in the run directory, received "
                    f"symbolic link(s) {', '.join(linked)}: keraspec never writes through a "
                    "link out of its output directory",
                )
        if os.path.isdir(path) and not self.exists():
            # What a start interrupted before run.json was written may have left is ours.
            ours = {
                SPEC_FILE,
                CHECKPOINTS,
                "logs",
                "tokenizer.json",
                "tokenizer.model",
                "validators.json",
            }
            stray = [n for n in os.listdir(path) if not n.startswith(".") and n not in ours]
            if stray:
                shown = ", ".join(sorted(stray)[:5]) + (", ..." if len(stray) > 5 else "")
                raise _error(
                    path,
                    "run_dir_foreign",
                    "expected an empty directory or a keraspec run directory, received one "
                    f"holding other files ({shown}); choose another -o",
                )

    def exists(self) -> bool:
        """True when the directory holds a run (its run.json)."""
        return os.path.isfile(self.file(RUN_FILE))

    def read_run(self) -> RunIdentity:
        """The run's identity (run.json).

        Raises:
            RunError: the file is missing or damaged, located.
        """
        return read_json_as(
            self.file(RUN_FILE),
            RunIdentity,
            error=RunError,
            code="run_dir_corrupt",
            advice="it is the run's identity: restore it, or train into a new directory",
        )

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the directory's exclusive lock for a whole training run.

        An OS file lock (flock) on RUN_DIR/.lock, which the kernel releases when the process
        ends, however it ends. A second `train` on the same directory fails at once.

        Raises:
            RunError: another process holds the lock; names it.
        """
        os.makedirs(self.path, exist_ok=True)
        path = self.file(LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                who = (
                    f"process {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
                )
                raise _error(
                    self.path,
                    "run_dir_busy",
                    f"expected a run directory no other "
                    f"process is training, received one that {who} is training "
                    f"(it holds {path}); wait for it to end, or stop it",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def reading(self, which: str = BEST) -> Iterator[SavedCheckpoint]:
        """The trained checkpoint `which` (see `trained_checkpoint`), held while it is read.

        A shared lock on the checkpoint's index file keeps a training run's cleanup from
        removing it meanwhile; a checkpoint removed between reading its pointer and locking
        it is looked up again.
        """
        for _ in range(5):
            pointer = self.trained_checkpoint(which)
            try:
                fd = os.open(pointer.prefix + ".index", os.O_RDONLY)
            except FileNotFoundError:
                continue  # the pointer moved on and its old checkpoint was removed
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                self.verify_checkpoint(pointer)
                yield pointer
            finally:
                os.close(fd)
            return
        raise _error(
            self.path,
            "checkpoint_missing",
            f"expected the {which} checkpoint to stay "
            "in place while it is read, received one removed five times in a row",
        )

    def check_same_run(self, spec: Spec, corpus_sha256: str) -> RunIdentity:
        """The saved run's identity, after checking that this spec and corpus continue it.

        Raises:
            RunError: listing every field that differs, or naming the corpus change.
        """
        run = self.read_run()
        differences = spec_differences(run.spec, spec_fingerprint(spec))
        if differences:
            raise _error(
                self.path,
                "run_dir_other_spec",
                "expected the spec this run was started with, received a different one: "
                + "; ".join(differences)
                + ". Use another run directory for a different spec",
            )
        if run.data_sha256 != corpus_sha256:
            raise _error(
                self.path,
                "run_dir_other_data",
                f"expected the corpus this run was started with (sha256 "
                f"{run.data_sha256[:12]}…), received a different file (sha256 "
                f"{corpus_sha256[:12]}…). Use another run directory for other data",
            )
        return run

    def record_spec(self, spec: Spec) -> None:
        """Rewrite the run's resolved spec, e.g. when a resume asks for more epochs, so that
        the run directory (and its exports) say what the run was trained for."""
        text = dump_yaml(to_data(spec))
        path = self.file(SPEC_FILE)
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            write_atomic(path, text)

    def start(self, spec: Spec, run: RunIdentity, files: dict[str, bytes]) -> None:
        """Write a new run's identity (with the spec's fingerprint and the files' digests),
        resolved spec and own files (tokenizer, validators)."""
        os.makedirs(self.path, exist_ok=True)
        for name, data in files.items():
            write_atomic(self.file(name), data)
        write_atomic(self.file(SPEC_FILE), dump_yaml(to_data(spec)))
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        # run.json last: its presence is what makes this a run directory.
        identity = run.model_copy(update={"spec": spec_fingerprint(spec), "files": digests})
        write_atomic(self.file(RUN_FILE), identity.model_dump_json(indent=1) + "\n")

    def verify_files(self) -> None:
        """Check the run's own files (tokenizer, validators) against the digests in run.json.

        Raises:
            RunError: a file is missing or was changed since the run started.
        """
        found = digest_mismatch(self.path, self.read_run().files)
        if found is None:
            return
        path, missing = found
        if missing:
            raise _error(
                self.path,
                "run_file_missing",
                f"expected {path}, written when the "
                "run started, received no such file; restore it",
            )
        raise _error(
            self.path,
            "run_file_changed",
            f"expected {path} as written when "
            "the run started, received different content (truncated or "
            "edited): the model's ids would mean other text; restore it",
        )

    def verify_checkpoint(self, pointer: SavedCheckpoint) -> None:
        """Check a checkpoint's files against the digests saved in its state.json.

        Raises:
            RunError: a file is missing or not what was written, naming it and the way on.
        """
        directory = pointer.directory
        found = digest_mismatch(directory, pointer.state.files)
        if found is not None:
            path, missing = found
            received = "no such file" if missing else "different content (truncated or edited)"
            raise _error(
                self.path,
                "checkpoint_damaged",
                f"expected {path} as it was "
                f"saved, received {received}; move the pointer that names "
                f"{os.path.basename(directory)} (checkpoints/latest.json or "
                "best.json) aside to go on from the other one",
            )

    # ------------------------------------------------------------------ checkpoints

    def pointer(self, which: str) -> Optional[SavedCheckpoint]:
        """The state saved with the `latest` or `best` checkpoint, with its directory.

        Raises:
            RunError: the pointer, or the state of the checkpoint it names, is unreadable or
                not what keraspec wrote; it names the file and what to do. Nothing is removed.
        """
        path = os.path.join(self.checkpoints, f"{which}.json")
        other = BEST if which == LATEST else LATEST
        advice = (
            f"nothing was removed; move it aside to go on from the {other} checkpoint, "
            "or restore it"
        )
        if not os.path.lexists(path):
            return None
        pointer = read_json_as(
            path, Pointer, error=RunError, code="checkpoint_corrupt", advice=advice
        )
        directory = os.path.join(self.checkpoints, pointer.directory)
        state_path = os.path.join(directory, STATE_FILE)
        if not os.path.exists(state_path):
            raise _error(
                self.path,
                "checkpoint_missing",
                f"expected the checkpoint {directory} "
                f"named by {which}.json, received no such checkpoint; {advice}",
            )
        state = read_json_as(
            state_path,
            CheckpointState,
            error=RunError,
            code="checkpoint_corrupt",
            advice=f"the checkpoint {directory} is damaged; {advice}",
        )
        return SavedCheckpoint(os.path.join(directory, CHECKPOINT_PREFIX), state)

    def trained_checkpoint(self, which: str = BEST) -> SavedCheckpoint:
        """The `which` checkpoint of a trained run (falling back to the latest one).

        Raises:
            RunError: the directory holds no run, or no checkpoint yet.
        """
        if not self.exists():
            raise _error(
                self.path,
                "not_a_run",
                f"expected a run directory written by keraspec train, received one without "
                f"{RUN_FILE}",
            )
        pointer = self.pointer(which) or self.pointer(LATEST)
        if pointer is None:
            raise _error(
                self.path,
                "no_checkpoint",
                "expected a trained run, received one with no checkpoint yet; train it first",
            )
        return pointer

    @contextlib.contextmanager
    def new_checkpoint(self, step: int, state: CheckpointState) -> Iterator[str]:
        """A temporary directory to write checkpoint `step` into; renamed when complete.

        Args:
            step: The global step, which names the directory.
            state: The loop's state at that step (epoch, position, history, ...).

        Yields:
            The checkpoint prefix to write to (TensorFlow adds .index and .data-*).
        """
        os.makedirs(self.checkpoints, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=_TMP, dir=self.checkpoints)
        try:
            yield os.path.join(tmp, CHECKPOINT_PREFIX)
            files = {n: file_sha256(os.path.join(tmp, n)) for n in sorted(os.listdir(tmp))}
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                f.write(state.model_copy(update={"files": files}).model_dump_json(indent=1) + "\n")
            fsync_tree(tmp)
            final = os.path.join(self.checkpoints, f"step-{step:08d}")
            if os.path.exists(final):
                # The same step saved twice (end of epoch, then end of run): same content.
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
                fsync_directory(self.checkpoints)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def point(self, which: str, step: int) -> None:
        """Make `which` (latest or best) name the complete checkpoint of `step`."""
        pointer = Pointer(directory=f"step-{step:08d}", step=step)
        write_atomic(
            os.path.join(self.checkpoints, f"{which}.json"), pointer.model_dump_json() + "\n"
        )

    def collect_garbage(self) -> None:
        """Remove checkpoint directories no pointer names, and interrupted writes.

        Never on a guess: an unreadable pointer stops the cleanup (with the pointer's error)
        before anything is removed, and a checkpoint a reader holds (`reading`) stays.
        """
        if not os.path.isdir(self.checkpoints):
            return
        keep = set()
        for which in (LATEST, BEST):
            pointer = self.pointer(which)  # raises, naming the file, when it is unreadable
            if pointer is not None:
                keep.add(os.path.basename(pointer.directory))
        for name in os.listdir(self.checkpoints):
            full = os.path.join(self.checkpoints, name)
            if os.path.isdir(full) and not os.path.islink(full) and name not in keep:
                _remove_unless_read(full)

    def read_report(self) -> Optional[RunReport]:
        """The last report (None before the run's first one).

        Raises:
            RunError: the file is damaged, located.
        """
        if not os.path.lexists(self.file(REPORT_FILE)):
            return None
        return read_json_as(
            self.file(REPORT_FILE),
            REPORT_ADAPTER,
            error=RunError,
            code="report_corrupt",
            advice="it is rewritten at the end of the next training run, or restore it",
        )

    def write_report(self, report: RunReport) -> None:
        write_atomic(self.file(REPORT_FILE), report.model_dump_json(indent=2) + "\n")


def _remove_unless_read(directory: str) -> None:
    """Remove a checkpoint directory, unless a reader holds its index (then: next time)."""
    try:
        fd = os.open(os.path.join(directory, CHECKPOINT_PREFIX + ".index"), os.O_RDONLY)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)  # no index: an interrupted write
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    else:
        shutil.rmtree(directory, ignore_errors=True)
    finally:
        os.close(fd)


def inspect_run(run: RunDir) -> dict[str, Any]:
    """What a run directory holds: its identity, checkpoints and last report (no TensorFlow).

    Raises:
        RunError: the directory holds no run, or a file of it is damaged.
    """
    if not run.exists():
        raise _error(
            run.path,
            "not_a_run",
            f"expected a run directory written by keraspec "
            f"train, received one without {RUN_FILE}",
        )
    identity = run.read_run()
    checkpoints = {}
    for which in (LATEST, BEST):
        pointer = run.pointer(which)
        if pointer is not None:
            history = pointer.state.history or [{}]
            checkpoints[which] = {
                "step": pointer.step,
                "epoch": pointer.state.epoch,
                "directory": pointer.directory,
                "metrics": (
                    {k: v for k, v in history[-1].items() if k not in ("epoch", "step")}
                    if which == LATEST
                    else None
                ),
                "best_value": pointer.state.best_value,
            }
    report: Optional[dict[str, Any]] = None
    full = run.read_report()
    if full is not None:
        keys = (
            "stopped_by",
            "epochs",
            "steps",
            "loss",
            "best_val_loss",
            "records",
            "validation_records",
            "wall_time",
            "tokens_per_second",
        )
        report = {k: getattr(full, k, None) for k in keys}
        privacy = full.privacy or {}
        report["epsilon"], report["delta"] = privacy.get("epsilon"), privacy.get("delta")
    found = load_validators(run.path)
    validators = None if found is None else found.source
    with open(run.file(SPEC_FILE), encoding="utf-8") as f:
        spec_text = f.read()
    return {
        "path": run.path,
        "name": identity.name,
        "data": identity.data,
        "data_sha256": identity.data_sha256,
        "seed": identity.seed,
        "unit": identity.unit,
        "noise_multiplier": identity.noise_multiplier,
        "validators": validators,
        "checkpoints": checkpoints,
        "report": report,
        "spec": spec_text,
    }

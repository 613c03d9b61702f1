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
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Optional

from compiler.diagnostics import Diagnostic, RunError
from compiler.files import fsync_directory, fsync_tree, write_atomic
from compiler.lang.render import dump_yaml, flatten, to_data
from compiler.lang.spec import Spec

RUN_FILE = "run.json"
SPEC_FILE = "spec.resolved.yaml"
REPORT_FILE = "report.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"
STATE_FILE = "state.json"
LATEST, BEST = "latest", "best"
_TMP = ".tmp-"

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
                n for n in (RUN_FILE, SPEC_FILE, REPORT_FILE, CHECKPOINTS, "logs",
                            "tokenizer.json", "tokenizer.model", "validators.json")
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
            ours = {SPEC_FILE, CHECKPOINTS, "logs", "tokenizer.json", "tokenizer.model",
                    "validators.json"}
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

    def read_run(self) -> dict[str, Any]:
        try:
            with open(self.file(RUN_FILE), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise _error(self.path, "run_dir_corrupt", f"expected a readable {RUN_FILE}: {e}")

    def check_same_run(self, spec: Spec, corpus_sha256: str) -> dict[str, Any]:
        """The saved run's identity, after checking that this spec and corpus continue it.

        Raises:
            RunError: listing every field that differs, or naming the corpus change.
        """
        run = self.read_run()
        differences = spec_differences(run.get("spec", {}), spec_fingerprint(spec))
        if differences:
            raise _error(
                self.path,
                "run_dir_other_spec",
                "expected the spec this run was started with, received a different one: "
                + "; ".join(differences)
                + ". Use another run directory for a different spec",
            )
        if run.get("data_sha256") != corpus_sha256:
            raise _error(
                self.path,
                "run_dir_other_data",
                f"expected the corpus this run was started with (sha256 "
                f"{run.get('data_sha256', '?')[:12]}…), received a different file (sha256 "
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

    def start(self, spec: Spec, run: dict[str, Any], files: dict[str, bytes]) -> None:
        """Write a new run's identity, resolved spec and tokenizer files."""
        os.makedirs(self.path, exist_ok=True)
        for name, data in files.items():
            write_atomic(self.file(name), data)
        write_atomic(self.file(SPEC_FILE), dump_yaml(to_data(spec)))
        # run.json last: its presence is what makes this a run directory.
        write_atomic(
            self.file(RUN_FILE),
            json.dumps({**run, "spec": spec_fingerprint(spec)}, indent=1) + "\n",
        )

    # ------------------------------------------------------------------ checkpoints

    def pointer(self, which: str) -> Optional[dict[str, Any]]:
        """The state saved with the `latest` or `best` checkpoint, with its directory."""
        path = os.path.join(self.checkpoints, f"{which}.json")
        try:
            with open(path, encoding="utf-8") as f:
                pointer = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise _error(self.path, "checkpoint_corrupt", f"expected a readable {path}: {e}")
        directory = os.path.join(self.checkpoints, str(pointer.get("directory")))
        try:
            with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError) as e:
            raise _error(
                self.path,
                "checkpoint_missing",
                f"expected the checkpoint {directory} named by {which}.json, received: {e}",
            )
        return {**state, "prefix": os.path.join(directory, CHECKPOINT_PREFIX)}

    def trained_checkpoint(self, which: str = BEST) -> dict[str, Any]:
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
    def new_checkpoint(self, step: int, state: dict[str, Any]) -> Iterator[str]:
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
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                f.write(json.dumps(state, indent=1) + "\n")
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
        pointer = {"directory": f"step-{step:08d}", "step": step}
        write_atomic(
            os.path.join(self.checkpoints, f"{which}.json"), json.dumps(pointer) + "\n"
        )

    def collect_garbage(self) -> None:
        """Remove checkpoint directories no pointer names, and interrupted writes."""
        if not os.path.isdir(self.checkpoints):
            return
        keep = set()
        for which in (LATEST, BEST):
            try:
                with open(os.path.join(self.checkpoints, f"{which}.json"), encoding="utf-8") as f:
                    keep.add(json.load(f)["directory"])
            except (OSError, ValueError, KeyError):
                continue
        for name in os.listdir(self.checkpoints):
            full = os.path.join(self.checkpoints, name)
            if os.path.isdir(full) and not os.path.islink(full) and name not in keep:
                shutil.rmtree(full, ignore_errors=True)

    def write_report(self, report: dict[str, Any]) -> None:
        write_atomic(self.file(REPORT_FILE), json.dumps(report, indent=2) + "\n")


def run_provenance(run: RunDir) -> dict[str, Any]:
    """What an export keeps of its run, for evaluating it later: the corpus digest and seed
    (which records were held out) and the privacy guarantee of its last report."""
    identity = run.read_run()
    report: dict[str, Any] = {}
    try:
        with open(run.file(REPORT_FILE), encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        pass
    return {
        "data_sha256": identity.get("data_sha256"),
        "seed": identity.get("seed"),
        "privacy": report.get("privacy") if isinstance(report, dict) else None,
    }


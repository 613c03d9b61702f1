"""A trained run, as the stages that use one read it: export, generation and evaluate.

`open_trained` checks the directory once (a trained checkpoint, the digests of its files)
and loads what every reader needs: the checked spec, the tokenizer, the validators and the
run's identity. No TensorFlow: the weights are loaded by the reader, into the model it
builds (`compiler.training.weights`), while it holds the checkpoint (`RunDir.reading`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

from compiler.data.columns import Validators, load_validators
from compiler.data.dataset import start_tokens, unit_of
from compiler.data.tokenizer import Tokenizer, load_tokenizer
from compiler.lang.checked import CheckedSpec
from compiler.lang.parse import load_spec
from compiler.training.rundir import BEST, SPEC_FILE, RunDir
from compiler.training.runfiles import RunIdentity


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run directory holding a trained model.

    Attributes:
        run: The run directory.
        spec: Its checked spec (spec.resolved.yaml).
        tokenizer: Its tokenizer.
        validators: Its column rules (None for a run that has none).
        identity: Its run.json: data digest, seed, record shape, noise.
        step: The step of the checkpoint asked for, when the run was opened.
    """

    run: RunDir
    spec: CheckedSpec
    tokenizer: Tokenizer
    validators: Optional[Validators]
    identity: RunIdentity
    step: int

    @property
    def path(self) -> str:
        return self.run.path

    @property
    def start(self) -> tuple[int, ...]:
        """What generation feeds before a record: as its examples started (`start_tokens`)."""
        return start_tokens(self.identity.unit or unit_of(self.spec))

    def provenance(self) -> dict[str, Any]:
        """What an export keeps of its run, for evaluating it later: the corpus digest and
        seed (which records were held out) and the privacy guarantee of its last report."""
        return {
            "data_sha256": self.identity.data_sha256,
            "seed": self.identity.seed,
            "privacy": self.privacy,
            "longest_record_tokens": self.identity.longest_record_tokens,
            "unit": self.identity.unit,
        }

    @property
    def privacy(self) -> Optional[dict[str, Any]]:
        """The privacy guarantee of the run's last report (None: not DP, or no report)."""
        report = self.run.read_report()
        return None if report is None else report.privacy


def open_trained(run_dir: Union[str, os.PathLike[str]], which: str = BEST) -> TrainedRun:
    """The trained run in `run_dir`, its checkpoint `which` ("best" or "latest").

    Raises:
        RunError: the directory holds no trained run, or a file of it was changed.
        SpecError: its spec no longer loads (a file edited by hand).
    """
    run = RunDir(os.fspath(run_dir))
    pointer = run.trained_checkpoint(which)  # a located error before anything is read
    run.verify_files()
    identity = run.read_run()
    return TrainedRun(
        run,
        load_spec(run.file(SPEC_FILE)),
        load_tokenizer(run.path),
        load_validators(run.path, identity.record_shape),
        identity,
        pointer.step,
    )

"""The files of a run directory, typed: what each holds, checked in one place on reading.

`run.json` is a `RunIdentity`, `checkpoints/latest.json` and `best.json` are `Pointer`s,
each checkpoint's `state.json` is a `CheckpointState`; `report.json` is a
`compiler.training.report.RunReport` and `validators.json` a
`compiler.data.columns.Validators`. `compiler.files.read_json_as` reads them all, so that a
damaged file is one located error. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

# Files keraspec wrote: strict types (no "3" for 3), unknown keys ignored (a newer keraspec
# may add some).
_FILE = ConfigDict(strict=True, extra="ignore")


class RunIdentity(BaseModel):
    """`run.json`: what a run is, written when it starts and never changed after."""

    model_config = _FILE

    name: str = Field(description="The spec's name.")
    data: str = Field(description="The corpus's absolute path when the run started.")
    data_sha256: str = Field(description="The corpus's sha256: a resumed run must match it.")
    seed: int = Field(description="The seed of weights, dropout and the validation split.")
    record_shape: Optional[dict[str, Union[str, int]]] = Field(
        None, description="A delimited corpus: the delimiter and field count most records share."
    )
    unit: Optional[str] = Field(
        None, description="How records become examples: aligned records or windows."
    )
    example_length: Optional[int] = Field(None, description="Tokens per example.")
    noise_multiplier: Optional[float] = Field(None, description="DP runs: the noise used.")
    longest_record_tokens: Optional[int] = Field(
        None, description="Non-DP runs: the longest record's tokens (generation's default)."
    )
    imported: Optional[dict[str, str]] = Field(
        None, description="`keraspec import --run-dir`: the file the weights came from."
    )
    spec: dict[str, Any] = Field(
        description="The spec's fields a resumed run must match, flattened."
    )
    files: dict[str, str] = Field(
        default_factory=dict, description="The run's own files (tokenizer, validators): sha256."
    )


class Pointer(BaseModel):
    """`checkpoints/latest.json` or `best.json`: the checkpoint directory it names."""

    model_config = _FILE

    directory: str = Field(pattern=r"^step-\d{8}$")
    step: int


class CheckpointState(BaseModel):
    """A checkpoint's `state.json`: the training loop's position and bookkeeping."""

    model_config = _FILE

    step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    step_in_epoch: int = 0
    history: list[dict[str, Union[int, float]]] = Field(default_factory=list)
    best_value: Optional[float] = None
    best_step: Optional[int] = None
    stop_value: Optional[float] = None  # early stopping's best value of its monitor
    stop_wait: int = 0
    stopped_early: bool = False
    wall_time: float = 0.0
    train_time: float = 0.0
    # Poisson-sampled DP runs: the batch sizes drawn so far (steps, total, min, max).
    batch_sizes: Optional[dict[str, int]] = None
    # The checkpoint's files: sha256 (written with the state).
    files: dict[str, str] = Field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SavedCheckpoint:
    """A complete checkpoint: its TensorFlow prefix and the state saved with it."""

    prefix: str
    state: CheckpointState

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def directory(self) -> str:
        return os.path.dirname(self.prefix)

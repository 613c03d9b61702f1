"""What a run reports: `Progress` (to a callback, while it trains) and `TrainReport` (at
the end, also RUN_DIR/report.json).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

PRIVACY_UNIT = "one record per example"


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the loop tells its callback after each step and each epoch.

    Attributes:
        event: "start", "step", "epoch" (after validation) or "end".
        step: Global steps taken so far.
        total_steps: Steps the run will take if nothing stops it early.
        epoch: The epoch in progress, 1-based; for "epoch" and "end" events, the epochs
            completed.
        epochs: Epochs planned.
        logs: Running metrics of the epoch (loss, accuracy, ...), and after an epoch
            the validation metrics (val_loss, ...).
        epsilon: For DP runs, the epsilon spent so far (refreshed every few seconds).
    """

    event: str
    step: int
    total_steps: int
    epoch: int
    epochs: int
    logs: dict[str, float]
    epsilon: Optional[float] = None


@dataclasses.dataclass
class TrainReport:
    """The outcome of `train`, also written to RUN_DIR/report.json."""

    name: str
    run_dir: str
    data: str
    stopped_by: str
    epochs: int
    steps: int
    steps_per_epoch: int
    examples: int
    unit: str
    records: int
    validation_records: int
    batch_size: int
    sequence_length: int
    seed: int
    wall_time: float
    tokens_per_second: float
    loss: Optional[float]
    best_monitor: str
    best_value: Optional[float]
    best_step: Optional[int]
    best_val_loss: Optional[float]
    truncated_records: int
    tokenizer: str
    vocabulary: int
    history: list[dict[str, float]]
    privacy: Optional[dict[str, Any]] = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    distribution: Optional[dict[str, Any]] = None
    weights_sha256: str = ""

    @property
    def epsilon(self) -> Optional[float]:
        return None if self.privacy is None else self.privacy["epsilon"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

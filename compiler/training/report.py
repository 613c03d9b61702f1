"""What a run reports: `Progress` (to a callback, while it trains) and `TrainReport` (at
the end, also RUN_DIR/report.json).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

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


class TrainReport(BaseModel):
    """The outcome of `train`, also written to RUN_DIR/report.json."""

    model_config = ConfigDict(strict=True, extra="ignore")

    name: str
    run_dir: str
    data: str
    stopped_by: str = Field(
        description="Why training stopped: epochs, max_steps, early_stopping or interrupted."
    )
    epochs: int = Field(description="Epochs completed.")
    steps: int = Field(description="Global steps taken.")
    steps_per_epoch: int
    examples: int = Field(description="Training examples.")
    unit: str = Field(description="How records became examples: aligned or window.")
    records: int = Field(description="Training records.")
    validation_records: int
    batch_size: int
    sequence_length: int
    seed: int
    wall_time: float = Field(description="Seconds, this run and the runs it resumed.")
    tokens_per_second: float
    loss: Optional[float]
    best_monitor: str = Field(description="val_loss, or loss without a validation split.")
    best_value: Optional[float]
    best_step: Optional[int]
    best_val_loss: Optional[float]
    truncated_records: int
    tokenizer: str
    vocabulary: int
    history: list[dict[str, Union[int, float]]] = Field(
        description="One entry per epoch: its metrics, validation's included."
    )
    privacy: Optional[dict[str, Any]] = Field(
        None, description="DP runs: epsilon, delta, accountant, sampling and assumptions."
    )
    warnings: list[str] = Field(default_factory=list)
    distribution: Optional[dict[str, Any]] = None
    weights_sha256: str = ""

    @property
    def epsilon(self) -> Optional[float]:
        return None if self.privacy is None else self.privacy["epsilon"]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ImportedReport(BaseModel):
    """The report of a run `keraspec import --run-dir` wrote: weights, no training."""

    model_config = ConfigDict(strict=True, extra="ignore")

    name: str
    imported: dict[str, str] = Field(description="The file (from), its format and sha256.")
    steps: int = 0
    epochs: int = 0
    privacy: None = None
    notes: list[str] = Field(default_factory=list)


def _kind(value: Any) -> str:
    imported = (
        value.get("imported") if isinstance(value, dict) else getattr(value, "imported", None)
    )
    return "imported" if imported is not None else "trained"


# report.json: a trained run's report, or an imported run's.
RunReport = Annotated[
    Union[Annotated[TrainReport, Tag("trained")], Annotated[ImportedReport, Tag("imported")]],
    Discriminator(_kind),
]
REPORT_ADAPTER: TypeAdapter[Any] = TypeAdapter(RunReport)


REPORT_SCHEMA_FILE = "report.schema.json"


def report_schema_text() -> str:
    """The JSON Schema of RUN_DIR/report.json (published as schema/report.schema.json)."""
    import json

    from compiler.lang.schema import DIALECT, DocumentedSchema

    schema = REPORT_ADAPTER.json_schema(mode="serialization", schema_generator=DocumentedSchema)
    document = {
        "$schema": DIALECT,
        "title": "keraspec run report",
        "description": "RUN_DIR/report.json: a trained run's report, or an imported run's.",
        **schema,
    }
    return json.dumps(document, indent=2) + "\n"

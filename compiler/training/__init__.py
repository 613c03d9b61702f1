"""Training: a checked spec and a corpus of records to a run directory, standard or DP.

- `run`: `train`, from the corpus and the spec to a started (or resumed) run;
- `loop`: the training loop (checkpoints, batches, epsilon, early stopping);
- `report`: `Progress` while it trains and the `TrainReport` at the end;
- `rundir`: the run directory: its files, checkpoints, locks and digests;
- `distribution`: tf.distribute placement and what the workers agree on;
- `weights`: trained weights into models of another shape (sampling, export).
"""

from compiler.training.report import Progress, TrainReport
from compiler.training.run import train

__all__ = ["Progress", "TrainReport", "train"]

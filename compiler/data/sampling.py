"""Which records each DP step trains on, drawn from a secret key (NumPy only).

Privacy amplification by subsampling holds only if an adversary cannot tell which steps saw
a record, so DP runs never derive their batches from the run's seed (it is in the spec and
in run.json). They draw them from a 128-bit key taken from the operating system's entropy
and kept only in the run's checkpoints, so that a resumed run continues the same streams:

- `poisson_indices`: Poisson sampling, each record included independently with probability
  q. It draws the batch size from Binomial(records, q), then that many distinct records
  uniformly: the same distribution as one Bernoulli(q) coin per record, at O(batch) cost.
- `shuffled_order`: a permutation per epoch, for tensorflow-privacy's optimizers, which
  need full batches.

Each step (or epoch) has its own stream, derived from (key, purpose, step), so any step's
batch can be drawn alone: on resume, on every worker of a distributed run, in tests.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator

import numpy as np

POISSON, SHUFFLE = 1, 2  # stream purposes


def secret_key() -> np.ndarray:
    """A fresh 128-bit key from the operating system's entropy, as two int64 words."""
    return np.frombuffer(os.urandom(16), dtype=np.int64).copy()


def _rng(key: np.ndarray, purpose: int, index: int) -> np.random.Generator:
    words = [int(w) & 0xFFFFFFFFFFFFFFFF for w in np.asarray(key, dtype=np.int64)]
    entropy = words[0] << 64 | words[1]
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(purpose, index)))


def poisson_indices(key: np.ndarray, step: int, records: int, q: float) -> np.ndarray:
    """The records of step `step` (0-based), sorted: each one with probability q."""
    rng = _rng(key, POISSON, step)
    count = int(rng.binomial(records, q))
    return np.sort(rng.choice(records, size=count, replace=False))


def shuffled_order(key: np.ndarray, records: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` (0-based) visits the records."""
    return _rng(key, SHUFFLE, epoch).permutation(records)


@dataclasses.dataclass
class BatchSizes:
    """What the sampler drew so far: steps, total, smallest and largest batch."""

    steps: int = 0
    total: int = 0
    smallest: int = -1
    largest: int = -1

    def add(self, size: int) -> None:
        self.steps += 1
        self.total += size
        self.smallest = size if self.smallest < 0 else min(self.smallest, size)
        self.largest = max(self.largest, size)

    @property
    def mean(self) -> float:
        return self.total / self.steps if self.steps else 0.0


def padded_shares(indices: np.ndarray, replicas: int) -> Iterator[tuple[np.ndarray, int]]:
    """A sampled batch split into `replicas` equal shares, padded with masked slots.

    Yields, per replica, its record indices (-1 marks a masked slot) and its real count.
    Every share holds at least one slot, so an empty sample still makes a step: one that
    adds only noise, as Poisson sampling prescribes.
    """
    share = max(1, -(-len(indices) // replicas))
    padded = np.full(share * replicas, -1, dtype=np.int64)
    padded[: len(indices)] = indices
    for r in range(replicas):
        part = padded[r * share : (r + 1) * share]
        yield part, int((part >= 0).sum())

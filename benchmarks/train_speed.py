"""Training throughput: `keraspec train` against a hand-written tf-keras loop, and DP vs non-DP.

1. Tokens per second of `compiler.train` (what `keraspec train` runs) against the
   reference's way of training, written by hand: the same model built directly with tf-keras
   (tests/reference.py), `model.fit` on a `tf.data` pipeline of shuffled windows of the same
   corpus. Several rounds, alternating which side goes first.
2. Tokens per second of per-example DP training (num_microbatches = batch size, one record
   per example) with keraspec's fast implementation (Poisson-sampled batches, its default,
   and shuffled full batches) and tensorflow-privacy's standard and vectorized optimizers
   (shuffled), against non-private training of the same model, all through
   `compiler.train`. Under Poisson sampling a step's batch has a random size; tokens count
   the expected batch.

Both sides are timed the same way: wall time from the end of the first step (which includes
tracing) to the end of the last, so the figures are steady-state loop throughput, data
pipeline and loop overhead included. Tokens = batch x sequence length per step.

Usage: python benchmarks/train_speed.py [--quick] [--steps N] [--dp-steps N] [--rounds N]
       [--implementations fast,fast-shuffle,standard,vectorized]
Default sizes are the reference's (batch 64, sequence 100, 256 units, vocab 2000);
--quick uses vocab 500, 64 units, sequence 32 for a run of a minute or two.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import compiler  # noqa: E402
from compiler.tf import tensorflow, tf_keras  # noqa: E402

tf, keras = tensorflow(), tf_keras()
import numpy as np  # noqa: E402

from reference import build_reference  # noqa: E402  (tests/reference.py)

CORPUS = os.path.join(ROOT, "examples", "transactions.csv")
SPEC = os.path.join(ROOT, "specs", "lstm-text.yaml")
DP_SPEC = os.path.join(ROOT, "specs", "lstm-text-dp.yaml")


def _overrides(sizes: dict) -> list[str]:
    return [f"model.params.{k}={v}" for k, v in sizes.items()] + [
        "training.validation_split=0",
        "training.epochs=1000",
        "training.seed=1",
    ]


def keraspec_tokens_per_second(spec, steps: int) -> float:
    """Steady-state tokens/s of compiler.train, timed from the end of step 1 to step N."""
    stamps: dict[int, float] = {}

    def callback(progress):
        if progress.event == "step":
            stamps[progress.step] = time.perf_counter()

    run_dir = tempfile.mkdtemp(prefix="keraspec-bench-")
    try:
        compiler.train(spec, CORPUS, run_dir, max_steps=steps, callback=callback)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    tokens = (steps - 1) * spec.training.batch_size * spec.training.sequence_length
    return tokens / (stamps[steps] - stamps[1])


class _Stamps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def hand_written_tokens_per_second(sizes: dict, steps: int) -> float:
    """The reference's loop: char ids, windows via tf.data, shuffle, batch, model.fit."""
    text = open(CORPUS, encoding="utf-8").read()
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) + 2 for c in text], dtype=np.int32)
    seq, batch = sizes["sequence_length"], sizes["batch_size"]
    dataset = (
        tf.data.Dataset.from_tensor_slices(ids)
        .batch(seq + 1, drop_remainder=True)
        .map(lambda chunk: (chunk[:-1], chunk[1:]))
        .shuffle(10000, seed=1)
        .batch(batch, drop_remainder=True)
        .repeat()
    )
    keras.utils.set_random_seed(1)
    model = build_reference(**{k: v for k, v in sizes.items() if k != "sequence_length"})
    stamps = _Stamps()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[stamps])
    return (steps - 1) * batch * seq / (stamps.times[-1] - stamps.times[0])


def _row(name: str, a: list[float], b: list[float], la: str, lb: str) -> str:
    ma, mb = statistics.median(a), statistics.median(b)
    return f"| {name} | {la} {ma:,.0f} | {lb} {mb:,.0f} | {ma / mb:.3f} | {max(a) / max(b):.3f} |"


def _shape(sizes: dict) -> str:
    return (
        f"vocab {sizes['vocab_size']}, units {sizes['rnn_units']}, batch "
        f"{sizes['batch_size']}, seq {sizes['sequence_length']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, shorter run")
    parser.add_argument("--steps", type=int, default=None, help="steps per non-DP run")
    parser.add_argument("--dp-steps", type=int, default=None, help="steps per DP run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument(
        "--implementations",
        default="fast,fast-shuffle,standard,vectorized",
        help="DP rows to measure, comma-separated",
    )
    args = parser.parse_args()
    sizes = dict(
        vocab_size=2000, embedding_dim=256, rnn_units=256, batch_size=64, sequence_length=100
    )
    if args.quick:
        sizes.update(vocab_size=500, embedding_dim=64, rnn_units=64, sequence_length=32)
    steps = args.steps or (20 if args.quick else 12)
    dp_steps = args.dp_steps or (6 if args.quick else 3)
    print(f"tensorflow {tf.__version__}, cpus {os.cpu_count()}, {_shape(sizes)}")
    print("| measurement (tokens/s) | A (median) | B (median) | A / B (medians) | A / B (best) |")
    print("| --- | ---: | ---: | ---: | ---: |")

    spec = compiler.load_spec(SPEC, _overrides(sizes))
    ours, theirs = [], []
    for i in range(args.rounds):
        first, second = (ours, theirs) if i % 2 == 0 else (theirs, ours)
        for side in (first, second):
            if side is ours:
                ours.append(keraspec_tokens_per_second(spec, steps))
            else:
                theirs.append(hand_written_tokens_per_second(sizes, steps))
    print(
        _row(
            f"keraspec train vs model.fit on tf.data ({steps} steps)",
            ours,
            theirs,
            "keraspec",
            "hand-written",
        ),
        flush=True,
    )

    plain = [keraspec_tokens_per_second(spec, max(dp_steps, 3)) for _ in range(args.rounds)]
    for row in args.implementations.split(","):
        implementation, _, shuffled = row.partition("-")
        fast = implementation == "fast"
        dp_spec = compiler.load_spec(
            DP_SPEC,
            _overrides(sizes)
            + [
                f"model.params.num_microbatches={sizes['batch_size']}",
                f"model.params.implementation={implementation}",
                "model.params.noise_multiplier=1.0",
            ]
            + (["training.privacy.sampling=shuffle"] if shuffled else []),
        )
        sampling = dp_spec.training.privacy.sampling
        rounds = args.rounds if fast else max(1, args.rounds // 2)
        dp_run_steps = max(dp_steps, steps // 2) if fast else dp_steps
        dp = [keraspec_tokens_per_second(dp_spec, dp_run_steps) for _ in range(rounds)]
        print(
            _row(
                f"per-example DP ({implementation}, {sampling}) vs non-DP ({dp_run_steps} "
                "steps)",
                dp,
                plain,
                "DP",
                "non-DP",
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

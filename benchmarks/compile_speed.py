"""keraspec's compiled models against hand-written tf-keras code, side by side in one run.

1. Compile time of the canonical spec (load + validate + build + compile) vs the hand-written
   reference builder, at the reference sizes (11.3M parameters).
2. Training step time of the compiled model vs the hand-written one, same shape, same data.
3. Per-example DP (num_microbatches = batch size) vs non-DP step time, for tensorflow-privacy's
   standard and vectorized optimizers.

Each pair is measured interleaved, alternating which goes first, after warm-up; the ratio
of medians and of minima is reported (this 2-core machine is noisy: compare both).
Usage: python benchmarks/compile_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import compiler  # noqa: E402
from compiler.build import compile_spec  # noqa: E402
from compiler.tf import tensorflow, tf_keras  # noqa: E402

tf, keras = tensorflow(), tf_keras()
import numpy as np  # noqa: E402

from reference import build_reference  # noqa: E402  (tests/reference.py)

SPEC = os.path.join(ROOT, "specs", "lstm-text.yaml")


def _timed(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(a, b, runs: int) -> tuple[list[float], list[float]]:
    """Alternate the order (AB, BA, AB, ...) so neither side always runs second."""
    ta, tb = [], []
    for i in range(runs):
        if i % 2:
            tb.append(_timed(b))
            ta.append(_timed(a))
        else:
            ta.append(_timed(a))
            tb.append(_timed(b))
    return ta, tb


def row(name: str, ta: list[float], tb: list[float], a: str, b: str) -> str:
    ma, mb = statistics.median(ta), statistics.median(tb)
    return (
        f"| {name} | {a} {ma * 1000:.1f} ms | {b} {mb * 1000:.1f} ms | {ma / mb:.3f} "
        f"| {min(ta) / min(tb):.3f} |"
    )


def compile_time(runs: int) -> str:
    def ours():
        keras.backend.clear_session()
        compile_spec(compiler.load_spec(SPEC))

    def reference():
        keras.backend.clear_session()
        build_reference()

    ours(), reference()  # warm-up
    ta, tb = interleaved(ours, reference, runs)
    return row("compile, lstm-text at reference sizes", ta, tb, "keraspec", "hand-written")


def _data(batch: int, seq: int, vocab: int):
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, size=(batch, seq), dtype=np.int32)
    return x, np.roll(x, -1, axis=1)


def _stepper(model, x, y, steps: int):
    def run():
        for _ in range(steps):
            model.train_on_batch(x, y)

    return run


def step_time(runs: int, steps: int, sizes: dict) -> str:
    overrides = [f"model.params.{k}={v}" for k, v in sizes.items()]
    ours = compile_spec(compiler.load_spec(SPEC, overrides)).model
    ref = build_reference(**{k: v for k, v in sizes.items() if k != "sequence_length"})
    ref.set_weights(ours.get_weights())
    x, y = _data(sizes["batch_size"], sizes["sequence_length"], sizes["vocab_size"])
    a, b = _stepper(ours, x, y, steps), _stepper(ref, x, y, steps)
    a(), b()  # trace and warm up
    ta, tb = interleaved(a, b, runs)
    per = [t / steps for t in ta], [t / steps for t in tb]
    return row("train step, lstm-text " + _shape(sizes), *per, "keraspec", "hand-written")


def _shape(sizes: dict) -> str:
    return (
        f"(vocab {sizes['vocab_size']}, units {sizes['rnn_units']}, "
        f"batch {sizes['batch_size']}, seq {sizes['sequence_length']})"
    )


def dp_step_time(runs: int, steps: int, sizes: dict, implementation: str) -> str:
    base = [f"model.params.{k}={v}" for k, v in sizes.items()]
    dp = base + [
        f"model.params.num_microbatches={sizes['batch_size']}",
        f"model.params.implementation={implementation}",
        "model.params.noise_multiplier=1.0",
    ]
    dp_model = compile_spec(compiler.load_spec(SPEC.replace("lstm-text", "lstm-text-dp"), dp))
    plain = compile_spec(compiler.load_spec(SPEC, base)).model
    assert dp_model.per_example_loss
    x, y = _data(sizes["batch_size"], sizes["sequence_length"], sizes["vocab_size"])
    a, b = _stepper(dp_model.model, x, y, steps), _stepper(plain, x, y, steps)
    a(), b()
    ta, tb = interleaved(a, b, runs)
    per = [t / steps for t in ta], [t / steps for t in tb]
    return row(
        f"train step, per-example DP ({implementation}) " + _shape(sizes),
        *per,
        "DP",
        "non-DP",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs, smaller shapes")
    args = parser.parse_args()
    runs = 3 if args.quick else 9
    train = dict(
        vocab_size=2000, embedding_dim=256, rnn_units=256, batch_size=64, sequence_length=100
    )
    dp = dict(vocab_size=500, embedding_dim=64, rnn_units=64, batch_size=16, sequence_length=32)
    if args.quick:
        train.update(vocab_size=500, rnn_units=64, sequence_length=32)
    print(f"tensorflow {tf.__version__}, cpus {os.cpu_count()}, {runs} interleaved runs each")
    print("| measurement | A (median) | B (median) | A / B (medians) | A / B (minima) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(compile_time(runs), flush=True)
    print(step_time(runs, 5, train), flush=True)
    for implementation in ("standard", "vectorized"):
        print(dp_step_time(runs, 3, dp, implementation), flush=True)


if __name__ == "__main__":
    main()

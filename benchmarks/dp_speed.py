"""Per-example DP-SGD step time and peak memory: keraspec's fast implementation against
tensorflow-privacy's two optimizers and non-private training, side by side in one run.

Every configuration is the lstm-text template compiled by `compile_spec` at the same sizes
(reference: batch 64, sequence 100, embedding 256, 256 units) and trained with
`train_on_batch` on the same batch of record examples (per-token weights masking the
padding, as `keraspec train` feeds DP runs). Per-example DP is one microbatch per example.
Each configuration runs in a fresh process, so its peak resident memory is its own; the
first step (tracing) is not timed. Non-private and fast runs alternate, twice each.

Usage: python benchmarks/dp_speed.py [--vocabs 2000,20000] [--steps N] [--tfp-steps N]
       [--skip standard,vectorized] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLEMENTATIONS = ("non-DP", "fast", "standard", "vectorized")


def _spec(implementation: str, sizes: dict):
    import compiler

    params = [f"model.params.{k}={v}" for k, v in sizes.items()]
    if implementation == "non-DP":
        return compiler.load_spec(os.path.join(ROOT, "specs", "lstm-text.yaml"), params)
    return compiler.load_spec(
        os.path.join(ROOT, "specs", "lstm-text-dp.yaml"),
        params
        + [
            f"model.params.implementation={implementation}",
            f"model.params.num_microbatches={sizes['batch_size']}",
            "model.params.noise_multiplier=1.0",
            "model.params.l2_norm_clip=1.0",
        ],
    )


def timed_steps(spec, sizes: dict, steps: int) -> list[float]:
    """`spec` compiled, then `steps` `train_on_batch` steps timed after one untimed step,
    on one batch of padded record examples (per-token weights masking the padding)."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from compiler.build import compile_spec

    model = compile_spec(spec, weighted_metrics=True).model
    rng = np.random.default_rng(0)
    batch, length, vocab = sizes["batch_size"], sizes["sequence_length"], sizes["vocab_size"]
    x = rng.integers(2, vocab, (batch, length)).astype(np.int32)
    y = rng.integers(2, vocab, (batch, length)).astype(np.int32)
    lengths = rng.integers(length // 2, length + 1, batch)
    w = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
    model.train_on_batch(x, y, sample_weight=w)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y, sample_weight=w)
        times.append(time.perf_counter() - start)
    return times


def worker(implementation: str, sizes: dict, steps: int) -> None:
    """Time `steps` steps after one untimed step; print JSON with times and peak memory."""
    sys.path.insert(0, ROOT)
    times = timed_steps(_spec(implementation, sizes), sizes, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"times": times, "peak_bytes": peak}))


def _run(implementation: str, sizes: dict, steps: int) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        implementation,
        "--sizes",
        json.dumps(sizes),
        "--steps",
        str(steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if "OOM" in line), lines[-1] if lines else "")
        return {"failed": "out of memory" if "OOM" in reason else reason[:80]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabs", default="2000,20000")
    parser.add_argument("--steps", type=int, default=8, help="timed steps, non-DP and fast")
    parser.add_argument("--tfp-steps", type=int, default=1, help="timed steps, tensorflow-privacy")
    parser.add_argument("--skip", default="", help="implementations to leave out")
    parser.add_argument("--quick", action="store_true", help="vocab 500, 64 units, sequence 32")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.sizes), args.steps)
        return
    skip = {s for s in args.skip.split(",") if s}
    base = dict(embedding_dim=256, rnn_units=256, batch_size=64, sequence_length=100)
    vocabs = [int(v) for v in args.vocabs.split(",")]
    if args.quick:
        base.update(embedding_dim=64, rnn_units=64, batch_size=16, sequence_length=32)
        vocabs = [500]
    print(
        f"cpus {os.cpu_count()}; batch {base['batch_size']}, sequence "
        f"{base['sequence_length']}, embedding {base['embedding_dim']}, units "
        f"{base['rnn_units']}; per-example DP = one microbatch per example"
    )
    print(
        "| vocab | implementation | step (s, median) | x non-DP | step (s, best) | x non-DP "
        "| peak memory (GiB) |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for vocab in vocabs:
        sizes = dict(base, vocab_size=vocab)
        results: dict[str, list[dict]] = {}
        order = ["non-DP", "fast", "non-DP", "fast", "standard", "vectorized"]
        for implementation in order:
            if implementation in skip:
                continue
            steps = args.steps if implementation in ("non-DP", "fast") else args.tfp_steps
            results.setdefault(implementation, []).append(_run(implementation, sizes, steps))
        plain = statistics.median(t for r in results["non-DP"] for t in r["times"])
        plain_best = min(t for r in results["non-DP"] for t in r["times"])
        for implementation in IMPLEMENTATIONS:
            if implementation not in results:
                continue
            runs = results[implementation]
            failed = [r["failed"] for r in runs if "failed" in r]
            if failed:
                print(f"| {vocab} | {implementation} | {failed[0]} | | | | |", flush=True)
                continue
            step = statistics.median(t for r in runs for t in r["times"])
            best = min(t for r in runs for t in r["times"])
            peak = max(r["peak_bytes"] for r in runs) / (1 << 30)
            print(
                f"| {vocab} | {implementation} | {step:.2f} | {step / plain:.2f} | "
                f"{best:.2f} | {best / plain_best:.2f} | {peak:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

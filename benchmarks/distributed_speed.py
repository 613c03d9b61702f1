"""Training throughput with 1 and 2 multi_worker workers on this machine.

`keraspec train` runs the lstm-text template at the reference sizes (batch 64, sequence
100, 256 units, vocab 2000) under `training.distribution: multi_worker`, as one worker and
as two worker processes on 127.0.0.1 (the global batch of 64 split 32 + 32). Each worker is
pinned to its own CPU core, so the two-worker run has twice the hardware of the one-worker
run: scaling efficiency = two-worker throughput / (2 x one-worker throughput). A one-worker
run on every core is shown for reference, and so is one worker training on a share (32) of
the batch alone: the compute each of the two workers does, without the exchange.
Throughput is the report's tokens per second (time spent in training steps, after the
first step, which includes tracing).

Usage: python benchmarks/distributed_speed.py [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "examples", "transactions.csv")


def _spec(directory: str, workers: int, quick: bool, batch: int) -> str:
    sizes = (
        f"{{vocab_size: 500, embedding_dim: 64, rnn_units: 64, batch_size: {batch}, "
        "sequence_length: 32}"
        if quick
        else f"{{vocab_size: 2000, embedding_dim: 256, rnn_units: 256, batch_size: {batch}, "
        "sequence_length: 100}"
    )
    path = os.path.join(directory, f"spec-{workers}-{batch}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "apiVersion: keraspec/v1\nname: bench\nmodel:\n  template: lstm-text\n"
            f"  params: {sizes}\ntraining:\n  epochs: 1000\n  seed: 1\n"
            f"  distribution: {{strategy: multi_worker, workers: {workers}}}\n"
        )
    return path


def _ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run(
    workers: int, steps: int, cores: list[list[int]] | None, quick: bool, batch: int = 64
) -> dict:
    """Train `steps` steps with `workers` processes; the chief's report."""
    with tempfile.TemporaryDirectory(prefix="keraspec-dist-") as tmp:
        spec = _spec(tmp, workers, quick, batch)
        cluster = ",".join(f"127.0.0.1:{p}" for p in _ports(workers))
        procs = []
        for i in range(workers):
            pin = (lambda c=cores[i]: os.sched_setaffinity(0, c)) if cores else None
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "compiler.cli",
                        "train",
                        spec,
                        "--data",
                        CORPUS,
                        "-o",
                        os.path.join(tmp, "run"),
                        "--format",
                        "json",
                        "--max-steps",
                        str(steps),
                        "--cluster",
                        cluster,
                        "--task",
                        str(i),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    preexec_fn=pin,
                )
            )
        outs = [p.communicate() for p in procs]
        for p, (_, err) in zip(procs, outs):
            if p.returncode != 0:
                raise SystemExit(f"worker failed:\n{err[-3000:]}")
        return json.loads(outs[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="vocab 500, 64 units, sequence 32")
    args = parser.parse_args()
    steps = args.steps or (30 if args.quick else 15)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs at least 2 CPU cores")
    rows = [
        ("1 worker, 1 core", run(1, steps, [[cpus[0]]], args.quick)),
        ("2 workers, 1 core each", run(2, steps, [[cpus[0]], [cpus[1]]], args.quick)),
        (f"1 worker, {len(cpus)} cores", run(1, steps, None, args.quick)),
        (
            "1 worker, 1 core, batch 32 (one worker's share, no exchange)",
            run(1, steps, [[cpus[0]]], args.quick, batch=32),
        ),
    ]
    base = rows[0][1]["tokens_per_second"]
    print(
        f"lstm-text, global batch {rows[0][1]['batch_size']}, sequence "
        f"{rows[0][1]['sequence_length']}, {steps} steps; cpus {len(cpus)}"
    )
    print("| run | steps/s | tokens/s | vs 1 worker, 1 core |")
    print("| --- | ---: | ---: | ---: |")
    for name, report in rows:
        tps = report["tokens_per_second"]
        per_step = report["batch_size"] * report["sequence_length"]
        print(f"| {name} | {tps / per_step:.2f} | {tps:,.0f} | {tps / base:.2f}x |")
    two = rows[1][1]["tokens_per_second"]
    print(
        f"\nscaling efficiency of the second worker: {two / (2 * base):.0%} "
        f"(2 workers deliver {two / base:.2f}x one worker's throughput)"
    )


if __name__ == "__main__":
    main()

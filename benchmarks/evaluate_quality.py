"""Record quality of the bundled model: what `keraspec evaluate` says after the README's
training and after a longer run, what `generate --valid-only` costs, and how long an
evaluation takes.

The small character model (specs/char-small.yaml) is trained on the bundled corpus
(examples/transactions.csv, 4,000 card transactions) for the README's 6 epochs, then resumed
to a longer run. After each, 1,000 records are generated from the run (seed 0, temperature
1.0) and evaluated against the corpus: valid_share, quality_score (SDMetrics column shapes
and pair trends, 0-100) and memorized_share, beside the same scores of the run's held-out
real records. Then:

- 200 records generated constrained (the default), `--unconstrained`, and
  `--unconstrained --valid-only`: records per second, the valid share and how many were
  sampled;
- the time to evaluate 1,000 records given as a file (`--synthetic`: parsing, validators,
  SDMetrics, distances), and with generation included.

Usage: python benchmarks/evaluate_quality.py [--epochs 6 --longer 20] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402
from compiler.evaluate import evaluate  # noqa: E402
from compiler.generation import generate  # noqa: E402

SPEC = os.path.join(ROOT, "specs", "char-small.yaml")
DATA = os.path.join(ROOT, "examples", "transactions.csv")


def _scores(label: str, run_dir: str) -> None:
    start = time.perf_counter()
    result = evaluate(run_dir, DATA, count=1000, seed=0)
    took = time.perf_counter() - start
    s, b = result.synthetic_scores, result.baseline
    print(
        f"| {label} (step {result.step}) | {s.valid_share:.1%} | {s.quality_score:.1f} "
        f"({s.column_shapes:.3f} / {s.column_pair_trends:.3f}) | {s.memorized_share:.1%} | "
        f"{b.valid_share:.1%} | {b.quality_score:.1f} | {b.memorized_share:.1%} | "
        f"{took:.1f} s |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="the README's training")
    parser.add_argument("--longer", type=int, default=20, help="the longer run's epochs")
    parser.add_argument("--run-dir", default=None, help="keep the run here (default: temp)")
    args = parser.parse_args()
    run_dir = args.run_dir or os.path.join(tempfile.mkdtemp(prefix="keraspec-eval-"), "run")
    spec = compiler.load_spec(SPEC)
    print(
        "| run | valid | quality (shapes / pairs) | memorized | held-out valid | "
        "held-out quality | held-out memorized | evaluate 1,000 generated |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    compiler.train(spec, DATA, run_dir, epochs=args.epochs)
    _scores(f"{args.epochs} epochs", run_dir)
    report = compiler.train(spec, DATA, run_dir, epochs=args.longer)
    _scores(f"{report.epochs} epochs ({report.stopped_by})", run_dir)

    rows = []
    for label, options in (
        ("constrained (the default)", {}),
        ("--unconstrained", {"constrained": False}),
        ("--unconstrained --valid-only", {"constrained": False, "valid_only": True}),
    ):
        start = time.perf_counter()
        result = generate(run_dir, count=200, seed=1, **options)
        took = time.perf_counter() - start
        rows.append((label, result, took))
    print()
    print("| generation of 200 records from the run | records/s | valid | sampled |")
    print("| --- | ---: | ---: | ---: |")
    for label, result, took in rows:
        print(f"| {label} | {200 / took:.0f} | {result.valid_share:.1%} | {result.sampled} |")

    synthetic = os.path.join(os.path.dirname(run_dir), "synthetic.csv")
    records = generate(run_dir, count=1000, seed=2).records
    with open(synthetic, "w", encoding="utf-8") as f:
        f.write("\n".join(records) + "\n")
    start = time.perf_counter()
    evaluate(run_dir, DATA, synthetic=synthetic)
    print()
    print(
        f"evaluate 1,000 records from a file (--synthetic): " f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()

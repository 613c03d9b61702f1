"""transformer-small against char-small on the bundled corpus, at equal parameter count
(224k against 229k) and equal training wall time, in one run.

char-small trains first, for the README's 6 epochs (`--epochs`); its wall time is the
budget. transformer-small then trains a short probe run to measure its steps per second,
and a fresh run for the number of steps that fills the same wall time, resumed (resuming is
exact) until its recorded wall time, start-ups included, reaches the budget. Both have early
stopping off, the same corpus (examples/transactions.csv), seed, validation split and
windows of 64 characters. Reported for each: steps, wall time, training tokens per second,
the best validation loss (nats per character on the held-out records), and what
`keraspec evaluate` says of 1,000 records generated from the run (seed 0, temperature 1):
valid share and SDMetrics quality score.

Usage: python benchmarks/transformer_quality.py [--epochs 6] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402
from compiler.evaluate import evaluate  # noqa: E402
from compiler.training import train  # noqa: E402

DATA = os.path.join(ROOT, "examples", "transactions.csv")
NO_STOPPING = ["training.early_stopping=null"]


def _row(name: str, spec, report, run_dir: str) -> None:
    result = evaluate(run_dir, DATA, count=1000, seed=0)
    s = result.synthetic_scores
    print(
        f"| {name} | {spec.analysis.total_params:,} | {report.steps} | "
        f"{report.wall_time:.0f} | {report.tokens_per_second:,.0f} | "
        f"{report.best_val_loss:.3f} | {s.valid_share:.1%} | {s.quality_score:.1f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="char-small's training")
    parser.add_argument("--run-dir", default=None, help="keep the runs here (default: temp)")
    args = parser.parse_args()
    work = args.run_dir or tempfile.mkdtemp(prefix="keraspec-transformer-quality-")
    lstm = compiler.load_spec(os.path.join(ROOT, "specs", "char-small.yaml"), NO_STOPPING)
    transformer = compiler.load_spec(
        os.path.join(ROOT, "specs", "transformer-small.yaml"), NO_STOPPING
    )
    print(f"cpus {os.cpu_count()}; equal wall time: char-small's {args.epochs} epochs")
    print(
        "| model | params | steps | wall time (s) | tokens/s | best val loss | valid | " "quality |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lstm_report = train(lstm, DATA, os.path.join(work, "char-small"), epochs=args.epochs)
    _row("char-small", lstm, lstm_report, os.path.join(work, "char-small"))
    probe_dir = os.path.join(work, "probe")
    probe = train(transformer, DATA, probe_dir, max_steps=60)
    shutil.rmtree(probe_dir, ignore_errors=True)
    budget = lstm_report.wall_time
    run_dir = os.path.join(work, "transformer-small")
    report = probe
    # The probe's rate includes its start-up: resume (exactly) until the budget is spent.
    for _ in range(4):
        steps = max(report.steps + 1, round(report.steps * budget / report.wall_time))
        report = train(transformer, DATA, run_dir, epochs=10_000, max_steps=steps)
        if report.wall_time >= 0.97 * budget:
            break
    _row("transformer-small", transformer, report, os.path.join(work, "transformer-small"))


if __name__ == "__main__":
    main()

"""Honest DP in figures: epsilon under PLD vs RDP, and what an audit finds, side by side.

1. Epsilon of three settings under dp_accounting's PLD and RDP accountants (the spec's
   Poisson sampling), and the epsilon of the same run with shuffled batches (no
   amplification claimed): the bundled DP spec on the bundled corpus, and two other
   settings.
2. `keraspec audit` on the bundled corpus (examples/transactions.csv): a model without DP
   and the same model with DP at two noise levels, each trained the same number of epochs.
   The audit's lower bound must stay within the claimed epsilon; the non-private model's
   shows what the audit can detect.

3. `keraspec audit --white-box` of the bundled DP spec at claimed epsilon about 2, 4 and 8
   (noise solved for each target epsilon), 10,000 gradient canaries: the lower bound
   against the claim; and what the canaries cost, side by side: steps of the same spec
   with and without them.

Usage: python benchmarks/privacy_audit.py [--canaries M] [--epochs N] [--units U]
       [--skip-audit] [--white-box-only] [--white-box-units U] [--cost-only]
The audit rows use a smaller model than the reference (default 128 units, embedding 64;
white-box 32 units, embedding 16) so that they finish in minutes on 2 cores. The white-box
bound measures the DP step (sampling, clipping, noise), not the model: the spec's batch,
epochs, clip and corpus are the bundled ones.
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
from compiler.evaluate.audit import audit  # noqa: E402
from compiler.privacy.accounting import privacy_report  # noqa: E402

CORPUS = os.path.join(ROOT, "examples", "transactions.csv")
DP_SPEC = os.path.join(ROOT, "specs", "lstm-text-dp.yaml")
PLAIN_SPEC = os.path.join(ROOT, "specs", "lstm-text.yaml")


def accounting() -> None:
    print(
        "| setting | records | steps | epsilon PLD | epsilon RDP | PLD / RDP | shuffled (no "
        "amplification) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    settings = [
        ("bundled lstm-text-dp (noise 1.1, batch 64, 10 epochs)", [], 3600),
        (
            "noise 0.8, batch 256, 15 epochs",
            [
                "model.params.noise_multiplier=0.8",
                "model.params.batch_size=256",
                "training.epochs=15",
            ],
            60000,
        ),
        ("noise 1.1, batch 32, 60 steps", ["model.params.batch_size=32"], 3376),
    ]
    for label, overrides, records in settings:
        spec = compiler.load_spec(DP_SPEC, overrides)
        steps = 60 if "60 steps" in label else None
        report = privacy_report(spec, records, steps=steps, compare=True)
        shuffled = privacy_report(
            compiler.load_spec(
                DP_SPEC,
                overrides
                + ["training.privacy.sampling=shuffle", "model.params.implementation=standard"],
            ),
            records,
            steps=steps,
        )
        pld, rdp = report.epsilons["pld"], report.epsilons["rdp"]
        print(
            f"| {label} | {records:,} | {report.steps:,} | {pld:.3f} | {rdp:.3f} | "
            f"{pld / rdp:.2f} | {shuffled.epsilon:.1f} |",
            flush=True,
        )


def audits(canaries: int, epochs: int, units: int) -> None:
    sizes = [
        f"model.params.rnn_units={units}",
        "model.params.embedding_dim=64",
        "model.params.vocab_size=100",
        "model.params.sequence_length=64",
        "model.params.dropout_rate=0",
        f"training.epochs={epochs}",
    ]
    rows = [
        ("no DP", PLAIN_SPEC, []),
        ("DP, noise 0.5", DP_SPEC, ["model.params.noise_multiplier=0.5"]),
        ("DP, noise 1.1 (template default)", DP_SPEC, []),
    ]
    print()
    print(f"audit: {canaries} canaries, {epochs} epochs, {units} units, bundled corpus")
    print(
        "| model | claimed epsilon | lower bound (95%) | correct / guesses | exposure mean "
        "(bits, of max) | minutes |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, path, overrides in rows:
        spec = compiler.load_spec(path, sizes + overrides)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="keraspec-audit-") as scratch:
            result = audit(spec, CORPUS, scratch, canaries=canaries)
        minutes = (time.perf_counter() - start) / 60
        claimed = "none" if result.claimed_epsilon is None else f"{result.claimed_epsilon:.2f}"
        print(
            f"| {label} | {claimed} | {result.epsilon_lower_bound:.3f} | "
            f"{result.correct} / {result.guesses} | {result.exposure['mean']:.2f} of "
            f"{result.exposure['possible']:.2f} | {minutes:.1f} |",
            flush=True,
        )


def white_box_audits(canaries: int, units: int) -> None:
    sizes = [f"model.params.rnn_units={units}", f"model.params.embedding_dim={units // 2}"]
    print()
    print(f"white-box audit: {canaries} gradient canaries, {units} units, bundled corpus")
    print(
        "| target epsilon | noise | claimed epsilon | lower bound (95%) | bound / claim | "
        "analysis | minutes |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for target in (2.0, 4.0, 8.0):
        base = compiler.load_spec(DP_SPEC, sizes)
        noise = privacy_report(base, 3600, target_epsilon=target).noise_multiplier
        spec = compiler.load_spec(DP_SPEC, sizes + [f"model.params.noise_multiplier={noise}"])
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="keraspec-audit-") as scratch:
            r = audit(spec, CORPUS, scratch, canaries=canaries, white_box=True)
        minutes = (time.perf_counter() - start) / 60
        print(
            f"| {target:g} | {noise:.3f} | {r.claimed_epsilon:.2f} | "
            f"{r.epsilon_lower_bound:.2f} | {r.epsilon_lower_bound / r.claimed_epsilon:.2f} | "
            f"{r.analysis} ({r.score}) | {minutes:.1f} |",
            flush=True,
        )


def canary_cost(canaries: int, units: int, steps: int = 100) -> None:
    """The same steps with and without gradient canaries, alternating, twice each."""
    from compiler.privacy.canaries import GradientCanaries
    from compiler.training import train

    sizes = [f"model.params.rnn_units={units}", f"model.params.embedding_dim={units // 2}"]
    spec = compiler.load_spec(DP_SPEC, sizes)
    times: dict[str, list[float]] = {"train": [], "train + canaries": []}
    for _ in range(2):
        for label in times:
            extra = GradientCanaries.draw(canaries) if "canaries" in label else None
            with tempfile.TemporaryDirectory(prefix="keraspec-cost-") as scratch:
                report = train(spec, CORPUS, scratch, max_steps=steps, canaries=extra)
            times[label].append(report.wall_time)
    print()
    print(
        f"| run ({canaries} canaries, {units} units) | seconds, {steps} steps (best of 2, "
        "tracing included) | ratio |"
    )
    print("| --- | ---: | ---: |")
    base = min(times["train"])
    for label, seconds in times.items():
        print(f"| {label} | {min(seconds):.1f} | {min(seconds) / base:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--skip-audit", action="store_true")
    parser.add_argument("--white-box-only", action="store_true")
    parser.add_argument("--white-box-canaries", type=int, default=10_000)
    parser.add_argument("--white-box-units", type=int, default=32)
    parser.add_argument("--cost-only", action="store_true", help="Only the canaries' cost.")
    args = parser.parse_args()
    if args.cost_only:
        canary_cost(args.white_box_canaries, args.white_box_units)
        return
    if not args.white_box_only:
        accounting()
        if not args.skip_audit:
            audits(args.canaries, args.epochs, args.units)
    white_box_audits(args.white_box_canaries, args.white_box_units)
    canary_cost(args.white_box_canaries, args.white_box_units)


if __name__ == "__main__":
    main()

"""Record quality on tables keraspec was not tuned on: valid share and quality score beside
held-out real records, constrained and unconstrained, and what the mask costs.

Tables (all inside packages on PyPI, nothing downloaded at run time):

- transactions: the bundled corpus (examples/transactions.csv, 4,000 records, 6 fields);
- airports: vega_datasets' airports.csv (3,376 airports, 7 fields, a header, quoted names);
- seattle-weather: vega_datasets' seattle-weather.csv (1,461 days: a date, 4 decimals, a
  category);
- breast-cancer: scikit-learn's breast cancer table (569 records of 31 numeric fields,
  about 250 characters each), written as a CSV with a header.

For each table and tokenizer (char; SentencePiece with a 256-piece vocabulary), a spec like
specs/char-small.yaml (lstm-text template: 32-dim embedding, 128 units, batch 32, sequence
64, learning rate 0.005; 30 epochs, early stopping on val_loss with patience 3, 10% held
out) is trained with at most `--max-minutes` of training. Then `keraspec evaluate` runs on
1,000 generated records with default generation: constrained (the default) and
`--unconstrained`. The held-out records (the run's validation split) are the baseline.

Last, the export's in-graph `generate` signature is timed at batch 1 and 64, constrained
(the export as written) against the same loop with no automaton, built side by side from
the same weights: time per record and the ratio.

Usage: python benchmarks/record_quality.py [--tables airports,...] [--tokenizers char,...]
       [--examples aligned,windows] [--max-minutes 4] [--count 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402
from compiler.evaluate import evaluate  # noqa: E402
from compiler.training import train  # noqa: E402

TABLES = ("transactions", "airports", "seattle-weather", "breast-cancer")


def table_file(name: str, directory: str) -> str:
    """The table as a CSV file in `directory` (copied from the package that ships it)."""
    path = os.path.join(directory, f"{name}.csv")
    if name == "transactions":
        shutil.copy(os.path.join(ROOT, "examples", "transactions.csv"), path)
    elif name in ("airports", "seattle-weather"):
        import vega_datasets

        source = os.path.join(os.path.dirname(vega_datasets.__file__), "_data", f"{name}.csv")
        shutil.copy(source, path)
    elif name == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*(n.replace(" ", "_") for n in data.feature_names), "target"])
        for row, target in zip(data.data, data.target):
            writer.writerow([*(f"{v:g}" for v in row), int(target)])
        with open(path, "w", encoding="utf-8") as f:
            f.write(out.getvalue())
    else:
        raise SystemExit(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
    return path


def spec_text(name: str, data: str, tokenizer: str, examples: str, split: float = 0.1) -> str:
    with open(data, encoding="utf-8") as f:
        chars = len(set(f.read()) - {"\n"})
    if tokenizer == "char":
        vocab, tokenizer_block = chars + 2, ""
    else:
        vocab, tokenizer_block = 256, "  tokenizer: {type: sentencepiece, vocab_size: 256}\n"
    declared = (
        "data:\n  fields:\n"
        + "".join(
            f"    - {{name: {n}}}\n"
            for n in ("date", "category", "amount", "city", "method", "approved")
        )
        if name == "transactions"
        else ""
    )
    return (
        "apiVersion: keraspec/v1\n"
        f"name: {name.replace('-', '_')}\n"
        "model:\n"
        "  template: lstm-text\n"
        "  params:\n"
        f"    vocab_size: {vocab}\n"
        "    embedding_dim: 32\n"
        "    rnn_units: 128\n"
        "    batch_size: 32\n"
        "    sequence_length: 64\n"
        "    learning_rate: 0.005\n"
        "training:\n"
        "  epochs: 30\n"
        f"  validation_split: {split}\n"
        "  early_stopping: {monitor: val_loss, patience: 3}\n"
        "  seed: 7\n"
        f"  examples: {examples}\n" + tokenizer_block + declared
    )


def _fitting_spec(path: str, table: str, data: str, tokenizer: str, examples: str) -> Any:
    """The spec with a 10% validation split, or the smallest larger one (in tenths) that
    holds out a batch, as a user does after keraspec's error says so."""
    from compiler.data.corpus import read_corpus
    from compiler.data.dataset import example_length, prepare, unit_of
    from compiler.data.tokenizer import fit_tokenizer
    from compiler.lang.checked import spec_of

    for split in (0.1, 0.2, 0.3, 0.4):
        with open(path, "w", encoding="utf-8") as f:
            f.write(spec_text(table, data, tokenizer, examples, split))
        spec = compiler.load_spec(path)
        corpus = read_corpus(data)
        tok = fit_tokenizer(spec, corpus.records)
        encoded = [tok.encode(r) for r in corpus.records]
        unit = unit_of(spec)
        try:
            prepare(
                encoded,
                unit=unit,
                batch_size=spec.training.batch_size,
                sequence_length=example_length(spec_of(spec), unit, encoded),
                validation_split=split,
                seed=7,
                data_name=data,
            )
            return spec
        except compiler.DataError:
            continue
    return spec


def _steps_within(spec, data: str, minutes: float) -> int:
    """Training steps that fit in `minutes`, from a short timed run of the same spec."""
    probe = tempfile.mkdtemp(prefix="keraspec-probe-")
    try:
        took = []
        for steps in (20, 120):  # the difference leaves out setup and tracing
            start = time.perf_counter()
            train(spec, data, os.path.join(probe, str(steps)), max_steps=steps)
            took.append(time.perf_counter() - start)
        per_step = max(took[1] - took[0], 1e-3) / 100
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return max(1, int(minutes * 60 / per_step))


def generation_cost(run_dir: str, rows: int, rounds: int = 24) -> tuple[Any, Any]:
    """(Seconds per record, seconds per token) of the in-graph `generate` loop at `rows` per
    request, with and without the automaton, built side by side from the same weights and
    spec and called in alternation, `rounds` requests each (every request with its own
    seeds). Per token isolates the mask's cost; per record also counts that the raw
    model's records may be longer (or never end)."""
    from compiler.build import build_state_model
    from compiler.data.automaton import compile_automaton
    from compiler.export.module import serving_module_class
    from compiler.generation import load_run_model
    from compiler.tf import tensorflow
    from compiler.training.trained import open_trained
    from compiler.training.weights import copy_weights, reshaped_spec

    tf = tensorflow()
    trained = open_trained(run_dir)
    _, keras_model, _ = load_run_model(trained, None, stateful=False)
    serving = reshaped_spec(trained.spec, batch_size=None, stateful=False)
    model, states = build_state_model(serving)
    copy_weights(keras_model, model)
    automaton = compile_automaton(
        trained.validators, trained.tokenizer, trained.spec.input.vocab_size
    )
    budget = 2 * (trained.identity.longest_record_tokens or 64)
    functions = []
    for constrained in (True, False):
        module = serving_module_class()(
            model,
            states,
            trained.spec,
            trained.tokenizer,
            ["serving_default", "generate"],
            [],
            automaton if constrained else None,
            list(trained.start),
        )
        functions.append(module.exported["generate"])
    args = dict(
        prompt=tf.zeros([rows, 1], tf.int32),
        max_new_tokens=tf.fill([rows], budget),
        temperature=tf.ones([rows]),
    )
    for generate in functions:  # trace, and a first call of each
        generate(seed=tf.range(rows, dtype=tf.int64), **args)
    took, tokens = [0.0, 0.0], [0, 0]
    for r in range(rounds):
        seed = tf.range(rows, dtype=tf.int64) + 1000 * (r + 1)
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            out = functions[i](seed=seed, **args)
            took[i] += time.perf_counter() - start
            tokens[i] += int(out["lengths"].numpy().sum())
    records = rounds * rows
    return tuple((took[i] / records, took[i] / max(tokens[i], 1)) for i in (0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--tokenizers", default="char,sentencepiece")
    parser.add_argument("--examples", default="aligned")
    parser.add_argument("--max-minutes", type=float, default=4.0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timing", action="store_true", help="also time generate per record")
    parser.add_argument(
        "--timing-only", action="store_true", help="only time the runs already in --keep"
    )
    parser.add_argument("--keep", default=None, help="keep the runs here (default: temp)")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="keraspec-records-")
    os.makedirs(work, exist_ok=True)
    print(
        "| table | tokenizer | examples | train s | epochs | valid (constrained) | quality "
        "(constrained) | valid (raw) | quality (raw) | held-out quality | masked mass |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for table in args.tables.split(","):
        data = table_file(table, work)
        for tokenizer in args.tokenizers.split(","):
            for examples in args.examples.split(","):
                label = f"{table}-{tokenizer}-{examples}"
                spec_path = os.path.join(work, f"{label}.yaml")
                spec = _fitting_spec(spec_path, table, data, tokenizer, examples)
                run_dir = os.path.join(work, label)
                if args.timing_only:
                    _print_timing(table, tokenizer, examples, run_dir)
                    continue
                shutil.rmtree(run_dir, ignore_errors=True)
                try:
                    steps = _steps_within(spec, data, args.max_minutes)
                    start = time.perf_counter()
                    report = train(spec, data, run_dir, max_steps=steps)
                    took = time.perf_counter() - start
                except compiler.KeraspecError as e:
                    print(f"| {table} | {tokenizer} | {examples} | {e.diagnostics[0].message} |")
                    continue
                masked = evaluate(run_dir, data, count=args.count, seed=0)
                raw = evaluate(run_dir, data, count=args.count, seed=0, constrained=False)
                held = masked.baseline
                print(
                    f"| {table} | {tokenizer} | {examples} | {took:.0f} | {report.epochs} | "
                    f"{masked.valid_share:.1%} | {masked.quality_score:.1f} | "
                    f"{raw.valid_share:.1%} | {raw.quality_score:.1f} | "
                    f"{held.quality_score:.1f} | "
                    f"{masked.generation['masked_mass_mean']:.3f} |",
                    flush=True,
                )
                if args.timing:
                    _print_timing(table, tokenizer, examples, run_dir)


def _print_timing(table: str, tokenizer: str, examples: str, run_dir: str) -> None:
    for rows in (1, 64):
        (record_m, token_m), (record_r, token_r) = generation_cost(run_dir, rows)
        print(
            f"| {table} | {tokenizer} | {examples} | generate, batch {rows} | | "
            f"{1000 * record_m:.2f} ms/record, {1000 * token_m:.3f} ms/token constrained | "
            f"{1000 * record_r:.2f} ms/record, {1000 * token_r:.3f} ms/token raw | "
            f"per record {record_m / record_r:.2f}x | per token {token_m / token_r:.2f}x | | |",
            flush=True,
        )


if __name__ == "__main__":
    main()

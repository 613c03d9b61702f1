"""Transformer speed: fast per-example DP against non-private training, and in-graph
generation with the KV cache against recomputing the prefix, side by side in one run.

- dp: one training step of the transformer-text template (vocab 2000, embedding 256, 4
  heads, 2 blocks, batch 64, sequence 100) compiled by `compile_spec`, non-private against
  transformer-text-dp with the fast implementation (one microbatch per example), on the same
  batch of padded record examples. Each configuration runs in a fresh process; non-DP and
  fast alternate, twice each; the first step (tracing) is not timed. Target: at most 1.25x.
- generate: the same model with a context of 300 positions and random weights (the end of
  record id made unreachable, so every row generates every token), exported by keraspec.
  256 new tokens per row, greedy: one call of the export's `generate` signature (each
  token one step over the attention caches) against a tf.while_loop that runs the whole
  model on the prefix for every token (what a model without a cache does). Both produce
  the same tokens (checked). Target: at least 5x.

  `--threads 1` runs TensorFlow with one intra- and one inter-op thread (TF Serving's
  `--tensorflow_intra_op_parallelism` and `--tensorflow_inter_op_parallelism`): at batch 1
  a token's ops are tiny, and handing each to a thread pool costs more than the op.

Usage: python benchmarks/transformer_speed.py [--quick] [--only dp,generate]
       [--steps N] [--tokens N] [--rounds R] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = dict(
    vocab_size=2000,
    embedding_dim=256,
    num_heads=4,
    num_layers=2,
    mlp_units=1024,
    batch_size=64,
    sequence_length=100,
)
QUICK = dict(
    vocab_size=500,
    embedding_dim=64,
    num_heads=4,
    num_layers=2,
    mlp_units=128,
    batch_size=16,
    sequence_length=32,
)


def _spec(private: bool, sizes: dict):
    import compiler

    params = [f"model.params.{k}={v}" for k, v in sizes.items()]
    if not private:
        return compiler.load_spec(os.path.join(ROOT, "specs", "transformer-text.yaml"), params)
    return compiler.load_spec(
        os.path.join(ROOT, "specs", "transformer-text-dp.yaml"),
        params
        + [
            "model.params.implementation=fast",
            "model.params.noise_multiplier=1.0",
            "model.params.l2_norm_clip=1.0",
        ],
    )


def worker(private: bool, sizes: dict, steps: int) -> None:
    """Time `steps` steps after one untimed step; print JSON with the times."""
    sys.path.insert(0, ROOT)
    from dp_speed import timed_steps  # this folder's DP benchmark: the same step timing

    print(json.dumps({"times": timed_steps(_spec(private, sizes), sizes, steps)}))


def _run(private: bool, sizes: dict, steps: int) -> list[float]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "dp" if private else "plain",
        "--sizes",
        json.dumps(sizes),
        "--steps",
        str(steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["times"]


def bench_dp(sizes: dict, steps: int) -> None:
    times: dict[str, list[float]] = {"non-DP": [], "fast DP": []}
    for _ in range(2):
        times["non-DP"] += _run(False, sizes, steps)
        times["fast DP"] += _run(True, sizes, steps)
    plain, plain_best = statistics.median(times["non-DP"]), min(times["non-DP"])
    print(
        f"\nper-example DP step, batch {sizes['batch_size']}, sequence "
        f"{sizes['sequence_length']}, embedding {sizes['embedding_dim']}, "
        f"{sizes['num_heads']} heads, {sizes['num_layers']} blocks, vocab "
        f"{sizes['vocab_size']} ({steps} timed steps x 2 processes each)"
    )
    print("| training | step (s, median) | x non-DP | step (s, best) | x non-DP |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        median, best = statistics.median(values), min(values)
        print(
            f"| {name} | {median:.3f} | {median / plain:.2f} | {best:.3f} | "
            f"{best / plain_best:.2f} |",
            flush=True,
        )


def bench_generate(sizes: dict, tokens: int, rounds: int, threads: int) -> None:
    sys.path.insert(0, ROOT)
    import numpy as np

    import compiler
    from compiler.build import compile_spec
    from compiler.data.tokenizer import EOR_ID, PAD_ID
    from compiler.export.savedmodel import export_saved_model, read_metadata
    from compiler.tf import tensorflow, tf_keras
    from compiler.training.weights import reshaped_spec

    tf = tensorflow()
    if threads:  # TF Serving's --tensorflow_intra_op_parallelism / inter_op
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    context = tokens + 44
    spec = compiler.load_spec(
        os.path.join(ROOT, "specs", "transformer-text.yaml"),
        [f"model.params.{k}={v}" for k, v in sizes.items() if k != "sequence_length"]
        + [f"model.params.sequence_length={context}", "model.params.dropout_rate=0"],
    )
    work = tempfile.mkdtemp(prefix="keraspec-transformer-bench-")
    try:
        tf_keras().utils.set_random_seed(0)
        model = compile_spec(reshaped_spec(spec, batch_size=None, stateful=False)).model
        logits = model.get_layer("logits")
        bias = logits.bias.numpy()
        bias[[PAD_ID, EOR_ID]] = -1e4  # every row generates every token
        logits.bias.assign(bias)
        prefix = tf.train.Checkpoint(model=model).write(os.path.join(work, "ckpt"))
        report = export_saved_model(spec, os.path.join(work, "models"), weights=prefix)
        loaded = tf.saved_model.load(report.path)
        generate = loaded.signatures["generate"]
        start = read_metadata(report.path)["start_tokens"]

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def recompute(prompt):
            # Greedy, the whole model on the prefix for every new token.
            def body(i, ids):
                last = model(ids, training=False)[:, -1, :]
                return i + 1, tf.concat(
                    [ids, tf.argmax(last, -1, output_type=tf.int32)[:, None]], axis=1
                )

            _, ids = tf.while_loop(
                lambda i, ids: i < tokens,
                body,
                (0, prompt),
                shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None])),
            )
            return ids[:, tf.shape(prompt)[1] :]

        print(
            f"\ngeneration of {tokens} new tokens per row, greedy (embedding "
            f"{sizes['embedding_dim']}, {sizes['num_heads']} heads, {sizes['num_layers']} "
            f"blocks, vocab {sizes['vocab_size']}; TensorFlow threads: "
            f"{threads or 'default'}; {rounds} rounds, medians)"
        )
        print("| batch | cached generate (tokens/s) | recomputed prefix (tokens/s) | speed-up |")
        print("| ---: | ---: | ---: | ---: |")
        for batch in (1, 16):
            prompt = np.full((batch, 4), 5, np.int32)
            inputs = dict(
                prompt=tf.constant(prompt),
                max_new_tokens=tf.fill([batch], tokens),
                temperature=tf.zeros([batch]),
                seed=tf.zeros([batch], tf.int64),
            )
            full = tf.constant(
                np.concatenate([np.tile(np.array(start, np.int32), (batch, 1)), prompt], axis=1)
            )
            cached_ids = generate(**inputs)["tokens"].numpy()
            recomputed_ids = recompute(full).numpy()
            agree = (cached_ids == recomputed_ids).mean()
            assert agree > 0.99, f"the two loops disagree on {1 - agree:.1%} of tokens"
            times: dict[str, list[float]] = {"cached": [], "recompute": []}
            for r in range(rounds):
                order = ("cached", "recompute") if r % 2 == 0 else ("recompute", "cached")
                for name in order:
                    t0 = time.perf_counter()
                    if name == "cached":
                        generate(**inputs)["tokens"].numpy()
                    else:
                        recompute(full).numpy()
                    times[name].append(time.perf_counter() - t0)
            cached = batch * tokens / statistics.median(times["cached"])
            slow = batch * tokens / statistics.median(times["recompute"])
            print(f"| {batch} | {cached:,.0f} | {slow:,.0f} | {cached / slow:.1f}x |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model and short runs")
    parser.add_argument("--only", default="dp,generate")
    parser.add_argument("--steps", type=int, default=6, help="timed DP steps per process")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="generate: TensorFlow's intra- and inter-op threads (0: default)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker == "dp", json.loads(args.sizes), args.steps)
        return
    sizes = QUICK if args.quick else REFERENCE
    parts = set(args.only.split(","))
    print(f"cpus {os.cpu_count()}")
    if "dp" in parts:
        bench_dp(sizes, 2 if args.quick else args.steps)
    if "generate" in parts:
        bench_generate(
            sizes, 64 if args.quick else args.tokens, 3 if args.quick else args.rounds, args.threads
        )


if __name__ == "__main__":
    main()

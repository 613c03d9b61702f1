"""Generation throughput: the export's in-graph `generate` signature against per-token loops.

An lstm-text model at the reference sizes (vocab 2000, 256 units; random weights, so rows
rarely stop early) is exported with keraspec, then a batch of rows generates N tokens each:

- in-graph: one call of the SavedModel's `generate` signature (the sampling loop is a
  tf.while_loop inside the graph);
- reference loop: the reference generator's approach, a stateful Keras model called once
  per token from Python (`model(ids)`, then `tf.random.categorical` on the last logits);
- step client: a client of the same export calling its `step` signature once per token,
  feeding the states back.

Each is timed after a warm-up call, several rounds alternating the order; tokens/s =
batch x N / wall time. A fourth line, "model ops only", runs just the model's one-token
step (the same layers `generate` calls, with the export's weights) N times in a
tf.while_loop, feeding back the argmax: the rest of `generate`'s time is spent outside the
model's own ops (sampling, bookkeeping, the loop itself).

Usage: python benchmarks/generate_speed.py [--quick] [--batch B] [--tokens N] [--rounds R]
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

import compiler  # noqa: E402
from compiler.build import build_state_model, compile_spec  # noqa: E402
from compiler.export.savedmodel import export_saved_model  # noqa: E402
from compiler.export.signatures import one_token_step  # noqa: E402
from compiler.tf import tensorflow, tf_keras  # noqa: E402
from compiler.training.weights import copy_weights, reshaped_spec  # noqa: E402

tf, keras = tensorflow(), tf_keras()

SPEC = os.path.join(ROOT, "specs", "lstm-text.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model and run")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sizes = dict(vocab_size=2000, embedding_dim=256, rnn_units=256)
    if args.quick:
        sizes.update(vocab_size=500, embedding_dim=64, rnn_units=64)
    tokens = args.tokens or 200
    batch = args.batch
    spec = compiler.load_spec(SPEC, [f"model.params.{k}={v}" for k, v in sizes.items()])

    work = tempfile.mkdtemp(prefix="keraspec-generate-bench-")
    try:
        keras.utils.set_random_seed(0)
        model = compile_spec(reshaped_spec(spec, batch_size=None, stateful=False)).model
        prefix = tf.train.Checkpoint(model=model).write(os.path.join(work, "ckpt"))
        report = export_saved_model(spec, os.path.join(work, "models"), weights=prefix)
        loaded = tf.saved_model.load(report.path)
        generate, step = loaded.signatures["generate"], loaded.signatures["step"]
        state_names = [n for n in report.signatures["step"]["inputs"] if n != "tokens"]
        serving = reshaped_spec(spec, batch_size=None, stateful=False)
        state_model, states = build_state_model(serving)
        copy_weights(model, state_model)
        one_token = one_token_step(tf, state_model, states, serving)

        @tf.function
        def model_only_loop():
            def body(i, token, values):
                logits, values = one_token(token, values)
                return i + 1, tf.argmax(logits, -1, output_type=tf.int32), values

            zeros = [tf.zeros([batch, st.units]) for st in states]
            return tf.while_loop(
                lambda i, *_: i < tokens, body, (tf.constant(0), tf.fill([batch], 1), zeros)
            )

        def model_only():
            model_only_loop()[1].numpy()

        units = sizes["rnn_units"]

        def in_graph():
            out = generate(
                prompt=tf.zeros([batch, 0], tf.int32),
                max_new_tokens=tf.fill([batch], tokens),
                temperature=tf.fill([batch], 1.0),
                seed=tf.range(batch, dtype=tf.int64),
            )
            return out["tokens"].numpy()

        reference = compile_spec(reshaped_spec(spec, batch_size=batch, stateful=True)).model
        reference.set_weights(model.get_weights())

        def reference_loop():
            reference.reset_states()
            ids = tf.fill([batch, 1], 1)
            for _ in range(tokens):
                logits = reference(ids)[:, -1, :]
                ids = tf.random.categorical(logits, 1, dtype=tf.int32)

        def step_client():
            states = {n: tf.zeros([batch, units]) for n in state_names}
            ids = tf.fill([batch, 1], 1)
            for _ in range(tokens):
                out = step(tokens=ids, **states)
                states = {n: out[n] for n in state_names}
                ids = tf.random.categorical(out["logits"][:, -1, :], 1, dtype=tf.int32)

        runners = {
            "in-graph generate": in_graph,
            "reference loop": reference_loop,
            "step client": step_client,
            "model ops only": model_only,
        }
        for fn in runners.values():
            fn()  # trace and warm up
        times: dict[str, list[float]] = {name: [] for name in runners}
        names = list(runners)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                runners[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = {name: batch * tokens / statistics.median(t) for name, t in times.items()}
    best = {name: batch * tokens / min(t) for name, t in times.items()}
    print(
        f"tensorflow {tf.__version__}, cpus {os.cpu_count()}, vocab {sizes['vocab_size']}, "
        f"units {units}, batch {batch}, {tokens} new tokens per row, {args.rounds} rounds"
    )
    print("| generation | tokens/s (median) | in-graph / this (medians) | (best) |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        print(
            f"| {name} | {rate[name]:,.0f} | {rate['in-graph generate'] / rate[name]:.1f}x "
            f"| {best['in-graph generate'] / best[name]:.1f}x |"
        )
    outside = 1 - rate["in-graph generate"] / rate["model ops only"]
    print(
        f"generate spends {outside:.0%} of its time outside the model's own ops "
        f"({1e3 / rate['in-graph generate'] * batch:.3f} ms per token step, model ops "
        f"{1e3 / rate['model ops only'] * batch:.3f} ms)"
    )


if __name__ == "__main__":
    main()

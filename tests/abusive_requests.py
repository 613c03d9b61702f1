"""Run in a fresh process under an address-space limit: abusive requests against an export.

Prints JSON: per request, the seconds it took and the error it raised (or "no error").
"""

import json
import resource
import sys
import time

from compiler.tf import tensorflow


def main() -> None:
    path, limit = sys.argv[1], int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tf = tensorflow()
    loaded = tf.saved_model.load(path)
    generate, text = loaded.signatures["generate"], loaded.signatures["generate_text"]
    step, serve = loaded.signatures["step"], loaded.signatures["serving_default"]

    def rows(n, new, temperature=1.0):
        return dict(
            max_new_tokens=tf.fill([n], new),
            temperature=tf.fill([n], temperature),
            seed=tf.range(n, dtype=tf.int64),
        )

    one = tf.constant([[5, 6]], tf.int32)
    requests = {
        "max_new_tokens_2^31-1": lambda: generate(prompt=one, **rows(1, 2**31 - 1)),
        "max_new_tokens_2^27_greedy": lambda: generate(prompt=one, **rows(1, 2**27, 0.0)),
        "temperature_inf": lambda: generate(prompt=one, **rows(1, 4, float("inf"))),
        "temperature_nan": lambda: generate(prompt=one, **rows(1, 4, float("nan"))),
        "temperature_negative": lambda: generate(prompt=one, **rows(1, 4, -1.0)),
        "negative_budget": lambda: generate(prompt=one, **rows(1, -3)),
        "rows_over_max_batch": lambda: generate(
            prompt=tf.zeros([257, 2], tf.int32), **rows(257, 4)
        ),
        "per_row_mismatch": lambda: generate(
            prompt=one,
            max_new_tokens=tf.constant([4, 4]),
            temperature=tf.constant([1.0]),
            seed=tf.constant([0], tf.int64),
        ),
        "prompt_too_long": lambda: generate(prompt=tf.ones([1, 5000], tf.int32) * 5, **rows(1, 4)),
        "text_many_rows": lambda: text(
            prompt=tf.constant(["p" * 5000] + [""] * 9999), **rows(10000, 4)
        ),
        "text_long_prompt": lambda: text(prompt=tf.constant(["p" * 20000]), **rows(1, 4)),
        "step_batch_mismatch": lambda: step(
            tokens=tf.constant([[5]], tf.int32),
            **{
                name: tf.zeros([0, shape[1]])
                for name, shape in (
                    (n, s.shape)
                    for n, s in step.structured_input_signature[1].items()
                    if n != "tokens"
                )
            },
        ),
        "serving_too_long": lambda: serve(tokens=tf.ones([1, 5000], tf.int32) * 5),
    }
    out = {}
    for name, call in requests.items():
        start = time.monotonic()
        try:
            call()
            message = "no error"
        except tf.errors.InvalidArgumentError as e:
            message = "InvalidArgument: " + e.message
        except Exception as e:  # noqa: BLE001 (reported, and the test fails on it)
            message = f"{type(e).__name__}: {e}"[:500]
        out[name] = [time.monotonic() - start, message[:600]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()

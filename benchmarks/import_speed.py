"""How fast `keraspec import` reads a model, side by side with Keras' own JSON loader.

Two configs: the reference model (lstm-text at reference sizes, compiled by keraspec) and a
functional graph of 1,000 layers (an embedding and a chain of dense layers). For each:
keraspec's import (to a checked spec's document, templates recognised) against
`tf_keras.models.model_from_json` (which builds the model: what a user does today to read
a config). Median of 5 runs each, interleaved, in one process.

Usage: python benchmarks/import_speed.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import compiler  # noqa: E402
from compiler.build import compile_spec  # noqa: E402
from compiler.importing import import_document  # noqa: E402
from compiler.tf import tf_keras  # noqa: E402


def thousand_layers(keras) -> str:
    """A functional JSON of 1,000 layers: the input, an embedding, 998 dense layers."""
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(16, 8)(tokens)
    small = json.loads(keras.Model(tokens, keras.layers.Dense(8)(x)).to_json())
    dense = small["config"]["layers"][2]
    layers = small["config"]["layers"][:2]
    previous = layers[-1]["name"]
    for i in range(998):
        entry = json.loads(json.dumps(dense))
        entry["name"] = entry["config"]["name"] = f"d{i}"
        entry["inbound_nodes"] = [[[previous, 0, 0, {}]]]
        layers.append(entry)
        previous = f"d{i}"
    small["config"]["layers"] = layers
    small["config"]["output_layers"] = [[previous, 0, 0]]
    return json.dumps(small)


def main() -> None:
    sys.setrecursionlimit(20_000)  # Keras walks a 1,000-layer chain recursively
    keras = tf_keras()
    reference = compile_spec(compiler.load_spec(os.path.join(ROOT, "specs", "lstm-text.yaml")))
    configs = {
        "reference model (lstm-text)": reference.model.to_json(),
        "functional, 1,000 layers": thousand_layers(keras),
    }
    print("| config | keraspec import (s) | tf_keras model_from_json (s) | import / Keras |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as scratch:
        for label, text in configs.items():
            path = os.path.join(scratch, "model.json")
            with open(path, "w") as f:
                f.write(text)
            import_document(path)  # warm: the template probes are cached per process
            ours, theirs = [], []
            for _ in range(5):
                start = time.perf_counter()
                import_document(path)
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                keras.models.model_from_json(text)
                theirs.append(time.perf_counter() - start)
                keras.backend.clear_session()
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()

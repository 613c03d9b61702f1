"""A user's program, run in a fresh interpreter by test_keras3.py: Keras 3 code and keraspec's
Python API in one process, in the order given.

    python keras3_program.py keras3-first|keraspec-first|dp-only WORK_DIR

Prints one JSON line: what it saw of Keras before and after keraspec's calls, and the weights
after one DP step of tensorflow-privacy's optimizer (where it is installed).
"""

import importlib.util
import json
import os
import pathlib
import sys

order, work = sys.argv[1], pathlib.Path(sys.argv[2])
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
seen: dict = {"legacy_variable": os.environ.get("TF_USE_LEGACY_KERAS")}


def users_keras(when: str):
    import keras
    import tensorflow as tf

    seen[f"{when}_keras_version"] = keras.__version__
    seen[f"{when}_tf_keras_is_keras"] = tf.keras.Model is keras.Model
    return tf, keras


def train_users_model(tf, keras, when: str) -> None:
    """A Keras 3 model of the user's own, trained a few steps."""
    import numpy as np

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    history = model.fit(x, x.sum(axis=1), epochs=3, batch_size=16, verbose=0)
    seen[f"{when}_users_loss"] = [float(v) for v in history.history["loss"]]
    seen[f"{when}_users_model_module"] = type(model).__module__


def dp_step() -> None:
    """One step of tensorflow-privacy's optimizer on fixed data, without noise."""
    import numpy as np

    import compiler
    from compiler.tf import tf_keras

    if importlib.util.find_spec("tensorflow_privacy") is None:  # installed on 3.11 only
        seen["dp_weights"] = None
        return
    from training_fixtures import spec_text

    spec = compiler.load_spec(
        spec_text(dp=True, batch=4, length=6, vocab=12, dropout=0.0, implementation="standard"),
        name="dp.yaml",
    )
    tf_keras().utils.set_random_seed(0)
    compiled = compiler.compile_spec(spec)
    seen["dp_weights_before"] = [float(np.abs(w).sum()) for w in compiled.model.get_weights()]
    ids = np.random.default_rng(0).integers(0, 12, size=(4, 7)).astype("int32")
    compiled.model.fit(ids[:, :-1], ids[:, 1:], batch_size=4, epochs=1, verbose=0)
    seen["dp_weights"] = [float(np.abs(w).sum()) for w in compiled.model.get_weights()]


def keraspec_calls() -> None:
    import compiler

    from training_fixtures import spec_text, write_corpus

    corpus = write_corpus(work / "corpus.csv", records=60)
    # The two signatures the program uses: tracing the others would only cost time.
    text = spec_text(epochs=1, vocab=40, batch=4, length=8)
    text += "export: {signatures: [serving_default, generate]}\n"
    spec = compiler.load_spec(text, name="tiny.yaml")
    compiled = compiler.compile_spec(spec)
    seen["compiled_model_module"] = type(compiled.model).__module__
    report = compiler.train(spec, corpus, work / "run", max_steps=3)
    seen["steps"] = report.steps
    exported = compiler.export_saved_model(work / "run", work / "models")
    seen["export"] = str(exported.path)
    generated = compiler.generate(work / "models" / "tiny", count=2, max_new_tokens=6, seed=0)
    seen["records"] = len(generated.records)


def serve_export_with_keras3(tf, keras) -> None:
    """What the README shows: a Keras 3 program using keraspec's export."""
    import numpy as np

    layer = keras.layers.TFSMLayer(seen["export"], call_endpoint="serving_default")
    tokens = tf.constant([[1, 5, 7, 3]], tf.int32)
    via_layer = layer(tokens)  # the signature's one input, `tokens`, positionally
    via_loaded = tf.saved_model.load(seen["export"]).signatures["serving_default"](tokens=tokens)
    key = "logits"
    seen["tfsm_layer_matches"] = bool(np.allclose(via_layer[key], via_loaded[key]))


if order == "dp-only":
    tf, keras = users_keras("before")
    dp_step()
    users_keras("after")
else:
    if order == "keras3-first":
        tf, keras = users_keras("before")
        train_users_model(tf, keras, "before")
    keraspec_calls()
    if order == "keras3-first":  # once is enough
        dp_step()
    tf, keras = users_keras("after")
    train_users_model(tf, keras, "after")
    if order == "keras3-first":
        serve_export_with_keras3(tf, keras)
seen["legacy_variable_after"] = os.environ.get("TF_USE_LEGACY_KERAS")
print(json.dumps(seen))

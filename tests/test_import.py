"""keraspec import: Keras models (keraspec's own and plain Keras ones, tf-keras and Keras 3)
back to specs that compile to the same models; refusals located in the file, with nothing
run and nothing written."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

import compiler
from compiler.build import compile_spec
from compiler.cli import app
from compiler.diagnostics import SpecError
from compiler.importing import import_document, import_model
from compiler.lang.render import to_data
from compiler.tf import tf_keras

from conftest import ROOT, assert_valid_report

SPECS = sorted(p for p in os.listdir(ROOT / "specs") if p.endswith((".yaml", ".json")))
runner = CliRunner()


def _layers(model):
    """The model's layer configs without names (the spec may name layers differently)."""
    config = json.loads(model.to_json())["config"]
    out = []
    for layer in config["layers"]:
        entry = {k: v for k, v in layer.items() if k not in ("name", "inbound_nodes")}
        entry["config"] = {k: v for k, v in layer["config"].items() if k != "name"}
        out.append(entry)
    return out


def _unnamed(data):
    """A resolved spec's input and model, without layer names (graph by position)."""
    layers = data["model"]["layers"]
    index = {layer["name"]: i for i, layer in enumerate(layers)}
    index[data["input"]["name"]] = -1
    out = []
    for i, layer in enumerate(layers):
        entry = {k: v for k, v in layer.items() if k not in ("name", "inputs")}
        entry["inputs"] = [index[n] for n in layer["inputs"]] if "inputs" in layer else [i - 1]
        out.append(entry)
    section = {k: v for k, v in data["input"].items() if k != "name"}
    return section, out


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_round_trips_through_its_compiled_model_json(tmp_path, name):
    original = compiler.load_spec(ROOT / "specs" / name)
    from compiler.artifacts import write_compiled

    first = compile_spec(original)
    write_compiled(first, tmp_path / "c")  # what `keraspec compile -o` writes
    out = tmp_path / "imported.yaml"
    done = runner.invoke(app, ["import", str(tmp_path / "c" / "model.json"), "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert runner.invoke(app, ["validate", "--strict", str(out)]).exit_code == 0
    imported = compiler.load_spec(out)
    first, second = first.model, compile_spec(imported).model
    assert _layers(first) == _layers(second)
    assert first.count_params() == second.count_params()
    assert _unnamed(to_data(imported)) == _unnamed(to_data(original))


def test_templates_are_recognised_with_only_the_params_that_differ(tmp_path):
    spec = compiler.load_spec(
        "apiVersion: keraspec/v1\nname: t\nmodel:\n  template: lstm-text\n"
        "  params: {vocab_size: 77, rnn_units: 48, embedding_dim: 24, dropout_rate: 0.3}\n"
    )
    path = tmp_path / "m.json"
    path.write_text(compile_spec(spec).model.to_json())
    document = import_document(path)
    assert document["model"] == {
        "template": "lstm-text",
        "params": {"vocab_size": 77, "rnn_units": 48, "embedding_dim": 24, "dropout_rate": 0.3},
    }
    explicit = import_document(path, templates=False)
    assert [layer["type"] for layer in explicit["model"]["layers"]] == [
        "embedding",
        "dropout",
        "lstm",
        "dropout",
        "lstm",
        "dropout",
        "dense",
    ]
    # Defaults are left out: a layer holds only what differs from the schema's defaults.
    assert explicit["model"]["layers"][-1] == {"type": "dense", "units": 77}
    assert "name" not in explicit["input"] and "output" not in explicit["model"]


def _gretel_model(keras, vocab=64, units=32):
    """gretel-synthetics' builder, reproduced in plain tf-keras."""

    def lstm():
        return keras.layers.LSTM(
            units, return_sequences=True, stateful=True, recurrent_initializer="glorot_uniform"
        )

    model = keras.Sequential(
        [
            keras.layers.Embedding(vocab, 16, batch_input_shape=[8, None]),
            keras.layers.Dropout(0.2),
            lstm(),
            keras.layers.Dropout(0.2),
            lstm(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(vocab),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


@pytest.mark.parametrize("suffix", [".json", ".keras", ".h5", "savedmodel"])
def test_a_plain_tf_keras_model_in_every_format_imports_as_its_template(tmp_path, corpus, suffix):
    keras = tf_keras()
    model = _gretel_model(keras)
    path = tmp_path / f"model{suffix}"
    if suffix == ".json":
        path.write_text(model.to_json())
    elif suffix == "savedmodel":
        model.save(path, save_format="tf")
    else:
        model.save(path)
    document = import_document(path)
    assert document["model"] == {
        "template": "lstm-text",
        "params": {"vocab_size": 64, "embedding_dim": 16, "rnn_units": 32, "batch_size": 8},
    }
    spec = import_model(path)
    rebuilt = compile_spec(spec).model
    assert _layers(rebuilt) == _layers(model)
    assert rebuilt.count_params() == model.count_params()
    if suffix != ".json":  # a model's JSON has no weights
        _check_imported_weights(tmp_path, path, model, corpus)


def test_a_functional_tf_keras_model_with_joins_imports_with_inputs(tmp_path):
    keras = tf_keras()
    tokens = keras.Input(batch_shape=(None, None), dtype="int32", name="ids")
    x = keras.layers.Embedding(40, 12, name="emb")(tokens)
    a = keras.layers.GRU(12, return_sequences=True, name="a")(x)
    b = keras.layers.LSTM(12, return_sequences=True, name="b")(x)
    joined = keras.layers.Concatenate(name="both")([a, b])
    summed = keras.layers.Add(name="skip")([keras.layers.Dense(24, name="proj")(joined), joined])
    norm = keras.layers.LayerNormalization(name="norm")(summed)
    logits = keras.layers.Dense(40, name="logits")(norm)
    model = keras.Model(tokens, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.002), loss="sparse_categorical_crossentropy"
    )
    path = tmp_path / "m.h5"
    model.save(path)
    document = import_document(path)
    assert document["input"] == {"name": "ids", "vocab_size": 40}
    layers = {layer.get("name"): layer for layer in document["model"]["layers"]}
    assert layers["b"]["inputs"] == ["emb"] and layers["both"]["inputs"] == ["a", "b"]
    assert layers["skip"]["inputs"] == ["proj", "both"]
    assert document["training"] == {
        "optimizer": {"type": "adam", "learning_rate": 0.002},
        "loss": {"type": "sparse_categorical_crossentropy", "from_logits": False},
    }
    rebuilt = compile_spec(import_model(path)).model
    assert _layers(rebuilt) == _layers(model)


def _keras3(program, *args):
    """Run a Keras 3 program in a fresh interpreter (keraspec's process holds tf-keras)."""
    done = subprocess.run(
        [sys.executable, "-c", program, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


KERAS3 = """
import json, os, sys
import numpy as np
import keras
out = sys.argv[1]
# A functional model with a join, compiled.
inputs = keras.Input(shape=(None,), batch_size=4, dtype="int32")
x = keras.layers.Embedding(30, 8)(inputs)
y = keras.layers.LSTM(16, return_sequences=True)(x)
z = keras.layers.LSTM(16, return_sequences=True)(y)
model = keras.Model(inputs, keras.layers.Dense(30)(keras.layers.Add()([y, z])))
model.compile(
    optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
open(os.path.join(out, "m.json"), "w").write(model.to_json())
model.save(os.path.join(out, "m.keras"))
json.dump({"params": model.count_params()}, open(os.path.join(out, "params.json"), "w"))
# A Lambda whose function leaves a mark when it runs.
marker = os.path.join(out, "ran")
def side_effect(x):
    open(marker, "w").write("ran")
    return x
inputs = keras.Input(shape=(None,), dtype="int32")
x = keras.layers.Lambda(side_effect)(keras.layers.Embedding(10, 4)(inputs))
keras.Model(inputs, keras.layers.Dense(10)(x)).save(os.path.join(out, "lambda.keras"))
if os.path.exists(marker):
    os.remove(marker)  # saving may trace it; importing must not run it
# Weights, and the logits they give.
inputs = keras.Input(shape=(None,), dtype="int32")
x = keras.layers.GRU(16, return_sequences=True)(keras.layers.Embedding(40, 8)(inputs))
model = keras.Model(inputs, keras.layers.Dense(40)(keras.layers.LayerNormalization()(x)))
model.save(os.path.join(out, "weights.keras"))
ids = np.random.default_rng(0).integers(0, 40, (4, 9)).astype("int32")
np.save(os.path.join(out, "logits.npy"), np.asarray(model(ids, training=False)))
"""


@pytest.fixture(scope="module")
def keras3_files(tmp_path_factory):
    """What one Keras 3 program (a fresh interpreter) saved."""
    out = tmp_path_factory.mktemp("keras3")
    _keras3(KERAS3, out)
    return out


@pytest.mark.parametrize("kind", ["json", "keras"])
def test_a_keras_3_functional_model_imports(keras3_files, kind):
    path = keras3_files / f"m.{kind}"
    params = json.loads((keras3_files / "params.json").read_text())["params"]
    document = import_document(path)
    assert document["input"] == {"name": "input_layer", "vocab_size": 30, "batch_size": 4}
    assert [layer["type"] for layer in document["model"]["layers"]] == [
        "embedding",
        "lstm",
        "lstm",
        "add",
        "dense",
    ]
    assert document["model"]["layers"][3]["inputs"] == ["lstm", "lstm_1"]
    if kind == "keras":  # a model's JSON holds no compile config; its archive does
        assert document["training"]["optimizer"] == {
            "type": "sgd",
            "learning_rate": 0.05,
            "momentum": 0.9,
        }
    else:
        assert "training" not in document
    rebuilt = compile_spec(import_model(path)).model
    assert rebuilt.count_params() == params


# ------------------------------------------------------------------------------ refusals


def _refused(path, field, *words):
    with pytest.raises(SpecError) as raised:
        import_document(path)
    (diagnostic,) = raised.value.diagnostics
    assert diagnostic.path == field, diagnostic
    assert diagnostic.file == str(path)
    for word in words:
        assert word in diagnostic.message, diagnostic.message
    return diagnostic


def test_an_unsupported_argument_is_refused_at_its_place_in_the_file(tmp_path):
    keras = tf_keras()
    model = keras.Sequential(
        [
            keras.layers.Embedding(20, 4, batch_input_shape=[None, None]),
            keras.layers.LSTM(
                8, return_sequences=True, kernel_constraint="max_norm", name="recurrent"
            ),
            keras.layers.Dense(20),
        ]
    )
    path = tmp_path / "m.json"
    path.write_text(json.dumps(json.loads(model.to_json()), indent=1))
    diagnostic = _refused(
        path, "config.layers[2].config.kernel_constraint", "'recurrent'", "(LSTM)", "MaxNorm"
    )
    assert diagnostic.line is not None and diagnostic.line > 1  # the line in the JSON file
    # Through the command: exit 1, the location, and no spec written.
    out = tmp_path / "spec.yaml"
    done = runner.invoke(app, ["import", str(path), "-o", str(out)])
    assert done.exit_code == 1 and "kernel_constraint" in done.output
    assert not out.exists()


def test_a_seeded_initializer_and_a_softmax_free_loss_are_refused(tmp_path):
    keras = tf_keras()
    model = keras.Sequential(
        [
            keras.layers.Embedding(20, 4, batch_input_shape=[None, None]),
            keras.layers.Dense(20, kernel_initializer=keras.initializers.GlorotUniform(seed=3)),
        ]
    )
    path = tmp_path / "m.json"
    path.write_text(model.to_json())
    _refused(path, "config.layers[2].config.kernel_initializer", "no seed")
    model = keras.Sequential(
        [keras.layers.Embedding(20, 4, batch_input_shape=[None, None]), keras.layers.Dense(20)]
    )
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "m.h5"
    model.save(path)
    _refused(path, "model_config.compile_config.loss", "sparse_categorical_crossentropy")


def test_a_lambda_in_a_keras_archive_is_refused_without_running_it(keras3_files):
    path, marker = keras3_files / "lambda.keras", keras3_files / "ran"
    assert not marker.exists()
    assert "Lambda" in zipfile.ZipFile(path).read("config.json").decode()
    _refused(path, "config.json.config.layers[2].class_name", "'lambda'", "Lambda")
    assert not marker.exists()


def test_a_custom_class_and_a_shared_layer_are_refused(tmp_path):
    config = json.loads(_gretel_model(tf_keras()).to_json())
    config["config"]["layers"][3]["class_name"] = "my_package>Attention"
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(config))
    _refused(path, "config.layers[3].class_name", "Attention")
    keras = tf_keras()
    tokens = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(10, 4)(tokens)
    shared = keras.layers.Dense(4)
    y = shared(shared(x))
    path = tmp_path / "shared.json"
    path.write_text(keras.Model(tokens, keras.layers.Dense(10)(y)).to_json())
    _refused(path, "config.layers[2].inbound_nodes", "called once")


def test_unreadable_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    _refused(tmp_path / "bad.json", "", "expected a Keras model's JSON config")
    (tmp_path / "list.json").write_text("[1, 2]")
    _refused(tmp_path / "list.json", "", "received list")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "keras_metadata.pb", "SavedModel written by Keras")
    with pytest.raises(SpecError):
        import_document(tmp_path / "missing.json")


# ------------------------------------------------------------------------------ size


def test_a_thousand_layer_graph_imports(tmp_path):
    """The functional JSON of 1,000 layers that benchmarks/import_speed.py times."""
    import importlib.util

    location = ROOT / "benchmarks" / "import_speed.py"
    module_spec = importlib.util.spec_from_file_location("import_speed", location)
    benchmark = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(benchmark)
    path = tmp_path / "big.json"
    path.write_text(benchmark.thousand_layers(tf_keras()))
    document = import_document(path)
    assert len(document["model"]["layers"]) == 999
    last = document["model"]["layers"][-1]
    assert last["type"] == "dense" and last["units"] == 8 and last["name"] == "d997"


# ------------------------------------------------------------------------------ weights


@pytest.fixture()
def corpus(tmp_path):
    from training_fixtures import write_corpus

    return write_corpus(tmp_path / "corpus.txt", records=120)


def _logits_of_run(run_dir, ids):
    from compiler.generation import load_run_model

    _, model, _ = load_run_model(str(run_dir), None, "best", stateful=False)
    return model(ids, training=False).numpy()


def _check_imported_weights(tmp_path, path, model, corpus):
    """The run imported from `path` gives `model`'s logits, and says it was imported."""
    from compiler.importing.weights import import_run

    imported = import_run(path, tmp_path / "run", data=corpus)
    ids = np.random.default_rng(0).integers(0, 40, (8, 12)).astype(np.int32)
    model.reset_states()
    expected = model(ids, training=False).numpy()
    assert np.max(np.abs(expected)) > 1e-3  # random weights: a real comparison
    np.testing.assert_allclose(_logits_of_run(tmp_path / "run", ids), expected, atol=1e-6)
    assert imported.parameters == model.count_params()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["imported"]["sha256"] == imported.sha256 and report["privacy"] is None
    assert report["steps"] == 0 and "no DP" in report["notes"][0]
    assert_valid_report(tmp_path / "run" / "report.json")


def test_an_imported_run_exports_and_serves(tmp_path, corpus):
    keras = tf_keras()
    path = tmp_path / "model.h5"
    _gretel_model(keras).save(path)
    spec = tmp_path / "spec.yaml"
    done = runner.invoke(
        app,
        ["import", str(path), "-o", str(spec), "--run-dir", str(tmp_path / "run")]
        + ["--data", str(corpus), "--name", "gretel", "-f", "json"],
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["run_dir"] == str(tmp_path / "run") and summary["template"] == "lstm-text"
    done = runner.invoke(app, ["export", str(tmp_path / "run"), "-o", str(tmp_path / "serve")])
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        app,
        ["generate", str(tmp_path / "serve" / "gretel")]
        + ["--count", "3", "--seed", "1", "-f", "json"],
    )
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.stdout)["records"]) == 3


def test_keras_3_archive_weights_give_the_original_logits(tmp_path, corpus, keras3_files):
    from compiler.importing.weights import import_run

    path, logits = keras3_files / "weights.keras", keras3_files / "logits.npy"
    import_run(path, tmp_path / "run", data=corpus)
    ids = np.random.default_rng(0).integers(0, 40, (4, 9)).astype(np.int32)
    np.testing.assert_allclose(_logits_of_run(tmp_path / "run", ids), np.load(logits), atol=1e-5)


def test_a_run_needs_weights_and_a_tokenizer(tmp_path, corpus):
    from compiler.diagnostics import DataError
    from compiler.importing.weights import import_run

    keras = tf_keras()
    model = _gretel_model(keras)
    (tmp_path / "m.json").write_text(model.to_json())
    with pytest.raises(SpecError) as raised:
        import_run(tmp_path / "m.json", tmp_path / "run", data=corpus)
    assert "architecture only" in raised.value.diagnostics[0].message
    model.save(tmp_path / "m.h5")
    with pytest.raises(DataError) as raised:
        import_run(tmp_path / "m.h5", tmp_path / "run")
    message = raised.value.diagnostics[0].message
    assert "--tokenizer" in message and "--data" in message
    assert not (tmp_path / "run").exists()


def test_json_and_keras_archives_import_without_tensorflow(tmp_path):
    keras = tf_keras()
    model = _gretel_model(keras)
    model.save(tmp_path / "m.keras")
    (tmp_path / "m.json").write_text(model.to_json())
    program = (
        "import sys\n"
        "from compiler.importing import import_document\n"
        "for path in sys.argv[1:]:\n"
        "    assert import_document(path)['model']['template'] == 'lstm-text'\n"
        "assert 'tensorflow' not in sys.modules and 'tf_keras' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "m.json"), str(tmp_path / "m.keras")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]

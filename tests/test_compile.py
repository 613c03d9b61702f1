"""Specs to compiled tf-keras models: structure, parameter counts, one real training step."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import compiler
from compiler.build import compile_spec
from compiler.cli import app
from compiler.lang.render import dump_json, to_data
from compiler.tf import tensorflow, tf_keras

from conftest import ROOT, needs_tf_privacy, spec_files
from reference import build_reference
from shrink import BATCH, VOCAB, shrink

tf, keras = tensorflow(), tf_keras()
SPECS = spec_files()


def _batch(spec, seed=0):
    rng = np.random.default_rng(seed)
    shape = (spec.training.batch_size, spec.training.sequence_length)
    x = rng.integers(0, spec.input.vocab_size, size=shape, dtype=np.int32)
    y = rng.integers(0, spec.input.vocab_size, size=shape, dtype=np.int32)
    return x, y


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_static_param_count_matches_keras(path):
    compiled = compile_spec(compiler.load_spec(path))
    assert compiled.model.count_params() == compiled.analysis.total_params
    keras_layers = {layer.name: layer for layer in compiled.model.layers}
    for info in compiled.analysis.layers:
        assert keras_layers[info.name].count_params() == info.params, info.name
        assert tuple(keras_layers[info.name].output_shape) == info.output_shape, info.name


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_each_spec_compiles_and_trains_one_step(path):
    spec = shrink(compiler.load_spec(path))
    compiled = compile_spec(spec)
    model = compiled.model
    expected_class = keras.Sequential if compiled.analysis.sequential else keras.Model
    assert isinstance(model, expected_class)
    assert compiled.analysis.sequential or not isinstance(model, keras.Sequential)
    before = _weights(model)
    privacy = spec.training.privacy
    fast = privacy is not None and privacy.implementation == "fast"
    x, y = _batch(spec)
    loss, *_ = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert 0.5 * np.log(VOCAB) < loss < 2 * np.log(VOCAB)  # untrained: near uniform
    changed = [not np.array_equal(a, b) for a, b in zip(before, _weights(model))]
    assert all(changed), "every weight receives a gradient"
    if fast:  # fit runs keraspec's per-example DP step (tests/test_fast_dp.py checks it)
        assert type(model).train_step.__module__ == "compiler.privacy.fast"
        assert not hasattr(compiled.optimizer, "_was_dp_gradients_called")
    elif privacy:
        assert compiled.optimizer._was_dp_gradients_called


def _strip_names(config):
    config = dict(config)
    config.pop("name", None)
    return config


def test_lstm_text_is_the_reference_model():
    compiled = compile_spec(compiler.load_spec(ROOT / "specs" / "lstm-text.yaml"))
    ours, ref = compiled.model, build_reference()
    assert ours.count_params() == ref.count_params() == 11_310_624
    assert [type(layer) for layer in ours.layers] == [type(layer) for layer in ref.layers]
    for a, b in zip(ours.layers, ref.layers):
        assert _strip_names(a.get_config()) == _strip_names(b.get_config())
    assert ours.layers[0].get_config()["batch_input_shape"] == (64, None)
    assert type(compiled.optimizer) is keras.optimizers.legacy.RMSprop
    assert _strip_names(compiled.optimizer.get_config()) == _strip_names(ref.optimizer.get_config())
    assert compiled.optimizer.get_config()["rho"] == pytest.approx(0.9)
    assert compiled.optimizer.get_config()["centered"] is False
    assert compiled.loss.get_config()["from_logits"] is True
    assert compiled.metrics == ["accuracy"]
    # Numerically: with identical weights, identical logits on the same batch.
    ref.set_weights(ours.get_weights())
    x, _ = _batch(compiled.spec)
    x = x[:, :12]
    np.testing.assert_array_equal(ours(x, training=False).numpy(), ref(x, training=False).numpy())


@needs_tf_privacy
def test_lstm_text_dp_is_the_reference_dp_model():
    reference = [
        "model.params.num_microbatches=1",
        "model.params.implementation=standard",
        "model.params.noise_multiplier=0.1",
        "model.params.stateful=true",
    ]
    compiled = compile_spec(compiler.load_spec(ROOT / "specs" / "lstm-text-dp.yaml", reference))
    ref = build_reference(dp=True)
    assert type(compiled.optimizer).__mro__[1] is keras.optimizers.legacy.RMSprop
    assert _strip_names(compiled.optimizer.get_config()) == _strip_names(ref.optimizer.get_config())
    assert compiled.optimizer._num_microbatches == 1
    assert compiled.optimizer._dp_sum_query._l2_norm_clip == 3.0
    assert compiled.optimizer._dp_sum_query._stddev == pytest.approx(0.3)
    assert not compiled.per_example_loss  # one microbatch: the batch-mean loss, as the reference


DP_SPEC = """\
apiVersion: keraspec/v1
name: dp-probe
input: {vocab_size: %(vocab)d}
model:
  layers:
    - {type: embedding, output_dim: 6}
    - {type: lstm, units: 5, return_sequences: true}
    - {type: dense, units: %(vocab)d}
training:
  batch_size: 4
  sequence_length: 5
  optimizer: {type: sgd, learning_rate: 1.0}
  privacy:
    l2_norm_clip: %(clip)s
    noise_multiplier: %(noise)s
    num_microbatches: %(micro)d
    implementation: %(impl)s
"""


def _dp_model(impl, micro, noise, clip=0.05):
    spec = compiler.load_spec(
        DP_SPEC % dict(vocab=VOCAB, clip=clip, noise=noise, micro=micro, impl=impl)
    )
    return spec, compile_spec(spec)


def _expected_dp_gradient(model, x, y, micro, clip):
    """Mean over microbatches of each microbatch's gradient, clipped to `clip` (by hand)."""
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    clipped = []
    for xs, ys in zip(np.split(x, micro), np.split(y, micro)):
        with tf.GradientTape() as tape:
            loss = sce(ys, model(xs, training=True))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        norm = np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads))
        scale = min(1.0, clip / norm)
        clipped.append([g.numpy() * scale for g in grads])
    return [np.mean(parts, axis=0) for parts in zip(*clipped)]


@needs_tf_privacy
# Each implementation, and one example per microbatch as well as two (the pairs crossed:
# tensorflow-privacy's graphs take seconds to trace, and both implementations reshape
# the batch into microbatches the same way).
@pytest.mark.parametrize("impl, micro", [("standard", 2), ("vectorized", BATCH)])
def test_dp_update_is_mean_of_clipped_microbatch_gradients(impl, micro):
    spec, compiled = _dp_model(impl, micro, noise=0.0)
    model = compiled.model
    assert compiled.per_example_loss
    x, y = _batch(spec, seed=3)
    before = [v.numpy() for v in model.trainable_variables]
    expected = _expected_dp_gradient(model, x, y, micro, clip=0.05)
    model.train_on_batch(x, y)
    assert compiled.optimizer._was_dp_gradients_called
    applied = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]  # lr = 1
    for got, want in zip(applied, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    total = np.sqrt(sum(float(np.sum(g * g)) for g in applied))
    assert total <= 0.05 + 1e-6  # the mean of clipped gradients is within the clip norm


@needs_tf_privacy
@pytest.mark.parametrize("impl", ["standard"])  # vectorized noises through the same query
def test_dp_noise_differs_between_steps(impl):
    spec, compiled = _dp_model(impl, BATCH, noise=1.0)
    model = compiled.model
    start = model.get_weights()
    batch = _batch(spec, seed=5)
    updates = []
    for _ in range(2):
        model.set_weights(start)  # both steps start from the same point, on the same batch
        before = [v.numpy() for v in model.trainable_variables]
        model.train_on_batch(*batch)
        updates.append([b - v.numpy() for b, v in zip(before, model.trainable_variables)])
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(*updates))
    # Noise std is 1.0 * clip / microbatches = 0.0125 per coordinate: far above float error.
    # Without noise (or with noise drawn once, at tracing) the two updates would be equal.
    assert diff > 1e-3


def test_compile_cli_writes_artifacts(tmp_path):
    out = tmp_path / "compiled"
    result = CliRunner().invoke(
        app,
        ["compile", "specs/char-small.yaml", "--set", "model.params.rnn_units=16", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "model.json",
        "optimizer.json",
        "spec.resolved.yaml",
        "summary.txt",
    ]
    rebuilt = keras.models.model_from_json((out / "model.json").read_text())
    spec = compiler.load_spec(out / "spec.resolved.yaml")
    assert rebuilt.count_params() == compile_spec(spec).model.count_params()
    assert spec.model.layers[2].units == 16
    optimizer = json.loads((out / "optimizer.json").read_text())
    assert optimizer["class_name"] == "RMSprop"
    assert optimizer["config"]["learning_rate"] == pytest.approx(0.005)
    assert "total params:" in (out / "summary.txt").read_text()
    assert "total params:" in result.output


def test_compile_cli_reports_spec_errors_without_tensorflow_traceback():
    result = CliRunner().invoke(app, ["compile", "tests/cases/invalid/logits_size.yaml"])
    assert result.exit_code == 1
    assert "logits_size.yaml:11:14: error: model.layers[2].units" in result.output
    assert "Traceback" not in result.output


def test_compile_target_epsilon_needs_examples():
    spec = compiler.load_spec(
        ROOT / "specs" / "lstm-text-dp-per-example.yaml",
        ["training.privacy.noise_multiplier=null", "training.privacy.target_epsilon=2.0"],
    )
    with pytest.raises(compiler.SpecError) as info:
        compile_spec(shrink(spec))
    assert info.value.diagnostics[0].code == "needs_examples"


def test_error_only_tensorflow_detects_points_at_the_layer(tmp_path):
    # Unrolling needs a fixed sequence length; only Keras knows that rule.
    path = tmp_path / "unroll.yaml"
    path.write_text(
        "apiVersion: keraspec/v1\n"
        "name: unroll\n"
        "input: {vocab_size: 12}\n"
        "model:\n"
        "  layers:\n"
        "    - {type: embedding, output_dim: 4}\n"
        "    - {type: lstm, units: 4, return_sequences: true, unroll: true}\n"
        "    - {type: dense, units: 12}\n"
    )
    with pytest.raises(compiler.CompileError) as info:
        compile_spec(compiler.load_spec(path))
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.column, d.path, d.code) == (
        str(path),
        7,
        7,
        "model.layers[1]",
        "keras_layer",
    )
    assert d.message.startswith("TensorFlow refused it: Unrolling requires a fixed number")
    assert "Call arguments" not in d.message
    result = CliRunner().invoke(app, ["compile", str(path)])
    assert result.exit_code == 1
    assert f"{path}:7:7: error: model.layers[1]: TensorFlow refused it:" in result.output
    assert "Traceback" not in result.output


def test_compile_output_failure_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(
        app, ["compile", "specs/char-small.yaml", "-o", str(blocker / "out")]
    )
    assert result.exit_code == 1
    assert "error: expected a writable directory" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_compile_cli_keeps_tensorflow_noise_out_of_the_terminal():
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", "specs/char-small.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""  # no oneDNN / CUDA / absl start-up lines, no deprecation warnings
    assert run.stdout.startswith("char-small: Sequential\n")
    assert "total params: 229,472" in run.stdout


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: p.name)
def test_compiled_model_json_of_every_spec_loads_with_custom_objects(tmp_path, path):
    # The spec at test size, through `compile -o` as a user runs it.
    small = tmp_path / "small.json"
    small.write_text(dump_json(to_data(shrink(compiler.load_spec(path)).spec)))
    out = tmp_path / "compiled"
    result = CliRunner().invoke(app, ["compile", str(small), "-o", str(out), "--examples", "3600"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "model.json").read_text())
    assert config["class_name"] in ("Sequential", "Functional")  # never keraspec's DP class
    assert config["config"]["layers"]  # the architecture, not only a name
    rebuilt = keras.models.model_from_json(
        json.dumps(config), custom_objects=compiler.custom_objects()
    )
    expected = compile_spec(compiler.load_spec(out / "spec.resolved.yaml"))
    assert rebuilt.count_params() == expected.analysis.total_params
    assert [layer.name for layer in rebuilt.layers if layer.weights] == [
        layer.name for layer in expected.model.layers if layer.weights
    ]


@pytest.mark.parametrize("name", ["lstm-text-dp.yaml", "residual-lstm.yaml"])
def test_compile_artifacts_load_in_plain_keras_and_record_privacy(tmp_path, name):
    # Small sizes, the same classes: the DP template compiles to keraspec's fast DP model
    # class, the residual spec to a functional one.
    out = tmp_path / "compiled"
    overrides = (
        [
            "--set",
            "model.params.rnn_units=8",
            "--set",
            "model.params.vocab_size=40",
            "--set",
            "model.params.embedding_dim=4",
        ]
        if "dp" in name
        else []
    )
    result = CliRunner().invoke(
        app, ["compile", f"specs/{name}", *overrides, "-o", str(out), "--examples", "3600"]
    )
    assert result.exit_code == 0, result.output
    text = (out / "model.json").read_text()
    assert "FastDP" not in text
    rebuilt = keras.models.model_from_json(text)
    spec = compiler.load_spec(out / "spec.resolved.yaml")
    assert rebuilt.count_params() == compile_spec(spec).model.count_params()
    optimizer = json.loads((out / "optimizer.json").read_text())
    assert (
        optimizer["class_name"]
        == optimizer["base_class"]
        == ("RMSprop" if "dp" in name else type(compile_spec(spec).optimizer).__name__)
    )
    if "dp" in name:
        privacy = optimizer["privacy"]
        assert privacy["l2_norm_clip"] == 3.0 and privacy["noise_multiplier"] == 1.1
        assert (privacy["implementation"], privacy["sampling"], privacy["accountant"]) == (
            "fast",
            "poisson",
            "pld",
        )
        assert privacy["delta"] == pytest.approx(3600**-1.1) and 0 < privacy["epsilon"] < 10
    else:
        assert "privacy" not in optimizer

"""Every registered layer type, checked on the tiny model its class carries (`example`):
its static weights against Keras', its fast-DP forward against per-example tape gradients,
its one-token serving step against the whole sequence, its config through `compile -o` and
`model_from_json`. A new type in `LAYER_TYPES` is covered by adding its example."""

import json

import numpy as np
import pytest
from per_example import global_norm, per_example_gradients
from typer.testing import CliRunner

import compiler
from compiler.build import build_state_model, compile_spec
from compiler.cli import app
from compiler.export.signatures import one_token_step
from compiler.lang.render import dump_json
from compiler.layers import LAYER_TYPES
from compiler.privacy import fast as fast_dp
from compiler.tf import tensorflow, tf_keras

tf, keras = tensorflow(), tf_keras()
VOCAB, BATCH, STEPS, CLIP = 12, 4, 6, 1e-3
TYPES = sorted(LAYER_TYPES)


def _data(name: str, dp: bool = False) -> dict:
    data = {
        "apiVersion": "keraspec/v1",
        "name": f"example-{name.replace('_', '-')}",
        "input": {"vocab_size": VOCAB},
        "model": {"layers": [dict(layer) for layer in LAYER_TYPES[name].example]},
        "training": {"batch_size": BATCH, "sequence_length": STEPS},
    }
    if dp:
        data["training"]["privacy"] = {
            "l2_norm_clip": CLIP,
            "noise_multiplier": 0.0,
            "implementation": "fast",
        }
    return data


def _spec(name: str, dp: bool = False) -> compiler.CheckedSpec:
    return compiler.load_spec(dump_json(_data(name, dp)), name=f"<{name} example>")


def _ids(seed: int, shape=(BATCH, STEPS)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


def test_every_registered_type_carries_an_example_that_uses_it():
    for name, layer_type in LAYER_TYPES.items():
        assert name in [layer["type"] for layer in layer_type.example], name


@pytest.mark.parametrize("name", TYPES)
def test_static_weights_are_the_keras_layers_weights(name):
    spec = _spec(name)
    model = compile_spec(spec).model
    assert model.count_params() == spec.analysis.total_params
    shapes = {spec.input.name: spec.analysis.input_shape}
    shapes.update({info.name: info.output_shape for info in spec.analysis.layers})
    layers = {layer.name: layer for layer in spec.model.layers}
    for info in spec.analysis.layers:
        keras_layer = model.get_layer(info.name)
        assert keras_layer.count_params() == info.params, info.name
        declared = layers[info.name].weights([shapes[n] for n in info.inputs], info.output_shape)
        built = {w.name.split(":")[0]: tuple(w.shape) for w in keras_layer.weights}
        assert len(built) == len(declared), info.name
        for weight, shape in declared:  # Keras' path ends with the declared name
            (path,) = [p for p in built if p == weight or p.endswith("/" + weight)]
            assert built[path] == tuple(shape), (info.name, weight)


@pytest.mark.parametrize("name", TYPES)
def test_per_example_forward_gives_each_examples_gradient_norm(name):
    spec = _spec(name, dp=True)
    compiled = compile_spec(spec)
    model, graph = compiled.model, compiled.dp_step.graph
    x, y = _ids(1), _ids(2)
    w = np.ones((BATCH, STEPS), np.float32)
    grads, norms, _, _ = fast_dp.clipped_gradients(
        model,
        graph,
        tf.constant(x),
        tf.constant(y),
        tf.constant(w),
        l2_norm_clip=CLIP,
        training=False,
    )
    each = per_example_gradients(model, x, y, w)
    expected = [global_norm(example) for example in each]
    np.testing.assert_allclose(norms.numpy(), expected, rtol=2e-5)
    assert min(expected) > CLIP  # every example is clipped
    for i, got in enumerate(grads):
        want = sum(example[i] * (CLIP / n) for example, n in zip(each, expected))
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-9)


@pytest.mark.parametrize("name", TYPES)
def test_one_token_step_reproduces_the_whole_sequence(name):
    spec = _spec(name)
    model, states = build_state_model(spec)
    step = one_token_step(tf, model, states, spec)
    assert step is not None, name
    x = _ids(3, (2, STEPS))
    zeros = [tf.zeros([2, *st.shape], st.dtype) for st in states]
    outputs = model([x, *zeros])
    whole = (outputs[0] if states else outputs).numpy()  # the logits, then the states
    values, got = zeros, []
    for t in range(STEPS):
        logits, values = step(tf.constant(x[:, t]), values)
        got.append(logits.numpy())
    np.testing.assert_allclose(np.stack(got, axis=1), whole, atol=1e-5)


@pytest.mark.parametrize("name", TYPES)
def test_config_round_trips_through_compile_output_and_model_from_json(name, tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(dump_json(_data(name)))
    result = CliRunner().invoke(app, ["compile", str(spec_file), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "model.json").read_text()
    rebuilt = keras.models.model_from_json(text, custom_objects=compiler.custom_objects())
    original = compile_spec(compiler.load_spec(spec_file)).model
    # config -> model -> config is the identity
    assert json.loads(rebuilt.to_json()) == json.loads(text)
    rebuilt.set_weights(original.get_weights())
    x = _ids(4)
    np.testing.assert_allclose(rebuilt(x).numpy(), original(x).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", TYPES)
def test_every_registered_type_imports_back_from_its_keras_config(tmp_path, name):
    """`keraspec import` reads each type back from its Keras class and config: the example's
    model JSON imports into a spec whose model has the same config."""
    from compiler.importing import import_model

    model = compile_spec(_spec(name)).model
    path = tmp_path / "model.json"
    path.write_text(model.to_json())
    rebuilt = compile_spec(import_model(path, templates=False)).model
    assert json.loads(rebuilt.to_json())["config"]["layers"] == (
        json.loads(model.to_json())["config"]["layers"]
    )
    assert rebuilt.count_params() == model.count_params()

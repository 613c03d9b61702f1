"""Transformer layers and templates: static counts, causality, training, KV-cache serving.

Tiny models (vocab 40, width 16, one block) on the fruit corpus: seconds per run.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import compiler
from compiler.build import compile_spec
from compiler.cli import app
from compiler.data.automaton import compile_automaton
from compiler.data.tokenizer import EOR_ID, PAD_ID
from compiler.diff import diff_specs
from compiler.export.opened import open_export
from compiler.export.savedmodel import export_saved_model, read_metadata
from compiler.tf import tensorflow, tf_keras
from compiler.training import train

from capi_client import assert_c_api_answers_as_python
from training_fixtures import transformer_spec_text, write_corpus

tf, keras = tensorflow(), tf_keras()
runner = CliRunner()

# Every layer a transformer block may hold, with the options that change weight shapes.
BLOCKS = """
apiVersion: keraspec/v1
name: blocks
input: {vocab_size: 20}
model:
  layers:
    - {type: embedding, name: tok, output_dim: 8}
    - {type: position_embedding, name: pos, sequence_length: 12}
    - {type: layer_normalization, name: n1}
    - {type: multi_head_attention, name: att, num_heads: 2}
    - {type: add, name: r1, inputs: [pos, att]}
    - {type: layer_normalization, name: n2}
    - {type: multi_head_attention, name: att2, num_heads: 3, key_dim: 5, value_dim: 2,
       use_bias: false}
    - {type: dense, name: h, units: 16, activation: gelu}
    - {type: conv1d, name: conv, filters: 8, kernel_size: 3, dilation_rate: 2}
    - {type: add, name: r2, inputs: [r1, conv]}
    - {type: conv1d, name: pointwise, filters: 8, kernel_size: 1}
    - {type: dense, name: logits, units: 20}
training:
  batch_size: 4
  sequence_length: 10
  optimizer: {type: adam, learning_rate: 0.01}
"""


def _blocks():
    return compiler.load_spec(BLOCKS)


@pytest.mark.parametrize(
    "source", ["blocks", "specs/transformer-small.yaml", "specs/transformer-text-dp.yaml"]
)
def test_static_parameter_counts_equal_the_compiled_models(source):
    if source == "blocks":
        spec = _blocks()
    else:
        spec = compiler.load_spec(
            source,
            [
                "model.params.vocab_size=50",
                "model.params.embedding_dim=24",
                "model.params.mlp_units=40",
                "model.params.num_layers=3",
            ],
        )
    model = compile_spec(spec, examples=1000).model
    static = {info.name: info.params for info in spec.analysis.layers}
    for layer in model.layers:
        if layer.__class__.__name__ != "InputLayer":
            assert static[layer.name] == layer.count_params(), layer.name
    assert spec.analysis.total_params == model.count_params()


def test_attention_weights_are_named_and_shaped_as_keras_multi_head_attention():
    model = compile_spec(_blocks()).model
    mine = {w.name.split("/", 1)[1]: tuple(w.shape) for w in model.get_layer("att").weights}
    reference = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="ref")
    x = tf.zeros([1, 3, 8])
    reference(x, x)
    theirs = {w.name.split("/", 1)[1]: tuple(w.shape) for w in reference.weights}
    assert mine == theirs


def test_logits_at_a_position_ignore_later_tokens():
    model = compile_spec(_blocks()).model
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, size=(3, 10)).astype(np.int32)
    base = model(x, training=False).numpy()
    for t in (0, 4, 8):
        changed = x.copy()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 7) % 20
        other = model(changed, training=False).numpy()
        np.testing.assert_array_equal(other[:, : t + 1], base[:, : t + 1])
        assert np.abs(other[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-3  # later ones see it


def test_the_one_token_step_over_the_states_reproduces_the_whole_sequence():
    from compiler.build import build_state_model
    from compiler.export.signatures import one_token_step

    spec = _blocks()
    model, states = build_state_model(spec)
    step = one_token_step(tf, model, states, spec)
    assert step is not None  # every layer steps: caches, windows, position, pointwise conv
    x = np.random.default_rng(4).integers(0, 20, size=(2, 10)).astype(np.int32)
    zeros = [tf.zeros([2, *st.shape], st.dtype) for st in states]
    whole = model([x, *zeros])[0].numpy()
    values, got = zeros, []
    for t in range(10):
        logits, values = step(tf.constant(x[:, t]), values)
        got.append(logits.numpy())
    np.testing.assert_allclose(np.stack(got, axis=1), whole, atol=1e-5)
    position = [v for st, v in zip(states, values) if st.name == "position"][0]
    np.testing.assert_array_equal(position.numpy(), [10, 10])


def test_compiled_model_json_loads_in_tf_keras(tmp_path):
    result = runner.invoke(
        app, ["compile", "specs/transformer-small.yaml", "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "model.json").read_text()
    rebuilt = keras.models.model_from_json(text, custom_objects=compiler.custom_objects())
    original = compile_spec(compiler.load_spec("specs/transformer-small.yaml")).model
    rebuilt.set_weights(original.get_weights())
    x = np.random.default_rng(1).integers(0, 96, size=(2, 64)).astype(np.int32)
    np.testing.assert_allclose(rebuilt(x).numpy(), original(x).numpy(), atol=1e-6)


# ----------------------------------------------------------------------- trained runs


@pytest.fixture(scope="module")
def dp_export(tmp_path_factory):
    """A DP transformer trained with the fast per-example step, and its export."""
    root = tmp_path_factory.mktemp("transformer")
    corpus = write_corpus(root / "corpus.txt")
    (root / "s.yaml").write_text(transformer_spec_text(dp=True, epochs=1), encoding="utf-8")
    report = train(compiler.load_spec(root / "s.yaml"), corpus, root / "run")
    assert report.privacy is not None and report.steps > 0
    export = export_saved_model(root / "run", root / "models")
    return root, export, tf.saved_model.load(export.path)


def _serve(loaded, tokens):
    return loaded.signatures["serving_default"](tokens=tf.constant(tokens, tf.int32))


def test_a_trained_dp_transformer_exports_every_signature_with_its_caches(dp_export):
    _, export, loaded = dp_export
    assert set(loaded.signatures) == {"serving_default", "step", "generate", "generate_text"}
    states = {st["name"]: st for st in read_metadata(export.path)["states"]}
    assert states["block_1_attention_key"]["shape"] == [16, 2, 8]
    assert states["block_1_attention_value"]["shape"] == [16, 2, 8]
    assert states["position"]["dtype"] == "int32"
    assert export.max_logit_difference <= 1e-4


def _zero_states(loaded, rows):
    step = loaded.signatures["step"]
    return {
        name: tf.zeros([rows, *spec.shape[1:]], spec.dtype)
        for name, spec in step.structured_input_signature[1].items()
        if name != "tokens"
    }


def test_step_token_by_token_reproduces_serving_default(dp_export):
    _, _, loaded = dp_export
    tokens = np.random.default_rng(2).integers(2, 20, size=(3, 12)).astype(np.int32)
    whole = _serve(loaded, tokens)["logits"].numpy()
    for pieces in ([1] * 12, [5, 1, 6]):
        states, got, at = _zero_states(loaded, 3), [], 0
        for n in pieces:
            out = loaded.signatures["step"](tokens=tf.constant(tokens[:, at : at + n]), **states)
            got.append(out["logits"].numpy())
            states = {k: out[k] for k in states}
            at += n
        np.testing.assert_allclose(np.concatenate(got, axis=1), whole, atol=1e-4)
        np.testing.assert_array_equal(states["position"].numpy(), [12, 12, 12])


def test_generate_at_temperature_zero_is_a_greedy_loop_over_serving_default(dp_export):
    _, export, loaded = dp_export
    start = read_metadata(export.path)["start_tokens"]
    prompts = [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts, tf.int32),
        max_new_tokens=tf.fill([3], 8),
        temperature=tf.zeros([3]),
        seed=tf.zeros([3], tf.int64),
    )
    # Generation is constrained to the run's validators (the field count of a DP run): the
    # greedy reference masks what the automaton masks, from the prompt's state; a prompt no
    # valid record starts with leaves its row unconstrained.
    opened = open_export(export.path)
    automaton = compile_automaton(opened.validators(), opened.tokenizer(), 40)
    held = out["constrained"].numpy()
    for row, prompt in enumerate(prompts):
        ids = start + [i for i in prompt if i != PAD_ID]
        assert held[row] == (automaton.walk([i for i in prompt if i != PAD_ID]) is not None)
        expected = []
        for _ in range(8):
            logits = _serve(loaded, [ids + expected])["logits"].numpy()[0, -1]
            logits[PAD_ID] = -np.inf
            logits[40:] = -np.inf
            if held[row]:
                state = automaton.walk([i for i in prompt if i != PAD_ID] + expected)
                logits[automaton.table[state] < 0] = -np.inf
            nxt = int(np.argmax(logits))
            if nxt == EOR_ID:
                break
            expected.append(nxt)
        got = out["tokens"].numpy()[row, : int(out["lengths"][row])].tolist()
        assert got == expected


def test_generation_ends_at_the_context_and_longer_requests_fail_naming_it(dp_export):
    _, export, loaded = dp_export
    start = len(read_metadata(export.path)["start_tokens"])
    rows, prompt = 32, [5, 6, 7]
    out = loaded.signatures["generate"](
        prompt=tf.constant([prompt] * rows, tf.int32),
        max_new_tokens=tf.fill([rows], 100),
        temperature=tf.fill([rows], 3.0),
        seed=tf.range(rows, dtype=tf.int64),
    )
    lengths, complete = out["lengths"].numpy(), out["complete"].numpy()
    room = 16 - start - len(prompt)  # positions left for generated tokens
    assert lengths.max() <= room
    assert not complete[lengths == room].any()  # full rows did not end with <eor>
    assert (lengths == room).sum() >= 1  # at temperature 3, rows without <eor> fill up
    with pytest.raises(tf.errors.InvalidArgumentError, match="context of 16 positions"):
        _serve(loaded, np.full((1, 17), 5, np.int32))
    states = _zero_states(loaded, 1)
    states["position"] = tf.constant([10], tf.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="context of 16 positions"):
        loaded.signatures["step"](tokens=tf.constant([[5] * 7], tf.int32), **states)


def test_every_transformer_signature_runs_through_the_c_api(dp_export):
    _, export, loaded = dp_export
    rng = np.random.default_rng(3)
    states = {
        k: (
            v.numpy() + rng.normal(size=v.shape).astype(np.float32) * 0.1
            if v.dtype == tf.float32
            else np.array([2, 0], np.int32)
        )
        for k, v in _zero_states(loaded, 2).items()
    }
    per_row = {
        "max_new_tokens": np.array([6, 3], np.int32),
        "temperature": np.array([0.8, 0.0], np.float32),
        "seed": np.array([4, 5], np.int64),
    }
    requests = {
        "serving_default": {"tokens": rng.integers(2, 20, (2, 5)).astype(np.int32)},
        "step": {"tokens": rng.integers(2, 20, (2, 3)).astype(np.int32), **states},
        "generate": {"prompt": np.array([[5, 6], [7, 0]], np.int32), **per_row},
        "generate_text": {"prompt": np.array([b"pe", b""], object), **per_row},
    }
    assert_c_api_answers_as_python(export.path, requests)


def test_generating_from_the_run_and_from_the_export_agree_greedily(dp_export):
    root, export, _ = dp_export
    texts = []
    for source in (root / "run", export.path):
        result = runner.invoke(
            app,
            [
                "generate",
                str(source),
                "-n",
                "2",
                "--temperature",
                "0",
                "--prompt",
                "pe",
                "--max-new-tokens",
                "20",
                "--format",
                "json",
            ],
        )
        assert result.exit_code == 0, result.output
        texts.append(json.loads(result.output)["records"])
    assert texts[0] == texts[1]
    # A prompt longer than the context is refused by both, naming the bound.
    for source in (root / "run", export.path):
        result = runner.invoke(app, ["generate", str(source), "-n", "1", "--prompt", "pe" * 9])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "context of 16 positions" in result.output, result.output


def test_a_standard_transformer_learns_resumes_and_keeps_its_place(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    path = tmp_path / "s.yaml"
    path.write_text(transformer_spec_text(epochs=3), encoding="utf-8")
    spec = compiler.load_spec(path)
    first = train(spec, corpus, tmp_path / "b", max_steps=10)
    resumed = train(spec, corpus, tmp_path / "b")
    straight = train(spec, corpus, tmp_path / "a")
    assert (first.steps, resumed.steps) == (10, straight.steps)
    assert resumed.loss == pytest.approx(straight.loss, rel=1e-5)
    # Learning: far below the untrained model's ln(40) = 3.7 nats per character.
    assert straight.best_val_loss < 2.5


def test_diff_reports_attention_parameters_and_cache_compatibility():
    old = compiler.load_spec("specs/transformer-small.yaml")
    new = compiler.load_spec("specs/transformer-small.yaml", ["model.params.num_heads=8"])
    d = diff_specs(old, new)
    assert (d.params["old"], d.params["new"]) == (
        old.analysis.total_params,
        new.analysis.total_params,
    )
    assert not d.checkpoint["compatible"]
    assert any("block_1_attention.query/kernel" in p for p in d.checkpoint["differences"])
    assert not d.serving["compatible"]
    assert any(
        "block_1_attention_key" in p and "64, 4, 24" in p and "64, 8, 12" in p
        for p in d.serving["differences"]
    )


def test_a_model_that_sees_later_tokens_exports_serving_default_alone():
    from compiler.lang.spec import signatures_to_export

    spec = compiler.load_spec("tests/cases/warnings/not_causal.yaml")
    assert signatures_to_export(spec, text_in_graph=True) == ["serving_default"]
    causal = compiler.load_spec(
        "tests/cases/warnings/not_causal.yaml",
        ["model.layers[1].causal=true", "model.layers[2].padding=causal"],
    )
    assert signatures_to_export(causal, text_in_graph=True) == [
        "serving_default",
        "step",
        "generate",
        "generate_text",
    ]


def test_the_memory_estimate_counts_attention_scores_over_the_sequence():
    from compiler.lang.checks import training_memory

    def activations(path, length):
        spec = compiler.load_spec(path, [f"model.params.sequence_length={length}"])
        return training_memory(spec.spec, spec.analysis)["activations"]

    # Outputs and gates grow with batch x sequence; each position's scores also with the
    # sequence: four times the positions cost four times an LSTM's, more for attention.
    assert activations("specs/char-small.yaml", 256) == 4 * activations("specs/char-small.yaml", 64)
    assert activations("specs/transformer-small.yaml", 256) > 5 * activations(
        "specs/transformer-small.yaml", 64
    )

"""The fast per-example DP-SGD step against brute force and tensorflow-privacy.

Small models (vocab 12, widths 5-7, batch 4, 6 steps) so every case runs in a second or two.
"""

import numpy as np
import pytest
from per_example import global_norm, per_example_gradients

import compiler
from compiler.build import compile_spec
from compiler.lang.render import dump_json, to_data
from compiler.privacy import fast as fast_dp
from compiler.tf import tensorflow, tf_keras

from conftest import ROOT, needs_tf_privacy
from shrink import shrink

tf, keras = tensorflow(), tf_keras()
VOCAB, BATCH, STEPS, CLIP = 12, 4, 6, 0.05

# Batch 4 of 6 steps, one microbatch per example, SGD or Adam at learning rate 1.
DP_TRAINING = """\
training:
  batch_size: 4
  sequence_length: 6
  optimizer: {type: %(optimizer)s, learning_rate: 1.0}
  privacy:
    l2_norm_clip: %(clip)s
    noise_multiplier: %(noise)s
    num_microbatches: 4
    implementation: %(impl)s
"""

SPEC = """
apiVersion: keraspec/v1
name: t
input: {vocab_size: 12, batch_size: 4, sequence_length: 6}
model:
  layers:
    - {type: embedding, name: emb, output_dim: 5}
    - {type: %(rnn)s, name: rnn, units: 7, return_sequences: %(sequences)s %(extra)s}
    - {type: layer_normalization, name: norm}
    - {type: dense, name: out, units: %(out)d}
""" + DP_TRAINING

# (recurrent layer, extra fields, return_sequences)
MODELS = {
    "lstm": ("lstm", "", True),
    "gru": ("gru", "", True),
    "gru-reset-before": ("gru", ", reset_after: false", True),
    "lstm-backwards-no-bias": ("lstm", ", go_backwards: true, use_bias: false", True),
    "gru-relu-backwards": ("gru", ", go_backwards: true, activation: relu", True),
    "lstm-hard-sigmoid": ("lstm", ", recurrent_activation: hard_sigmoid", True),
}


def _spec(model="lstm", impl="fast", noise=0.0, optimizer="sgd", clip=CLIP):
    rnn, extra, sequences = MODELS[model]
    text = SPEC % dict(
        rnn=rnn,
        extra=extra,
        sequences=str(sequences).lower(),
        out=VOCAB,
        impl=impl,
        noise=noise,
        optimizer=optimizer,
        clip=clip,
    )
    return compiler.load_spec(text)


def _residual_spec(impl, noise=0.0):
    """specs/residual-lstm.yaml shrunk, dropout off, DP added, SGD at learning rate 1."""
    data = to_data(shrink(compiler.load_spec(ROOT / "specs" / "residual-lstm.yaml")))
    for layer in data["model"]["layers"]:
        if layer["type"] == "dropout":
            layer["rate"] = 0.0
    data["training"]["optimizer"] = {"type": "sgd", "learning_rate": 1.0}
    data["training"]["privacy"] = {
        "l2_norm_clip": CLIP,
        "noise_multiplier": noise,
        "num_microbatches": BATCH,
        "implementation": impl,
    }
    return compiler.load_spec(dump_json(data))


TRANSFORMER = """
apiVersion: keraspec/v1
name: t
input: {vocab_size: 12}
model:
  layers:
    - {type: embedding, name: emb, output_dim: 8}
    - {type: position_embedding, name: pos, sequence_length: 6}
    - {type: layer_normalization, name: norm_a}
    - {type: multi_head_attention, name: att, num_heads: 2}
    - {type: add, name: res_a, inputs: [pos, att]}
    - {type: layer_normalization, name: norm_b}
    - {type: conv1d, name: conv, filters: 6, kernel_size: 3, activation: gelu}
    - {type: dense, name: mlp, units: 8}
    - {type: add, name: res_b, inputs: [res_a, mlp]}
    - {type: multi_head_attention, name: att_b, num_heads: 4, key_dim: 3, value_dim: 2,
       use_bias: false}
    - {type: dense, name: out, units: 12}
""" + DP_TRAINING


def _transformer_spec(impl, noise=0.0, optimizer="sgd"):
    """Every layer of a transformer block: position table, attention (with and without
    biases, other head sizes), causal convolution, residuals."""
    return compiler.load_spec(
        TRANSFORMER % dict(impl=impl, noise=noise, clip=CLIP, optimizer=optimizer)
    )


def _batch(spec, seed=0, sequences=True):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, spec.input.vocab_size, (BATCH, STEPS)).astype(np.int32)
    shape = (BATCH, STEPS) if sequences else (BATCH,)
    y = rng.integers(0, spec.input.vocab_size, shape).astype(np.int32)
    # Record examples: each row keeps a prefix and masks the padding after it.
    lengths = rng.integers(2, STEPS + 1, BATCH)
    w = (np.arange(STEPS)[None, :] < lengths[:, None]).astype(np.float32)
    return x, y, (w if sequences else np.ones(BATCH, np.float32))


CASES = list(MODELS) + ["residual", "transformer"]


def _case(case, **kw):
    if case == "residual":
        return _residual_spec(**kw)
    if case == "transformer":
        return _transformer_spec(**kw)
    return _spec(case, **kw)


def _sequences(case):
    return case in ("residual", "transformer") or MODELS[case][2]


@pytest.mark.parametrize("case", CASES)
def test_forward_is_the_keras_model(case):
    spec = _case(case, impl="fast")
    compiled = compile_spec(spec)
    model, graph = compiled.model, compiled.dp_step.graph
    x, _, _ = _batch(spec, sequences=_sequences(case))
    with tf.GradientTape() as tape:
        ours, terms = fast_dp.forward(model, graph, tf.constant(x), tape, training=False)
    np.testing.assert_allclose(ours.numpy(), model(x, training=False).numpy(), atol=2e-6)
    covered = {id(v) for term in terms for v in term.variables}
    assert covered == {id(v) for v in model.trainable_variables}


@pytest.mark.parametrize("case", CASES)
def test_per_example_norms_and_clipped_sum_equal_brute_force(case):
    spec = _case(case, impl="fast")
    compiled = compile_spec(spec)
    model, graph = compiled.model, compiled.dp_step.graph
    x, y, w = _batch(spec, seed=1, sequences=_sequences(case))
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
    expected_norms = [global_norm(g) for g in each]
    np.testing.assert_allclose(norms.numpy(), expected_norms, rtol=2e-5)
    assert min(expected_norms) > CLIP  # so clipping really happens
    expected = [
        sum(g[i] * min(1.0, CLIP / n) for g, n in zip(each, expected_norms))
        for i in range(len(each[0]))
    ]
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-8)


def _update(compiled, x, y, w):
    model = compiled.model
    before = [v.numpy() for v in model.trainable_variables]
    model.train_on_batch(x, y, sample_weight=w)
    return [b - v.numpy() for b, v in zip(before, model.trainable_variables)]


@needs_tf_privacy
@pytest.mark.parametrize(
    "case, optimizer",
    # tensorflow-privacy takes seconds per case to trace: the brute-force test above covers
    # every layer form; these cover each layer type, the residual graph, and an optimizer
    # with slots (SGD at learning rate 1 shows the gradient itself; Adam's first step mostly
    # its signs).
    [("lstm", "adam"), ("gru-reset-before", "sgd"), ("residual", "sgd"), ("transformer", "adam")],
)
def test_update_equals_tensorflow_privacy_microbatched(case, optimizer):
    kw = {} if case == "residual" else {"optimizer": optimizer}
    ours = compile_spec(_case(case, impl="fast", **kw))
    theirs = compile_spec(_case(case, impl="standard", **kw))
    theirs.model.set_weights(ours.model.get_weights())
    x, y, w = _batch(ours.spec, seed=2, sequences=_sequences(case))
    got, want = _update(ours, x, y, w), _update(theirs, x, y, w)
    assert theirs.optimizer._was_dp_gradients_called
    # Float sums in another order (threads, kernels) move the smallest entries most: Adam's
    # first step divides each gradient by its own size, so an entry near zero (measured
    # 8.82e-05 against 8.84e-05 once in five runs) is compared on the update's own scale.
    scale = max(float(np.max(np.abs(b))) for b in want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=5e-4, atol=1e-5 * scale)
    assert scale > 1e-4  # a real step was taken


def test_padding_contributes_nothing():
    spec = _spec("lstm", impl="fast")
    compiled = compile_spec(spec)
    model, graph = compiled.model, compiled.dp_step.graph
    x, y, w = _batch(spec, seed=4)
    other_x, other_y = x.copy(), y.copy()
    masked = w == 0
    assert masked.any()
    other_x[masked] = (x[masked] + 5) % VOCAB  # other tokens where the weights are zero
    other_y[masked] = (y[masked] + 3) % VOCAB
    results = [
        fast_dp.clipped_gradients(
            model,
            graph,
            tf.constant(a),
            tf.constant(b),
            tf.constant(w),
            l2_norm_clip=CLIP,
            training=False,
        )
        for a, b in ((x, y), (other_x, other_y))
    ]
    np.testing.assert_allclose(results[0][1].numpy(), results[1][1].numpy(), rtol=1e-6)
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9)


def test_noise_has_the_dp_sgd_standard_deviation():
    noise, clip = 2.0, 0.5
    quiet = compile_spec(_spec("gru", noise=0.0, clip=clip))
    noisy = compile_spec(_spec("gru", noise=noise, clip=clip))
    x, y, w = _batch(quiet.spec, seed=5)
    start = quiet.model.get_weights()
    diffs = []
    for _ in range(25):
        quiet.model.set_weights(start)
        noisy.model.set_weights(start)
        a, b = _update(quiet, x, y, w), _update(noisy, x, y, w)
        diffs.append(np.concatenate([(q - n).ravel() for q, n in zip(a, b)]))
    draws = np.concatenate(diffs)  # learning rate 1: each is noise / batch size
    expected = clip * noise / BATCH
    assert draws.size > 10000
    assert abs(float(np.std(draws)) / expected - 1) < 0.03
    assert abs(float(np.mean(draws))) < 4 * expected / np.sqrt(draws.size)
    # Each draw is fresh: the two steps from the same weights got different noise.
    assert not np.allclose(diffs[0], diffs[1])


def test_dropout_layers_drop_in_the_training_step():
    spec = shrink(
        compiler.load_spec(
            ROOT / "specs" / "lstm-text-dp.yaml",
            [
                "model.params.implementation=fast",
                "model.params.num_microbatches=64",
                "model.params.dropout_rate=0.5",
            ],
        )
    )
    compiled = compile_spec(spec)
    model, graph = compiled.model, compiled.dp_step.graph
    x = np.random.default_rng(0).integers(0, VOCAB, (BATCH, STEPS)).astype(np.int32)
    with tf.GradientTape() as tape:
        off, _ = fast_dp.forward(model, graph, tf.constant(x), tape, training=False)
        on, _ = fast_dp.forward(model, graph, tf.constant(x), tape, training=True)
        again, _ = fast_dp.forward(model, graph, tf.constant(x), tape, training=True)
    assert not np.allclose(off.numpy(), on.numpy())
    assert not np.allclose(on.numpy(), again.numpy())


def test_stateful_layers_train_from_zero_state():
    spec = shrink(
        compiler.load_spec(
            ROOT / "specs" / "lstm-text-dp.yaml",
            [
                "model.params.implementation=fast",
                "model.params.num_microbatches=64",
                "model.params.dropout_rate=0",
                "model.params.stateful=true",
            ],
        )
    )
    compiled = compile_spec(spec)
    model, graph = compiled.model, compiled.dp_step.graph
    assert any(getattr(layer, "stateful", False) for layer in model.layers)
    x = np.random.default_rng(1).integers(0, VOCAB, (BATCH, STEPS)).astype(np.int32)
    with tf.GradientTape() as tape:
        first, _ = fast_dp.forward(model, graph, tf.constant(x), tape, training=False)
        second, _ = fast_dp.forward(model, graph, tf.constant(x), tape, training=False)
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    model.reset_states()
    np.testing.assert_allclose(first.numpy(), model(x, training=False).numpy(), atol=2e-6)


def _poisson_model(noise=0.0, clip=CLIP):
    """The model a Poisson-sampled run trains: any batch size, divided by the expected 4."""
    from compiler.training.run import training_spec

    spec = _spec("gru", noise=noise, clip=clip)
    assert spec.training.privacy.sampling == "poisson"
    compiled = compile_spec(training_spec(spec), noise_multiplier=noise)
    assert compiled.model.input_shape[0] is None
    return compiled.model, compiled.dp_step.graph


def test_masked_slots_contribute_nothing():
    model, graph = _poisson_model()
    x, y, w = _batch(_spec("gru"), seed=6)
    rng = np.random.default_rng(1)
    # Three more rows of other tokens with loss weight 0: Poisson sampling's masked slots.
    extra_x = np.concatenate([x, rng.integers(0, VOCAB, (3, STEPS)).astype(np.int32)])
    extra_y = np.concatenate([y, rng.integers(0, VOCAB, (3, STEPS)).astype(np.int32)])
    extra_w = np.concatenate([w, np.zeros((3, STEPS), np.float32)])
    plain = fast_dp.clipped_gradients(
        model, graph, *map(tf.constant, (x, y, w)), l2_norm_clip=CLIP, training=False
    )
    padded = fast_dp.clipped_gradients(
        model,
        graph,
        *map(tf.constant, (extra_x, extra_y, extra_w)),
        l2_norm_clip=CLIP,
        training=False,
    )
    np.testing.assert_allclose(padded[1].numpy()[:BATCH], plain[1].numpy(), rtol=1e-6)
    assert (padded[1].numpy()[BATCH:] == 0).all()  # no norm
    for a, b in zip(plain[0], padded[0]):  # equal up to the order of float sums
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_noise_is_divided_by_the_expected_batch_not_the_sampled_one():
    noise, clip = 2.0, 0.5
    model, _ = _poisson_model(noise=noise, clip=clip)
    zeros = np.zeros((2, STEPS), np.int32)
    before = [v.numpy() for v in model.trainable_variables]
    # Two slots, both masked: the update is the noise alone, divided by the expected batch 4.
    model.train_on_batch(zeros, zeros, sample_weight=np.zeros((2, STEPS), np.float32))
    draws = np.concatenate(
        [(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)]
    )
    assert draws.size > 400
    ratio = float(np.std(draws)) / (clip * noise / BATCH)
    assert 0.8 < ratio < 1.2  # dividing by the 2 slots would give 2

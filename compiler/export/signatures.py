"""What the serving signatures are made of: per-row sampling, the automaton's tables, the
state model's one-token step; and the signatures' descriptions and warmup requests. The
signatures themselves are the methods of `compiler.export.module`'s serving module.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from compiler.data.automaton import Automaton
from compiler.data.tokenizer import EOR_ID, PAD_ID, Tokenizer
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


# How close the served logits must be to the Keras model's (float32 arithmetic, same ops).
TOLERANCE = 1e-4


_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _mix(tf: Any, x: Any) -> Any:
    """SplitMix64's finaliser on uint64 tensors: a counter-based hash, one row at a time."""
    x = x + tf.constant(_MIX[0], tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(30, tf.uint64)))
    x = x * tf.constant(_MIX[1], tf.uint64)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(27, tf.uint64)))
    x = x * tf.constant(_MIX[2], tf.uint64)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(31, tf.uint64)))


def row_keys(tf: Any, seed: Any) -> Any:
    """Each row's hash key [batch] uint64, from its seed alone."""
    return _mix(tf, tf.bitcast(seed, tf.uint64))


def row_uniform(tf: Any, keys: Any, t: Any) -> Any:
    """One uniform in (0, 1) per row [batch], from the row's own (key, step): a row's draw
    never depends on the other rows of its batch, so a server-side batcher merging
    requests changes no answer."""
    bits = _mix(tf, keys + tf.cast(t, tf.uint64))
    # 24 random bits (float32's precision) -> (0, 1).
    return (tf.cast(tf.bitwise.right_shift(bits, tf.constant(40, tf.uint64)), tf.float32) + 0.5) * (
        1.0 / 2.0**24
    )


def sample_rows(tf: Any, scaled: Any, uniform: Any) -> Any:
    """Inverse-CDF sampling, one uniform per row: the first id whose cumulative weight
    exceeds uniform x total. Masked ids (-inf) weigh 0, so they are never the first."""
    weights = tf.exp(scaled - tf.reduce_max(scaled, axis=1, keepdims=True))
    cumulative = tf.cumsum(weights, axis=1)
    # Strictly below the total, so that some id's cumulative weight exceeds it.
    target = uniform * cumulative[:, -1] * (1.0 - 1e-6)
    return tf.reduce_sum(tf.cast(cumulative <= target[:, None], tf.int32), axis=1)


def serving_tables(automaton: Automaton, allowed: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The automaton as the generation loop reads it: transitions int32 and rules bool
    [states + 1, vocab]. The extra last state is "free": where a prompt leaves every valid
    record, its row goes on unconstrained (every allowed id, back to the free state), so
    the loop never special-cases a row."""
    free = automaton.states
    table = automaton.table
    transitions = np.vstack([np.where(table >= 0, table, free), np.full((1, table.shape[1]), free)])
    rules = np.vstack([(table >= 0) & np.asarray(allowed), np.asarray(allowed)[None, :]])
    return transitions.astype(np.int32), rules


def _advance_automaton(tf: Any, transitions: Any, at: Any, tokens: Any) -> Any:
    """Each row's automaton state after one token ([B] states, [B] ids)."""
    return tf.gather_nd(transitions, tf.stack([at, tokens], axis=1))


def allowed_ids(spec: s.Spec, tokenizer: Optional[Tokenizer]) -> list[bool]:
    """Ids the sampler may produce: those the tokenizer knows, never padding."""
    vocab = spec.input.vocab_size
    used = tokenizer.size if tokenizer is not None else vocab
    return [i < used and i != PAD_ID for i in range(vocab)]


def one_token_step(tf: Any, model: Any, states: list[Any], spec: CheckedSpec) -> Optional[Any]:
    """The state model's one-token form: [B] ids and states -> [B, V] logits, new states.

    Recurrent layers are called through their cells (one step, no time loop); layers that
    keep a cache, a window or a position are called on one position ([B, 1, features])
    with their states; every other layer acts on each position alone, so it is called on
    [B, features]. Fewer, smaller ops per token than the layers on one-token sequences.
    Returns None when the graph holds a layer whose one step is none of these (a
    backwards RNN, a concatenation along time): generation then runs the full layers on
    one-token sequences.
    """
    from compiler.build import call_graph

    graph = call_graph(spec.spec, spec.analysis)
    layers = {layer.name: layer for layer in model.layers}
    spec_layers = {layer.name: layer for layer in spec.model.layers}
    if not all(layer.steps_alone() or layer.steps_as_sequence() for layer in spec.model.layers):
        return None
    by_layer: dict[Optional[str], list[int]] = {}
    for i, st in enumerate(states):
        by_layer.setdefault(st.layer, []).append(i)
    (position_at,) = by_layer.get(None, [None])  # the rows' position, when a layer uses it

    def step(token, state_values):
        values = {graph.input: token}
        new_states = list(state_values)
        position = None if position_at is None else state_values[position_at]
        for name, inputs in graph.layers:
            layer, spec_layer = layers[name], spec_layers[name]
            args = [values[n] for n in inputs]
            x = args if len(args) > 1 else args[0]
            mine = by_layer.get(name, [])
            if spec_layer.steps_as_sequence():
                out, updated = spec_layer.call_with_state(
                    layer, x[:, None], [state_values[i] for i in mine], position
                )
                out = out[:, 0]
            elif mine:
                out, updated = layer.cell(x, [state_values[i] for i in mine], training=False)
                updated = tf.nest.flatten(updated)
            else:
                out, updated = layer(x, training=False), []
            for i, value in zip(mine, updated):
                new_states[i] = value
            values[name] = out
        if position_at is not None:
            new_states[position_at] = position + 1
        return values[graph.output], new_states

    return step


def signature_info(fn: Any) -> dict[str, dict[str, list[Any]]]:
    """A loaded signature's inputs and outputs as {name: [dtype, shape]}."""

    def describe(specs: dict[str, Any]) -> dict[str, list[Any]]:
        return {
            name: [spec.dtype.name, None if spec.shape.rank is None else spec.shape.as_list()]
            for name, spec in sorted(specs.items())
        }

    return {
        "inputs": describe(fn.structured_input_signature[1]),
        "outputs": describe(fn.structured_outputs),
    }


def example_prompts(automaton: Optional[Automaton], vocab: int) -> list[list[int]]:
    """Two prompts of different lengths, right-padded with 0, that start a valid record:
    for warm-up requests and the export's own check."""
    if automaton is None:
        return [[2, 3 % vocab], [3 % vocab, 0]]
    first = _first_token(automaton, automaton.start)
    second = _first_token(automaton, automaton.walk([first])) if first else 0
    return [[first, second], [first, 0]] if first else [[0, 0], [0, 0]]


def _first_token(automaton: Automaton, state: Optional[int]) -> int:
    """The lowest id the state allows that is not `<eor>` (0: none)."""
    if state is None:
        return 0
    allowed = [int(i) for i in np.flatnonzero(automaton.table[state] >= 0) if i != EOR_ID]
    return allowed[0] if allowed else 0


def _warmup_inputs(
    tf: Any,
    name: str,
    states: list[Any],
    spec: s.Spec,
    tokenizer: Optional[Tokenizer],
    prompts: list[list[int]],
) -> dict[str, Any]:
    tokens = [[EOR_ID, 2, 3], [EOR_ID, 3, 2]]
    if name == "serving_default":
        return {spec.input.name: tf.constant(tokens, tf.int32)}
    if name == "step":
        return {
            spec.input.name: tf.constant(tokens, tf.int32),
            **{st.name: tf.zeros([2, *st.shape], st.dtype) for st in states},
        }
    common = {  # per row: a server-side batcher merges requests along the first dimension
        "max_new_tokens": tf.constant([4, 2], tf.int32),
        "temperature": tf.constant([1.0, 0.0], tf.float32),
        "seed": tf.constant([0, 1], tf.int64),
    }
    if name == "generate":
        return {"prompt": tf.constant(prompts, tf.int32), **common}
    first = tokenizer.decode(prompts[0][:1]) if tokenizer is not None else ""
    return {"prompt": tf.constant([first, ""]), **common}


def _write_warmup(tf: Any, path: str, model_name: str, requests: dict[str, dict[str, Any]]) -> None:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests.items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
            )
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())

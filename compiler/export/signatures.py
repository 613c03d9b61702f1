"""The serving signatures: serving_default, step, generate and generate_text, as tf.functions
over the state model, with the request limits and in-graph sampling, and their warmup
requests.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from compiler.data.automaton import Automaton
from compiler.data.dataset import start_tokens, unit_of
from compiler.data.tokenizer import EOR_ID, PAD_ID, Tokenizer
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec
from compiler.layers.states import POSITION, context_length

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


def _serving_module(
    tf: Any,
    model: Any,
    states: list[Any],
    spec: s.Spec,
    tokenizer: Optional[Tokenizer],
    signatures: list[str],
    tokenizer_files: list[str],
    automaton: Optional[Automaton] = None,
    record_start: Optional[list[int]] = None,
) -> tuple[Any, dict[str, Any]]:
    """A tf.Module holding the model and the signature functions.

    With an `automaton` (compiled from the run's validators), `generate` and
    `generate_text` mask, before every sample, the tokens that would break the record's
    rules, and report per row the probability mass the mask removed."""
    vocab = spec.input.vocab_size
    input_name = spec.input.name
    limits = spec.export.limits
    if record_start is None:  # what a record's first token follows
        record_start = list(start_tokens(unit_of(spec)))

    class Serving(tf.Module):
        pass

    module = Serving()
    # The variables only, not the Keras model: saving a Keras model also traces and writes
    # every layer's call functions, which the signatures do not need (and which are slow).
    module.weights = list(model.weights)
    module.assets = [tf.saved_model.Asset(path) for path in tokenizer_files]
    module.allowed = tf.constant(allowed_ids(spec, tokenizer))
    if automaton is not None:
        transitions, rules = serving_tables(automaton, allowed_ids(spec, tokenizer))
        module.transitions, module.rules = tf.constant(transitions), tf.constant(rules)

    def within(value: Any, limit: int, what: str, field: str) -> Any:
        """An assertion that `value` (a scalar) is at most `limit`, naming the limit."""
        return tf.debugging.Assert(
            value <= limit,
            [f"{what}: expected at most export.limits.{field} = {limit}, received", value],
        )

    def checked_tokens(tokens: Any, what: str) -> list[Any]:
        shape = tf.shape(tokens)
        return [
            within(shape[0], limits.max_batch, f"{what} rows", "max_batch"),
            within(shape[1], limits.max_prompt_length, f"{what} length", "max_prompt_length"),
        ]

    def zero_states(batch):
        return [tf.zeros([batch, *st.shape], st.dtype) for st in states]

    # A model that places tokens (a position table, an attention cache) holds `context`
    # positions: a request that needs more fails at once, naming the bound.
    context = context_length(spec)

    def within_context(last: Any, what: str) -> list[Any]:
        if context is None:
            return []
        return [
            tf.debugging.Assert(
                last <= context,
                [
                    f"{what}: expected at most the model's context of {context} positions (its "
                    "position_embedding's sequence_length, or training.sequence_length), received",
                    last,
                ],
            )
        ]

    def run(tokens, state_values):
        outputs = model([tokens, *state_values], training=False)
        if not states:
            outputs = [outputs]
        return outputs[0], list(outputs[1:])

    one_token = one_token_step(tf, model, states, spec)

    def advance(token, state_values):
        """Logits [B, V] and states after one more token per row."""
        if one_token is not None:
            return one_token(token, state_values)
        logits, new_states = run(token[:, None], state_values)
        return logits[:, -1, :], new_states

    token_spec = tf.TensorSpec([None, None], tf.int32, name=input_name)

    @tf.function(input_signature=[token_spec], autograph=False)
    def serving_default(tokens):
        checks = checked_tokens(tokens, input_name)
        checks += within_context(tf.shape(tokens)[1], f"{input_name} length")
        with tf.control_dependencies(checks):
            tokens = tf.identity(tokens)
        logits, _ = run(tokens, zero_states(tf.shape(tokens)[0]))
        return {"logits": logits, "next_token_probs": tf.nn.softmax(logits[:, -1, :])}

    state_specs = [tf.TensorSpec([None, *st.shape], st.dtype, name=st.name) for st in states]

    @tf.function(input_signature=[token_spec, state_specs], autograph=False)
    def step(tokens, state_values):
        checks = checked_tokens(tokens, input_name)
        rows = tf.shape(tokens)[0]
        for st, value in zip(states, state_values):
            checks.append(
                tf.debugging.Assert(
                    tf.shape(value)[0] == rows,
                    [
                        f"{st.name}: expected as many rows as {input_name}, received",
                        tf.shape(value)[0],
                        f"rows for {input_name}'s",
                        rows,
                    ],
                )
            )
            if st.name == POSITION:
                checks.append(
                    tf.debugging.Assert(
                        tf.reduce_all(value >= 0),
                        [f"{POSITION}: expected values >= 0, received", value],
                    )
                )
                checks += within_context(
                    tf.reduce_max(tf.concat([value, [0]], 0)) + tf.shape(tokens)[1],
                    f"{POSITION} + {input_name} length",
                )
        with tf.control_dependencies(checks):
            tokens = tf.identity(tokens)
        logits, new_states = run(tokens, list(state_values))
        out = {"logits": logits}
        out.update({st.name: value for st, value in zip(states, new_states)})
        return out

    def checked_rows(prompt_rows, max_new_tokens, temperature, seed) -> list[Any]:
        """Per-row inputs: one value per prompt row, in range, before anything is built."""
        checks = [within(prompt_rows, limits.max_batch, "prompt rows", "max_batch")]
        for name, value in (
            ("max_new_tokens", max_new_tokens),
            ("temperature", temperature),
            ("seed", seed),
        ):
            checks.append(
                tf.debugging.Assert(
                    tf.shape(value)[0] == prompt_rows,
                    [
                        f"{name}: expected one value per prompt row (",
                        prompt_rows,
                        "), received",
                        tf.shape(value)[0],
                    ],
                )
            )
        checks.append(
            within(
                tf.reduce_max(tf.concat([max_new_tokens, [0]], 0)),
                limits.max_new_tokens,
                "max_new_tokens",
                "max_new_tokens",
            )
        )
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(max_new_tokens >= 0),
                ["max_new_tokens: expected values >= 0, received", max_new_tokens],
            )
        )
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(temperature) & (temperature >= 0)),
                ["temperature: expected finite values >= 0 (0 is greedy), received", temperature],
            )
        )
        return checks

    def sample_loop(prompt, max_new_tokens, temperature, seed):
        """Prompt ids [B, P] right-padded with 0, per-row budgets, temperatures and seeds
        -> generated ids [B, N], lengths, complete. Each row depends on its own inputs only.

        The prompt positions every row has are consumed in one pass of the full layers;
        then each iteration samples one token per row from the current logits and feeds
        one token per row (the rest of a longer prompt, or the token just sampled) through
        the layers' one-step form. Sampled tokens go to a TensorArray, one [B] entry per
        iteration; each row's tokens are gathered from it at the end.
        """
        batch = tf.shape(prompt)[0]
        constrained = automaton is not None
        sequence = tf.concat(
            [tf.tile(tf.constant([record_start], tf.int32), [batch, 1]), prompt], axis=1
        )
        lengths = len(record_start) + tf.reduce_sum(tf.cast(prompt != PAD_ID, tf.int32), axis=1)
        fits = within_context(
            tf.reduce_max(tf.concat([lengths, [0]], 0)),
            "prompt positions (the record's start and the prompt)",
        )
        with tf.control_dependencies(fits):
            sequence = tf.identity(sequence)
        width = tf.shape(sequence)[1]
        max_new = max_new_tokens
        longest = tf.reduce_max(tf.concat([max_new, [0]], 0))
        greedy_rows = temperature <= 0
        # Dividing by the temperature first, masking after: no temperature reaches a
        # masked id (an infinite one only makes the allowed ids equally likely).
        scale = tf.where(greedy_rows, 1.0, temperature)[:, None]
        keys = row_keys(tf, seed)
        common = tf.reduce_min(tf.concat([lengths, [width]], 0))  # prompt every row has
        # A row ends when its context is full: the token at position t is drawn at step
        # t - 1, so the last step draws position context - 1.
        room = [] if context is None else [context - 1]
        logits, first_states = run(sequence[:, :common], zero_states(batch))
        first = common - 1  # the position the first logits are for
        if constrained:
            # The automaton's state after the prompt positions the first pass read; the
            # loop moves it with every token it feeds (the rest of a prompt, or the token
            # sampled). A row whose prompt no valid record starts with goes on in the free
            # state, unconstrained: one request's prompt must not fail the others a
            # server-side batcher merged with it.
            read = common - len(record_start)
            at_first = tf.foldl(
                lambda at, column: _advance_automaton(tf, module.transitions, at, column),
                tf.transpose(prompt[:, :read]),
                initializer=tf.fill([batch], automaton.start),
            )
            walked = tf.foldl(  # the whole prompt (padding leaves a row where it is)
                lambda at, column: tf.where(
                    column == PAD_ID, at, _advance_automaton(tf, module.transitions, at, column)
                ),
                tf.transpose(prompt[:, read:]),
                initializer=at_first,
            )
            held = walked != automaton.states
        else:
            at_first = tf.zeros([batch], tf.int32)
            held = tf.zeros([batch], tf.bool)  # no row is constrained

        def body(t, logits, state_values, drawn_ta, generated, done, complete, at, shares_ta):
            # Greedy rows (T = 0) take the argmax; the others sample softmax(logits / T).
            generating = (t >= lengths - 1) & ~done
            z = logits / scale
            scaled = tf.where(module.allowed, z, -np.inf)
            if constrained:
                # Every kept state allows some id, and so does the free state: no row is
                # left with nothing to sample. The share of probability the rule keeps is
                # written per step, and multiplied over each row's own steps at the end.
                rule = tf.gather(module.rules, at)
                share = tf.reduce_sum(tf.where(rule, tf.nn.softmax(scaled, axis=-1), 0.0), axis=-1)
                shares_ta = shares_ta.write(t - first, share)
                scaled = tf.where(rule, z, -np.inf)
            sampled = tf.where(
                greedy_rows,
                tf.argmax(scaled, axis=-1, output_type=tf.int32),
                sample_rows(tf, scaled, row_uniform(tf, keys, t)),
            )
            writes = generating & (sampled != EOR_ID)
            drawn_ta = drawn_ta.write(t - first, sampled)
            generated = generated + tf.cast(writes, tf.int32)
            finished = generating & (sampled == EOR_ID)
            full = (t + 2 >= context) if context is not None else False
            ended = finished | (generating & ((generated >= max_new) | full))
            next_prompt = tf.gather(sequence, tf.minimum(t + 1, width - 1), axis=1)
            token = tf.where(t + 1 < lengths, next_prompt, sampled)
            if constrained:
                at = _advance_automaton(tf, module.transitions, at, token)
            logits, state_values = advance(token, state_values)
            return (
                t + 1,
                logits,
                state_values,
                drawn_ta,
                generated,
                done | ended,
                complete | finished,
                at,
                shares_ta,
            )

        # No row can need a later step.
        last = tf.reduce_min(tf.stack([tf.reduce_max(lengths) - 1 + longest, *room]))

        def more(t, logits, state_values, drawn_ta, generated, done, complete, at, shares_ta):
            return (t < last) & ~tf.reduce_all(done)

        start = (
            first,
            logits[:, -1, :],
            first_states,
            tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None]),
            tf.zeros([batch], tf.int32),
            max_new <= 0,
            tf.zeros([batch], tf.bool),
            at_first,
            tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[None]),
        )
        shapes = (
            tf.TensorShape([]),
            tf.TensorShape([None, vocab]),
            [tf.TensorShape([None, *st.shape]) for st in states],
            tf.TensorShape(None),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            tf.TensorShape(None),
        )
        _, _, _, drawn_ta, generated, done, complete, _, shares_ta = tf.while_loop(
            more, body, start, shape_invariants=shapes, maximum_iterations=None
        )
        # Row b's k-th token was drawn at step lengths[b] - 1 + k: entry lengths[b] - common + k.
        steps = tf.transpose(drawn_ta.stack())  # [B, iterations]
        steps = tf.concat([steps, tf.zeros([batch, longest], tf.int32)], axis=1)
        offsets = (lengths - common)[:, None] + tf.range(longest)[None, :]
        out = tf.gather(steps, offsets, batch_dims=1)
        out = tf.where(tf.range(longest)[None, :] < generated[:, None], out, 0)
        # complete: ended by <eor>, not a budget; masked: the share of the record's
        # probability (along the path sampled) that the mask removed, over the steps that
        # drew its tokens and its <eor>.
        if not constrained:
            return out, generated, complete, tf.zeros([batch]), held
        shares = tf.transpose(shares_ta.stack())
        shares = tf.concat([shares, tf.ones([batch, longest + 1])], axis=1)
        offsets = (lengths - common)[:, None] + tf.range(longest + 1)[None, :]
        drawn = generated + tf.cast(complete, tf.int32)
        mine = tf.range(longest + 1)[None, :] < drawn[:, None]
        kept = tf.reduce_prod(tf.where(mine, tf.gather(shares, offsets, batch_dims=1), 1.0), 1)
        return out, generated, complete, 1.0 - kept, held

    per_row = [
        tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
        tf.TensorSpec([None], tf.float32, name="temperature"),
        tf.TensorSpec([None], tf.int64, name="seed"),
    ]

    @tf.function(
        input_signature=[tf.TensorSpec([None, None], tf.int32, name="prompt"), *per_row],
        autograph=False,
    )
    def generate(prompt, max_new_tokens, temperature, seed):
        checks = checked_rows(tf.shape(prompt)[0], max_new_tokens, temperature, seed)
        checks.append(
            within(
                tf.shape(prompt)[1], limits.max_prompt_length, "prompt length", "max_prompt_length"
            )
        )
        with tf.control_dependencies(checks):
            prompt, max_new_tokens, temperature, seed = (
                tf.identity(x) for x in (prompt, max_new_tokens, temperature, seed)
            )
        out, lengths, complete, masked, held = sample_loop(
            prompt, max_new_tokens, temperature, seed
        )
        return {
            "tokens": out,
            "lengths": lengths,
            "complete": complete,
            "masked_mass": masked,
            "constrained": held,
        }

    functions = {"serving_default": serving_default, "step": step, "generate": generate}

    if "generate_text" in signatures:
        chars = tokenizer.chars  # type: ignore[union-attr]
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(chars, tf.string), tf.range(2, len(chars) + 2, dtype=tf.int32)
            ),
            default_value=-1,
        )
        module.table = table
        module.vocab = tf.constant(["", "", *chars], tf.string)

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.string, name="prompt"), *per_row],
            autograph=False,
        )
        def generate_text(prompt, max_new_tokens, temperature, seed):
            # Bounds first: the padded prompt (rows x longest row) is at most
            # max_batch x max_prompt_chars before it is built.
            checks = checked_rows(tf.shape(prompt)[0], max_new_tokens, temperature, seed)
            longest = tf.reduce_max(
                tf.concat([tf.strings.length(prompt, unit="UTF8_CHAR"), [0]], 0)
            )
            checks.append(
                within(longest, limits.max_prompt_chars, "prompt characters", "max_prompt_chars")
            )
            with tf.control_dependencies(checks):
                prompt, max_new_tokens, temperature, seed = (
                    tf.identity(x) for x in (prompt, max_new_tokens, temperature, seed)
                )
            pieces = tf.strings.unicode_split(prompt, "UTF-8")
            ids = tf.ragged.map_flat_values(table.lookup, pieces)
            known = tf.debugging.assert_non_negative(
                ids.flat_values,
                message="prompt holds a character the model's vocabulary does not have",
            )
            with tf.control_dependencies([known]):  # check before any lookup uses the ids
                dense = tf.identity(ids.to_tensor(default_value=PAD_ID))
            out, lengths, complete, masked, held = sample_loop(
                dense, max_new_tokens, temperature, seed
            )
            mask = tf.sequence_mask(lengths, tf.shape(out)[1])
            text = tf.strings.reduce_join(tf.where(mask, tf.gather(module.vocab, out), ""), axis=1)
            return {
                "text": prompt + text,
                "complete": complete,
                "masked_mass": masked,
                "constrained": held,
            }

        functions["generate_text"] = generate_text

    return module, {name: functions[name] for name in signatures}


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

"""The module an export saves: the model's weights, its tables and the serving signatures
(serving_default, step, generate, generate_text) as tf.functions of one `tf.Module` class.

`serving_module_class()` makes the class once TensorFlow is imported (importing this
module does not import it). The sampling helpers it uses (row keys, inverse-CDF sampling,
the automaton's tables, the one-token step) live in `compiler.export.signatures`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import numpy as np

from compiler.data.automaton import Automaton
from compiler.data.dataset import start_tokens, unit_of
from compiler.data.tokenizer import EOR_ID, PAD_ID, Tokenizer
from compiler.export.signatures import (
    _advance_automaton,
    allowed_ids,
    one_token_step,
    row_keys,
    row_uniform,
    sample_rows,
    serving_tables,
)
from compiler.lang.checked import CheckedSpec
from compiler.layers.states import POSITION, context_length
from compiler.tf import tensorflow


@dataclasses.dataclass(frozen=True)
class _Graph:
    """What the signatures call, held outside TensorFlow's tracking (a tracked Keras model
    would be saved with every layer's call functions, which the signatures do not need)."""

    model: Any  # the state model: [tokens, *states] -> [logits, *new states]
    states: list[Any]  # the state specs (name, shape, dtype, layer)
    one_token: Optional[Any]  # `one_token_step`, or None
    # The signature functions, by name. Not module attributes either: saved as the
    # SavedModel's signatures only, not a second time as the module's functions.
    functions: dict[str, Any] = dataclasses.field(default_factory=dict)


def _after(checks: list[Any], *values: Any) -> list[Any]:
    """`values`, read only once every check in `checks` has passed."""
    tf = tensorflow()
    with tf.control_dependencies(checks):
        return [tf.identity(x) for x in values]


@functools.cache
def serving_module_class() -> type:
    """The `tf.Module` class of an export (made once TensorFlow is imported)."""
    tf = tensorflow()

    class ServingModule(tf.Module):
        """The model's weights, tokenizer assets and tables, and the serving signatures.

        With an `automaton` (compiled from the run's validators), `generate` and
        `generate_text` mask, before every sample, the tokens that would break the
        record's rules, and report per row the probability mass the mask removed.

        `exported` holds the tf.functions to export as signatures.
        """

        def __init__(
            self,
            model: Any,
            states: list[Any],
            spec: CheckedSpec,
            tokenizer: Optional[Tokenizer],
            signatures: list[str],
            tokenizer_files: list[str],
            automaton: Optional[Automaton] = None,
            record_start: Optional[list[int]] = None,
        ) -> None:
            super().__init__(name="serving")
            self._graph = _Graph(model, list(states), one_token_step(tf, model, states, spec))
            self._input = spec.input.name
            self._vocab = spec.input.vocab_size
            self._limits = spec.export.limits
            # A model that places tokens (a position table, an attention cache) holds
            # `context` positions: a request that needs more fails at once, naming it.
            self._context = context_length(spec)
            self._automaton = automaton
            # What a record's first token follows.
            self._record_start = (
                list(start_tokens(unit_of(spec))) if record_start is None else record_start
            )
            # The variables only, not the Keras model (see `_Graph`).
            self.weights = list(model.weights)
            self.assets = [tf.saved_model.Asset(path) for path in tokenizer_files]
            self.allowed = tf.constant(allowed_ids(spec, tokenizer))
            if automaton is not None:
                transitions, rules = serving_tables(automaton, allowed_ids(spec, tokenizer))
                self.transitions, self.rules = tf.constant(transitions), tf.constant(rules)
            tokens = tf.TensorSpec([None, None], tf.int32, name=self._input)
            state_specs = [
                tf.TensorSpec([None, *st.shape], st.dtype, name=st.name) for st in states
            ]
            per_row = [
                tf.TensorSpec([None], tf.int32, name="max_new_tokens"),
                tf.TensorSpec([None], tf.float32, name="temperature"),
                tf.TensorSpec([None], tf.int64, name="seed"),
            ]
            made = {
                "serving_default": tf.function(
                    self._serving_default, input_signature=[tokens], autograph=False
                ),
                "step": tf.function(
                    self._step, input_signature=[tokens, state_specs], autograph=False
                ),
                "generate": tf.function(
                    self._generate,
                    input_signature=[tf.TensorSpec([None, None], tf.int32, name="prompt")]
                    + per_row,
                    autograph=False,
                ),
            }
            if "generate_text" in signatures:
                chars = tokenizer.chars  # type: ignore[union-attr]
                self.table = tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant(chars, tf.string),
                        tf.range(2, len(chars) + 2, dtype=tf.int32),
                    ),
                    default_value=-1,
                )
                self.vocab = tf.constant(["", "", *chars], tf.string)
                made["generate_text"] = tf.function(
                    self._generate_text,
                    input_signature=[tf.TensorSpec([None], tf.string, name="prompt")] + per_row,
                    autograph=False,
                )
            self._graph.functions.update((name, made[name]) for name in signatures)

        @property
        def exported(self) -> dict[str, Any]:
            """The tf.functions to export as signatures, by name, in `signatures`' order."""
            return dict(self._graph.functions)

        # ------------------------------------------------------------ request checks

        def _within(self, value: Any, limit: int, what: str, field: str) -> Any:
            """An assertion that `value` (a scalar) is at most `limit`, naming the limit."""
            return tf.debugging.Assert(
                value <= limit,
                [f"{what}: expected at most export.limits.{field} = {limit}, received", value],
            )

        def _checked_tokens(self, tokens: Any, what: str) -> list[Any]:
            shape, limits = tf.shape(tokens), self._limits
            return [
                self._within(shape[0], limits.max_batch, f"{what} rows", "max_batch"),
                self._within(
                    shape[1], limits.max_prompt_length, f"{what} length", "max_prompt_length"
                ),
            ]

        def _within_context(self, last: Any, what: str) -> list[Any]:
            if self._context is None:
                return []
            return [
                tf.debugging.Assert(
                    last <= self._context,
                    [
                        f"{what}: expected at most the model's context of {self._context} "
                        "positions (its position_embedding's sequence_length, or "
                        "training.sequence_length), received",
                        last,
                    ],
                )
            ]

        def _checked_rows(self, prompt_rows, max_new_tokens, temperature, seed) -> list[Any]:
            """Per-row inputs: one value per prompt row, in range, before anything is built."""
            limits = self._limits
            checks = [self._within(prompt_rows, limits.max_batch, "prompt rows", "max_batch")]
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
                self._within(
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
                    [
                        "temperature: expected finite values >= 0 (0 is greedy), received",
                        temperature,
                    ],
                )
            )
            return checks

        # ------------------------------------------------------------ the model

        def _zero_states(self, batch: Any) -> list[Any]:
            return [tf.zeros([batch, *st.shape], st.dtype) for st in self._graph.states]

        def _run(self, tokens: Any, state_values: list[Any]) -> tuple[Any, list[Any]]:
            outputs = self._graph.model([tokens, *state_values], training=False)
            if not self._graph.states:
                outputs = [outputs]
            return outputs[0], list(outputs[1:])

        def _advance(self, token: Any, state_values: list[Any]) -> tuple[Any, list[Any]]:
            """Logits [B, V] and states after one more token per row."""
            if self._graph.one_token is not None:
                return self._graph.one_token(token, state_values)
            logits, new_states = self._run(token[:, None], state_values)
            return logits[:, -1, :], new_states

        # ------------------------------------------------------------ signatures

        def _serving_default(self, tokens):
            checks = self._checked_tokens(tokens, self._input)
            checks += self._within_context(tf.shape(tokens)[1], f"{self._input} length")
            with tf.control_dependencies(checks):
                tokens = tf.identity(tokens)
            logits, _ = self._run(tokens, self._zero_states(tf.shape(tokens)[0]))
            return {"logits": logits, "next_token_probs": tf.nn.softmax(logits[:, -1, :])}

        def _step(self, tokens, state_values):
            name = self._input
            checks = self._checked_tokens(tokens, name)
            rows = tf.shape(tokens)[0]
            for st, value in zip(self._graph.states, state_values):
                checks.append(
                    tf.debugging.Assert(
                        tf.shape(value)[0] == rows,
                        [
                            f"{st.name}: expected as many rows as {name}, received",
                            tf.shape(value)[0],
                            f"rows for {name}'s",
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
                    checks += self._within_context(
                        tf.reduce_max(tf.concat([value, [0]], 0)) + tf.shape(tokens)[1],
                        f"{POSITION} + {name} length",
                    )
            with tf.control_dependencies(checks):
                tokens = tf.identity(tokens)
            logits, new_states = self._run(tokens, list(state_values))
            out = {"logits": logits}
            out.update({st.name: value for st, value in zip(self._graph.states, new_states)})
            return out

        def _generate(self, prompt, max_new_tokens, temperature, seed):
            checks = self._checked_rows(tf.shape(prompt)[0], max_new_tokens, temperature, seed)
            checks.append(
                self._within(
                    tf.shape(prompt)[1],
                    self._limits.max_prompt_length,
                    "prompt length",
                    "max_prompt_length",
                )
            )
            prompt, max_new_tokens, temperature, seed = _after(
                checks, prompt, max_new_tokens, temperature, seed
            )
            out, lengths, complete, masked, held = self._sample_loop(
                prompt, max_new_tokens, temperature, seed
            )
            return {
                "tokens": out,
                "lengths": lengths,
                "complete": complete,
                "masked_mass": masked,
                "constrained": held,
            }

        def _generate_text(self, prompt, max_new_tokens, temperature, seed):
            # Bounds first: the padded prompt (rows x longest row) is at most
            # max_batch x max_prompt_chars before it is built.
            checks = self._checked_rows(tf.shape(prompt)[0], max_new_tokens, temperature, seed)
            longest = tf.reduce_max(
                tf.concat([tf.strings.length(prompt, unit="UTF8_CHAR"), [0]], 0)
            )
            checks.append(
                self._within(
                    longest,
                    self._limits.max_prompt_chars,
                    "prompt characters",
                    "max_prompt_chars",
                )
            )
            prompt, max_new_tokens, temperature, seed = _after(
                checks, prompt, max_new_tokens, temperature, seed
            )
            pieces = tf.strings.unicode_split(prompt, "UTF-8")
            ids = tf.ragged.map_flat_values(self.table.lookup, pieces)
            known = tf.debugging.assert_non_negative(
                ids.flat_values,
                message="prompt holds a character the model's vocabulary does not have",
            )
            with tf.control_dependencies([known]):  # check before any lookup uses the ids
                dense = tf.identity(ids.to_tensor(default_value=PAD_ID))
            out, lengths, complete, masked, held = self._sample_loop(
                dense, max_new_tokens, temperature, seed
            )
            mask = tf.sequence_mask(lengths, tf.shape(out)[1])
            text = tf.strings.reduce_join(tf.where(mask, tf.gather(self.vocab, out), ""), axis=1)
            return {
                "text": prompt + text,
                "complete": complete,
                "masked_mass": masked,
                "constrained": held,
            }

        # ------------------------------------------------------------ the sampling loop

        def _sample_loop(self, prompt, max_new_tokens, temperature, seed):
            """Prompt ids [B, P] right-padded with 0, per-row budgets, temperatures and
            seeds -> generated ids [B, N], lengths, complete, masked mass, constrained.
            Each row depends on its own inputs only.

            The prompt positions every row has are consumed in one pass of the full
            layers; then each iteration samples one token per row from the current logits
            and feeds one token per row (the rest of a longer prompt, or the token just
            sampled) through the layers' one-step form. Sampled tokens go to a
            TensorArray, one [B] entry per iteration; each row's tokens are gathered from
            it at the end.
            """
            automaton, context = self._automaton, self._context
            record_start = self._record_start
            batch = tf.shape(prompt)[0]
            constrained = automaton is not None
            sequence = tf.concat(
                [tf.tile(tf.constant([record_start], tf.int32), [batch, 1]), prompt], axis=1
            )
            lengths = len(record_start) + tf.reduce_sum(tf.cast(prompt != PAD_ID, tf.int32), axis=1)
            fits = self._within_context(
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
            # A row ends when its context is full: the token at position t is drawn at
            # step t - 1, so the last step draws position context - 1.
            room = [] if context is None else [context - 1]
            logits, first_states = self._run(sequence[:, :common], self._zero_states(batch))
            first = common - 1  # the position the first logits are for
            if constrained:
                # The automaton's state after the prompt positions the first pass read; the
                # loop moves it with every token it feeds (the rest of a prompt, or the
                # token sampled). A row whose prompt no valid record starts with goes on in
                # the free state, unconstrained: one request's prompt must not fail the
                # others a server-side batcher merged with it.
                read = common - len(record_start)
                at_first = tf.foldl(
                    lambda at, column: _advance_automaton(tf, self.transitions, at, column),
                    tf.transpose(prompt[:, :read]),
                    initializer=tf.fill([batch], automaton.start),
                )
                walked = tf.foldl(  # the whole prompt (padding leaves a row where it is)
                    lambda at, column: tf.where(
                        column == PAD_ID,
                        at,
                        _advance_automaton(tf, self.transitions, at, column),
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
                scaled = tf.where(self.allowed, z, -np.inf)
                if constrained:
                    # Every kept state allows some id, and so does the free state: no row
                    # is left with nothing to sample. The share of probability the rule
                    # keeps is written per step, and multiplied over each row's own steps
                    # at the end.
                    rule = tf.gather(self.rules, at)
                    share = tf.reduce_sum(
                        tf.where(rule, tf.nn.softmax(scaled, axis=-1), 0.0), axis=-1
                    )
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
                    at = _advance_automaton(tf, self.transitions, at, token)
                logits, state_values = self._advance(token, state_values)
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
                tf.TensorShape([None, self._vocab]),
                [tf.TensorShape([None, *st.shape]) for st in self._graph.states],
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
            # Row b's k-th token was drawn at step lengths[b] - 1 + k: entry
            # lengths[b] - common + k.
            steps = tf.transpose(drawn_ta.stack())  # [B, iterations]
            steps = tf.concat([steps, tf.zeros([batch, longest], tf.int32)], axis=1)
            offsets = (lengths - common)[:, None] + tf.range(longest)[None, :]
            out = tf.gather(steps, offsets, batch_dims=1)
            out = tf.where(tf.range(longest)[None, :] < generated[:, None], out, 0)
            # complete: ended by <eor>, not a budget; masked: the share of the record's
            # probability (along the path sampled) that the mask removed, over the steps
            # that drew its tokens and its <eor>.
            if not constrained:
                return out, generated, complete, tf.zeros([batch]), held
            shares = tf.transpose(shares_ta.stack())
            shares = tf.concat([shares, tf.ones([batch, longest + 1])], axis=1)
            offsets = (lengths - common)[:, None] + tf.range(longest + 1)[None, :]
            drawn = generated + tf.cast(complete, tf.int32)
            mine = tf.range(longest + 1)[None, :] < drawn[:, None]
            kept = tf.reduce_prod(tf.where(mine, tf.gather(shares, offsets, batch_dims=1), 1.0), 1)
            return out, generated, complete, 1.0 - kept, held

    return ServingModule

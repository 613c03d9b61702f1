"""position_embedding: a learned vector per position, added to the features.

Keras 2 has no such layer, so keraspec defines one (`PositionEmbedding`, registered as
`keraspec>PositionEmbedding`, so that a compiled model's JSON loads with
`tf_keras.models.model_from_json` once `compiler.custom_objects()` has run). Position `t`
of a sequence gets row `t` of the table; the serving signatures pass each row's first
position (`position`), so that a token fed alone gets the row of its place in the record.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Optional

from pydantic import Field

from compiler.layers import per_example as pe
from compiler.layers.base import Context, Initializer, LayerBase, PositiveInt, Shape, Weight
from compiler.tf import tensorflow, tf_keras


class PositionEmbeddingLayer(LayerBase):
    """A learned embedding of each position, added to the input features."""

    keras_class = "PositionEmbedding"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "position_embedding", "sequence_length": 8},
        {"type": "dense", "name": "logits", "units": 12},
    )
    uses_position = True

    type: Literal["position_embedding"]
    """The layer type: position_embedding."""
    sequence_length: Optional[PositiveInt] = Field(
        None,
        description="Positions the table covers; defaults to input.sequence_length and "
        "must be at least that.",
    )
    embeddings_initializer: Initializer = "uniform"
    """Initializer of the position table."""

    def with_defaults(self, input: Any) -> "PositionEmbeddingLayer":
        if self.sequence_length is not None or input.sequence_length is None:
            return self
        return self.model_copy(update={"sequence_length": input.sequence_length})

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        (shape,) = inputs
        if self.sequence_length is None:
            ctx.error(
                ("sequence_length",),
                "position_length",
                "expected a sequence_length here or a fixed input.sequence_length (the "
                "positions the table covers), received neither",
            )
            return None
        if (
            ctx.input.sequence_length is not None
            and self.sequence_length < ctx.input.sequence_length
        ):
            ctx.error(
                ("sequence_length",),
                "position_length",
                f"expected sequence_length >= input.sequence_length = "
                f"{ctx.input.sequence_length} (every position needs a row), received "
                f"{self.sequence_length}",
            )
        if len(shape) != 3:
            ctx.error(
                (),
                "position_input_rank",
                "expected a sequence of shape (batch, time, features) for "
                f"position_embedding, received shape {shape}" + ctx.upstream_hint(),
            )
            return None
        return shape

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        return [("embeddings", (self.sequence_length, output[-1]))]

    def context_length(self) -> Optional[int]:
        return self.sequence_length

    def time_axis_hint(self) -> Optional[str]:
        return ""

    def steps_alone(self) -> bool:
        return False  # a position's row depends on where the token is

    def steps_as_sequence(self) -> bool:
        return True

    @classmethod
    def custom_keras_class(cls) -> type:
        return keras_layer_class()

    def call_with_state(
        self, keras_layer: Any, x: Any, states: list[Any], position: Any
    ) -> tuple[Any, list[Any]]:
        return keras_layer(x, position=position), []

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        # Every example adds the same rows 0..T-1: its gradient for row t is its own
        # gradient at position t, so its squared norm is the sum over positions.
        tf = tensorflow()
        steps = tf.shape(x)[1]
        rows = tf.stop_gradient(layer.embeddings)[:steps]
        out = x + rows[None]
        probe = pe.probe(tape, out)
        out = out + probe

        def squared_norms(grads: list[Any]) -> Any:
            return tf.reduce_sum(tf.square(grads[0]), axis=[1, 2])

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            summed = tf.reduce_sum(pe.scaled(grads[0], factors), axis=0)  # [T, D]
            table = layer.embeddings.shape[0]
            return [tf.pad(summed, [[0, table - steps], [0, 0]])]

        return out, pe.Term([layer.embeddings], [probe], squared_norms, clipped_sum)


@functools.cache
def keras_layer_class() -> type:
    """The Keras layer: `x + table[position + t]` for each row's first `position` (0 when
    not given)."""
    tf, keras = tensorflow(), tf_keras()

    @keras.utils.register_keras_serializable(package="keraspec")
    class PositionEmbedding(keras.layers.Layer):
        def __init__(
            self, sequence_length: int, embeddings_initializer: str = "uniform", **kwargs: Any
        ) -> None:
            super().__init__(**kwargs)
            self.sequence_length = sequence_length
            self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

        def build(self, input_shape: Any) -> None:
            self.embeddings = self.add_weight(
                name="embeddings",
                shape=(self.sequence_length, int(input_shape[-1])),
                initializer=self.embeddings_initializer,
                trainable=True,
            )
            super().build(input_shape)

        def call(self, inputs: Any, position: Any = None) -> Any:
            steps = tf.shape(inputs)[1]
            if position is None:
                rows = self.embeddings[:steps][None]
            else:
                where = tf.cast(position, tf.int32)[:, None] + tf.range(steps)[None, :]
                rows = tf.gather(self.embeddings, where)
            return inputs + tf.cast(rows, inputs.dtype)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "sequence_length": self.sequence_length,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }

    return PositionEmbedding

"""embedding: token ids to dense vectors (tf_keras.layers.Embedding)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from compiler.layers import per_example as pe
from compiler.layers.base import Context, Initializer, LayerBase, PositiveInt, Shape, Weight
from compiler.tf import tensorflow


class EmbeddingLayer(LayerBase):
    """tf_keras.layers.Embedding: token ids to dense vectors."""

    reads_tokens = True
    keras_class = "Embedding"
    keras_fixed = {"input_length": (None,), "sparse": (False,)}
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["embedding"]
    """The layer type: embedding."""
    output_dim: PositiveInt = Field(description="Size of each embedding vector.")
    input_dim: Optional[PositiveInt] = Field(
        None,
        description="Number of rows; defaults to input.vocab_size and must be at least that.",
    )
    embeddings_initializer: Initializer = "uniform"
    """Initializer of the embedding matrix (Keras `embeddings_initializer`)."""
    mask_zero: bool = False
    """Treat id 0 (padding) as masked for the layers after (Keras `mask_zero`)."""

    def with_defaults(self, input: Any) -> "EmbeddingLayer":
        if self.input_dim is not None:
            return self
        return self.model_copy(update={"input_dim": input.vocab_size})

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        if self.input_dim < ctx.input.vocab_size:
            ctx.error(
                ("input_dim",),
                "vocab_size",
                f"expected input_dim >= input.vocab_size = {ctx.input.vocab_size}, "
                f"received {self.input_dim} (larger token ids would be out of range)",
            )
        return inputs[0] + (self.output_dim,)

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        return [("embeddings", (self.input_dim, self.output_dim))]

    def fast_dp_problems(self) -> list[tuple[str, Any, str, str]]:
        if self.mask_zero:
            hint = "keraspec train masks padding with per-token loss weights instead"
            return [("mask_zero", True, "false", hint)]
        return []

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        # Each example's gradient touches the rows of its ids (pe.embedding_squared_norms).
        tf = tensorflow()
        ids = tf.cast(x, "int32")
        table = layer.embeddings
        out = tf.nn.embedding_lookup(tf.stop_gradient(table), ids)
        probe = pe.probe(tape, out)
        out = out + probe
        width = table.shape[1]

        def squared_norms(grads: list[Any]) -> Any:
            return pe.embedding_squared_norms(pe.flat_rows(grads[0], width), ids)

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            g = pe.flat_rows(pe.scaled(grads[0], factors), width)
            return [tf.math.unsorted_segment_sum(g, tf.reshape(ids, [-1]), table.shape[0])]

        return out, pe.Term([table], [probe], squared_norms, clipped_sum)

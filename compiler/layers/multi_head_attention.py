"""multi_head_attention: self-attention over the sequence, causal for decoders.

The Keras layer is keraspec's own (`SelfAttention`, registered as `keraspec>SelfAttention`):
tf_keras.layers.MultiHeadAttention takes the query and the value as two inputs and keeps
its projections in sublayers it builds on first call, while a spec layer takes one input,
and the serving signatures need the projections to extend a cache. The arithmetic is
Keras's (`EinsumDense` projections to `[batch, time, heads, key_dim]`, the query scaled by
`1/sqrt(key_dim)`, softmax over the keys, dropout on the probabilities, an output
projection back to the input's width), and so is the parameter count.

Serving: `call(x, cache=(keys, values), position=p)` attends from the new tokens to the
cache's first `p` positions and to themselves, and returns the cache with their keys and
values written at `p, p + 1, ...`. The cache holds the model's context (`[batch, context,
heads, key_dim]`), so one token costs one projection and one pass over the cache: the
prefix is never recomputed.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, Optional

from pydantic import Field

from compiler.layers import per_example as pe
from compiler.layers.base import (
    Context,
    Initializer,
    LayerBase,
    PositiveInt,
    Rate,
    Shape,
    Weight,
    fmt_shape,
)
from compiler.tf import tensorflow, tf_keras


class MultiHeadAttentionLayer(LayerBase):
    """Self-attention (tf_keras.layers.MultiHeadAttention with query = value = the input)."""

    keras_class = "SelfAttention"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "multi_head_attention", "num_heads": 2},
        {"type": "dense", "name": "logits", "units": 12},
    )
    uses_position = True

    type: Literal["multi_head_attention"]
    """The layer type: multi_head_attention."""
    num_heads: PositiveInt
    """Number of attention heads."""
    key_dim: Optional[PositiveInt] = Field(
        None,
        description="Size of each head's query and key; defaults to the input's width / "
        "num_heads (which must then divide it).",
    )
    value_dim: Optional[PositiveInt] = Field(
        None, description="Size of each head's value; defaults to key_dim."
    )
    dropout: Rate = 0.0
    """Dropout on the attention probabilities, in [0, 1)."""
    use_bias: bool = True
    """Add biases to the four projections."""
    causal: bool = Field(
        True,
        description="Each position attends only to itself and earlier ones: a decoder. "
        "false lets a position see later tokens, which the next-token loss and the "
        "generation signatures cannot use.",
    )
    kernel_initializer: Initializer = "glorot_uniform"
    """Initializer of the projection kernels."""
    bias_initializer: Initializer = "zeros"
    """Initializer of the projection biases."""

    # ----------------------------------------------------------------- static analysis

    def dims(self, width: int) -> tuple[int, int]:
        """(key_dim, value_dim) for an input `width` wide."""
        key = self.key_dim or width // self.num_heads
        return key, self.value_dim or key

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        (shape,) = inputs
        if len(shape) != 3:
            ctx.error(
                (),
                "attention_input_rank",
                "expected a sequence of shape (batch, time, features) for "
                f"multi_head_attention, received shape {fmt_shape(shape)}" + ctx.upstream_hint(),
            )
            return None
        width = shape[-1]
        if self.key_dim is None and width is not None and width % self.num_heads:
            ctx.error(
                ("num_heads",),
                "heads_divide_width",
                f"expected num_heads to divide the input's width {width} (each head "
                f"gets width / num_heads), received {self.num_heads}; or set key_dim",
            )
            return None
        if not self.causal:
            ctx.warn(
                ("causal",),
                "not_causal",
                "expected causal: true for a model trained to predict the next token, "
                "received false: each position sees the tokens after it, so training "
                "learns to copy them, and the model cannot generate",
            )
        return shape

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        width = inputs[0][-1]
        key, value = self.dims(width)
        h = self.num_heads
        out: list[Weight] = []
        for name, per_head in (("query", key), ("key", key), ("value", value)):
            out.append((f"{name}/kernel", (width, h, per_head)))
            if self.use_bias:
                out.append((f"{name}/bias", (h, per_head)))
        out.append(("attention_output/kernel", (h, value, width)))
        if self.use_bias:
            out.append(("attention_output/bias", (width,)))
        return out

    def states(self, inputs: list[Shape], context: int) -> list[tuple[str, Shape]]:
        key, value = self.dims(inputs[0][-1])
        return [
            ("key", (context, self.num_heads, key)),
            ("value", (context, self.num_heads, value)),
        ]

    def call_with_state(
        self, keras_layer: Any, x: Any, states: list[Any], position: Any
    ) -> tuple[Any, list[Any]]:
        out, keys, values = keras_layer(x, cache=states, position=position)
        return out, [keys, values]

    def activation_width(self, inputs: list[Shape], sequence_length: int) -> int:
        # Queries, keys, values and the heads' outputs; each head's scores and
        # probabilities over the sequence.
        key, value = self.dims(inputs[0][-1])
        return self.num_heads * (2 * key + 2 * value + 2 * sequence_length)

    def is_causal(self) -> bool:
        return self.causal

    def time_axis_hint(self) -> Optional[str]:
        return ""

    def steps_alone(self) -> bool:
        return False  # a position attends to the ones before it

    def steps_as_sequence(self) -> bool:
        return True

    @classmethod
    def custom_keras_class(cls) -> type:
        return keras_layer_class()

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        # Four weight products on the last axis, each probed as a dense layer's is: the
        # query, key and value projections of x, and the output projection of the heads.
        tf = tensorflow()
        width = x.shape[-1]
        heads, key_dim, value_dim = layer.num_heads, layer.head_dims[0], layer.head_dims[1]
        probes = []

        def project(a: Any, kernel: Any, bias: Optional[Any], shape: list[int]) -> Any:
            z, probe = pe.probed_product(tape, a, kernel, bias)
            probes.append(probe)
            return tf.reshape(z, [tf.shape(a)[0], tf.shape(a)[1], *shape])

        w = layer.projection_weights()
        q = project(x, w["query"][0], w["query"][1], [heads, key_dim])
        k = project(x, w["key"][0], w["key"][1], [heads, key_dim])
        v = project(x, w["value"][0], w["value"][1], [heads, value_dim])
        heads_out = layer.attend(q, k, v, training=training)
        merged = tf.reshape(heads_out, [tf.shape(x)[0], tf.shape(x)[1], heads * value_dim])
        out = project(merged, w["attention_output"][0], w["attention_output"][1], [width])
        out = tf.reshape(out, tf.shape(x))
        out.set_shape(x.shape)
        inputs = [x, x, x, merged]
        use_bias = layer.use_bias

        def squared_norms(grads: list[Any]) -> Any:
            return tf.add_n(
                [pe.product_squared_norms(a, g, bias=use_bias) for a, g in zip(inputs, grads)]
            )

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            sums = []
            for (kernel, bias), a, g in zip(w.values(), inputs, grads):
                g = pe.scaled(g, factors)
                sums.append(tf.reshape(pe.product_sum(a, g), kernel.shape))
                if use_bias:
                    sums.append(tf.reshape(tf.reduce_sum(g, axis=[0, 1]), bias.shape))
            return sums

        variables = [v for pair in w.values() for v in pair if v is not None]
        return out, pe.Term(variables, probes, squared_norms, clipped_sum)


@functools.cache
def keras_layer_class() -> type:
    """The Keras layer: self-attention with Keras MultiHeadAttention's arithmetic, and a
    cached form for the serving signatures."""
    tf, keras = tensorflow(), tf_keras()

    @keras.utils.register_keras_serializable(package="keraspec")
    class SelfAttention(keras.layers.Layer):
        def __init__(
            self,
            num_heads: int,
            key_dim: Optional[int] = None,
            value_dim: Optional[int] = None,
            dropout: float = 0.0,
            use_bias: bool = True,
            causal: bool = True,
            kernel_initializer: Any = "glorot_uniform",
            bias_initializer: Any = "zeros",
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.num_heads = num_heads
            self.key_dim, self.value_dim = key_dim, value_dim
            self.dropout = dropout
            self.use_bias = use_bias
            self.causal = causal
            self.kernel_initializer = keras.initializers.get(kernel_initializer)
            self.bias_initializer = keras.initializers.get(bias_initializer)
            self.dropout_layer = keras.layers.Dropout(dropout)
            self.supports_masking = False

        def build(self, input_shape: Any) -> None:
            width = int(input_shape[-1])
            key = self.key_dim or width // self.num_heads
            value = self.value_dim or key
            self.head_dims = (key, value)
            h = self.num_heads
            shapes = {
                "query": ((width, h, key), (h, key)),
                "key": ((width, h, key), (h, key)),
                "value": ((width, h, value), (h, value)),
                "attention_output": ((h, value, width), (width,)),
            }
            kernels, biases = {}, {}
            for name, (kernel, bias) in shapes.items():
                # Named as Keras MultiHeadAttention's sublayers name theirs.
                kernels[name] = self.add_weight(
                    name=f"{name}/kernel",
                    shape=kernel,
                    initializer=self._clone(self.kernel_initializer),
                    trainable=True,
                )
                if self.use_bias:
                    biases[name] = self.add_weight(
                        name=f"{name}/bias",
                        shape=bias,
                        initializer=self._clone(self.bias_initializer),
                        trainable=True,
                    )
            self.kernels, self.biases = kernels, biases
            super().build(input_shape)

        @staticmethod
        def _clone(initializer: Any) -> Any:
            # Keras MultiHeadAttention gives each projection its own initializer instance.
            return initializer.__class__.from_config(initializer.get_config())

        def projection_weights(self) -> dict[str, tuple[Any, Optional[Any]]]:
            return {name: (self.kernels[name], self.biases.get(name)) for name in self.kernels}

        def _project(self, x: Any, name: str) -> Any:
            y = tf.einsum("btd,dhk->bthk", x, self.kernels[name])
            return y + self.biases[name] if name in self.biases else y

        def attend(
            self, q: Any, k: Any, v: Any, training: Any = None, mask: Optional[Any] = None
        ) -> Any:
            """Heads' outputs [B, Tq, H, V] from q [B, Tq, H, K] over k, v [B, Tk, H, *].

            `mask` [B, Tq, Tk] says which keys each query sees; None: causal (query t sees
            keys 0..t) or all of them."""
            q = q * (1.0 / math.sqrt(float(self.head_dims[0])))
            scores = tf.einsum("bshk,bthk->bhts", k, q)  # [B, H, Tq, Tk]
            if mask is None and self.causal:
                tq, tk = tf.shape(q)[1], tf.shape(k)[1]
                mask = tf.linalg.band_part(tf.ones([tq, tk], tf.bool), -1, 0)[None]
            if mask is not None:
                # Keras' masked softmax: -1e9 where masked.
                scores = scores + (1.0 - tf.cast(mask[:, None], scores.dtype)) * -1e9
            probs = tf.nn.softmax(scores, axis=-1)
            probs = self.dropout_layer(probs, training=training)
            return tf.einsum("bhts,bshv->bthv", probs, v)

        def _output(self, heads: Any) -> Any:
            y = tf.einsum("bthv,hvd->btd", heads, self.kernels["attention_output"])
            return y + self.biases["attention_output"] if self.use_bias else y

        def call(
            self, inputs: Any, training: Any = None, cache: Any = None, position: Any = None
        ) -> Any:
            q = self._project(inputs, "query")
            k = self._project(inputs, "key")
            v = self._project(inputs, "value")
            if cache is None:
                return self._output(self.attend(q, k, v, training=training))
            keys, values = cache
            context, steps = tf.shape(keys)[1], tf.shape(inputs)[1]
            at = tf.cast(position, tf.int32)[:, None] + tf.range(steps)[None, :]  # [B, T]
            slots = tf.one_hot(at, context, dtype=keys.dtype)  # [B, T, L]
            kept = 1.0 - tf.reduce_sum(slots, axis=1)[:, :, None, None]
            keys = keys * kept + tf.einsum("btl,bthk->blhk", slots, k)
            values = values * kept + tf.einsum("btl,bthv->blhv", slots, v)
            # Query t sees the cache up to its own position (all of it when not causal,
            # which the generation signatures refuse).
            last = at if self.causal else at[:, -1:]
            visible = tf.range(context)[None, None, :] <= last[:, :, None]
            out = self._output(self.attend(q, keys, values, training=False, mask=visible))
            return out, keys, values

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "causal": self.causal,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }

    return SelfAttention

"""conv1d: a convolution along time (tf_keras.layers.Conv1D), causal for decoders.

With causal padding, position t sees positions t - (kernel_size - 1) * dilation_rate .. t.
Served one token at a time, the layer keeps those earlier inputs as its state (`window`,
`[batch, (kernel_size - 1) * dilation_rate, features]`): a step convolves the window and
the new tokens, and returns the window's last positions.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from compiler.layers import per_example as pe
from compiler.layers.base import (
    Activation,
    Context,
    Initializer,
    LayerBase,
    PositiveInt,
    Shape,
    Weight,
    fmt_shape,
)
from compiler.tf import tensorflow


class Conv1DLayer(LayerBase):
    """tf_keras.layers.Conv1D along the time axis, stride 1 (one output per position)."""

    keras_class = "Conv1D"
    keras_fixed = {"strides": (1, [1]), "data_format": ("channels_last",), "groups": (1,)}
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "conv1d", "filters": 5, "kernel_size": 3},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["conv1d"]
    """The layer type: conv1d."""
    filters: PositiveInt
    """Output features per position."""
    kernel_size: PositiveInt
    """Positions each output reads."""
    dilation_rate: PositiveInt = 1
    """Spacing of the positions read."""
    padding: Literal["causal", "same"] = "causal"
    """causal: position t reads t and earlier (a decoder); same: centred on t, which lets a
    position see later tokens (the next-token loss and generation cannot use it)."""
    activation: Activation = "linear"
    """Activation of the output."""
    use_bias: bool = True
    """Add a bias vector."""
    kernel_initializer: Initializer = "glorot_uniform"
    """Initializer of the kernel."""
    bias_initializer: Initializer = "zeros"
    """Initializer of the bias."""

    def span(self) -> int:
        """Earlier positions an output reads."""
        return (self.kernel_size - 1) * self.dilation_rate

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        (shape,) = inputs
        if len(shape) != 3:
            ctx.error(
                (),
                "conv_input_rank",
                "expected a sequence of shape (batch, time, features) for conv1d, "
                f"received shape {fmt_shape(shape)}" + ctx.upstream_hint(),
            )
            return None
        if self.padding != "causal" and self.span():
            ctx.warn(
                ("padding",),
                "not_causal",
                "expected padding: causal for a model trained to predict the next "
                "token, received same: each position sees the tokens after it, so "
                "training learns to copy them, and the model cannot generate",
            )
        return shape[:-1] + (self.filters,)

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        bias = [("bias", (self.filters,))] if self.use_bias else []
        return [("kernel", (self.kernel_size, inputs[0][-1], self.filters))] + bias

    def states(self, inputs: list[Shape], context: int) -> list[tuple[str, Shape]]:
        return [("window", (self.span(), inputs[0][-1]))] if self.span() else []

    def output_activation(self) -> Optional[str]:
        return self.activation

    def is_causal(self) -> bool:
        return self.padding == "causal" or not self.span()

    def time_axis_hint(self) -> Optional[str]:
        return ""

    def steps_alone(self) -> bool:
        return False  # Keras' Conv1D takes sequences only, even at kernel_size 1

    def steps_as_sequence(self) -> bool:
        return True

    def keras_kwargs(self) -> dict[str, Any]:
        return {**super().keras_kwargs(), "strides": 1}

    def call_with_state(
        self, keras_layer: Any, x: Any, states: list[Any], position: Any
    ) -> tuple[Any, list[Any]]:
        if not states:
            return keras_layer(x), []
        tf = tensorflow()
        # The window and the new positions through the layer itself; with causal padding
        # the new positions' outputs read exactly the window and the new inputs.
        joined = tf.concat([states[0], x], axis=1)
        return keras_layer(joined)[:, self.span() :], [joined[:, -self.span() :]]

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        # A convolution is a product of each position's receptive field (the k inputs it
        # reads, side by side) with the kernel flattened to [k * features, filters].
        tf = tensorflow()
        kernel = layer.kernel
        k, fan_in, filters = kernel.shape
        a = receptive_fields(layer, x)  # [B, T, k * fan_in]
        z, probe = pe.probed_product(
            tape,
            a,
            tf.reshape(kernel, [k * fan_in, filters]),
            layer.bias if layer.use_bias else None,
        )
        z.set_shape(x.shape[:-1].concatenate([filters]))
        out = layer.activation(z) if layer.activation is not None else z

        def squared_norms(grads: list[Any]) -> Any:
            return pe.product_squared_norms(a, grads[0], bias=layer.use_bias)

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            g = pe.scaled(grads[0], factors)
            sums = [tf.reshape(pe.product_sum(a, g), kernel.shape)]
            if layer.use_bias:
                sums.append(tf.reduce_sum(g, axis=[0, 1]))
            return sums

        variables = [kernel] + ([layer.bias] if layer.use_bias else [])
        return out, pe.Term(variables, [probe], squared_norms, clipped_sum)


def receptive_fields(layer: Any, x: Any) -> Any:
    """[B, T, k * features]: each output position's inputs, oldest first (the kernel's
    row order), padded as the Keras `layer` pads."""
    tf = tensorflow()
    k, d = layer.kernel_size[0], layer.dilation_rate[0]
    span = (k - 1) * d
    left = span if layer.padding == "causal" else span // 2
    x = tf.pad(x, [[0, 0], [left, span - left], [0, 0]])
    steps = tf.shape(x)[1] - span
    return tf.concat([x[:, j * d : j * d + steps] for j in range(k)], axis=-1)

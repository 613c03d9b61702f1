"""dense: a weight product on the last axis (tf_keras.layers.Dense)."""

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
)
from compiler.tf import tensorflow


class DenseLayer(LayerBase):
    """tf_keras.layers.Dense, applied to the last axis."""

    keras_class = "Dense"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "dense", "units": 5, "activation": "tanh"},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["dense"]
    """The layer type: dense."""
    units: PositiveInt
    """Output size (for the last layer: the vocabulary size, one logit per id)."""
    activation: Activation = "linear"
    """Activation of the output; linear for logits."""
    use_bias: bool = True
    """Add a bias vector."""
    kernel_initializer: Initializer = "glorot_uniform"
    """Initializer of the weight matrix."""
    bias_initializer: Initializer = "zeros"
    """Initializer of the bias."""

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        return inputs[0][:-1] + (self.units,)

    def output_activation(self) -> Optional[str]:
        return self.activation

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        bias = [("bias", (self.units,))] if self.use_bias else []
        return [("kernel", (inputs[0][-1], self.units))] + bias

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        tf = tensorflow()
        units = layer.kernel.shape[1]
        a = pe.as_steps(x)
        z, probe = pe.probed_product(tape, a, layer.kernel, layer.bias if layer.use_bias else None)
        out = tf.reshape(z, tf.concat([tf.shape(x)[:-1], [units]], 0))
        out.set_shape(x.shape[:-1].concatenate([units]))
        if layer.activation is not None:
            out = layer.activation(out)

        def squared_norms(grads: list[Any]) -> Any:
            return pe.product_squared_norms(a, grads[0], bias=layer.use_bias)

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            g = pe.scaled(grads[0], factors)
            sums = [pe.product_sum(a, g)]
            if layer.use_bias:
                sums.append(tf.reduce_sum(g, axis=[0, 1]))
            return sums

        variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
        return out, pe.Term(variables, [probe], squared_norms, clipped_sum)

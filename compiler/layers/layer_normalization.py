"""layer_normalization over the last axis (tf_keras.layers.LayerNormalization)."""

from __future__ import annotations

from typing import Any, Literal

from compiler.layers import per_example as pe
from compiler.layers.base import LayerBase, PositiveFloat, Shape, Weight
from compiler.tf import tensorflow


class LayerNormalizationLayer(LayerBase):
    """tf_keras.layers.LayerNormalization over the last axis."""

    keras_class = "LayerNormalization"
    # The last axis; tf-keras writes it resolved ([2] for [batch, time, features]).
    keras_fixed = {
        "axis": (-1, [-1], 2, [2]),
        "beta_initializer": ("zeros",),
        "gamma_initializer": ("ones",),
        "rms_scaling": (False,),
    }
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "layer_normalization"},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["layer_normalization"]
    """The layer type: layer_normalization."""
    epsilon: PositiveFloat = 1e-3
    """Added to the variance before the square root, for stability."""
    center: bool = True
    """Learn an offset (beta) added after normalising."""
    scale: bool = True
    """Learn a scale (gamma) applied after normalising."""

    def steps_alone(self) -> bool:
        return False  # Keras fixes its axes at build: it normalises sequences only

    def steps_as_sequence(self) -> bool:
        return True

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        d = output[-1]
        return ([("gamma", (d,))] if self.scale else []) + ([("beta", (d,))] if self.center else [])

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        # gamma and beta scale and shift each position: an example's gradient is a sum
        # over its positions, formed directly.
        tf = tensorflow()
        axes = [a % len(x.shape) for a in layer.axis]
        mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
        normalised = (x - mean) * tf.math.rsqrt(variance + layer.epsilon)
        out = normalised
        if layer.scale:
            out = out * tf.stop_gradient(layer.gamma)
        if layer.center:
            out = out + tf.stop_gradient(layer.beta)
        probe = pe.probe(tape, out)
        out = out + probe
        reduce = list(range(1, len(x.shape) - len(axes)))

        def per_example(grads: list[Any]) -> list[Any]:
            g = grads[0]
            parts = []
            if layer.scale:
                parts.append(tf.reduce_sum(g * normalised, axis=reduce))
            if layer.center:
                parts.append(tf.reduce_sum(g, axis=reduce))
            return parts

        def squared_norms(grads: list[Any]) -> Any:
            return tf.add_n(
                [
                    tf.reduce_sum(tf.square(tf.reshape(p, [tf.shape(p)[0], -1])), axis=1)
                    for p in per_example(grads)
                ]
            )

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            return [tf.reduce_sum(pe.scaled(p, factors), axis=0) for p in per_example(grads)]

        variables = ([layer.gamma] if layer.scale else []) + ([layer.beta] if layer.center else [])
        return out, pe.Term(variables, [probe], squared_norms, clipped_sum)

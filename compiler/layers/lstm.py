"""lstm (tf_keras.layers.LSTM): its gates, its h and c states, its fast-DP recurrence."""

from __future__ import annotations

from typing import Any, Literal

from compiler.layers import per_example as pe
from compiler.layers.recurrent import RecurrentLayer, previous, sequence_inputs, sequence_output
from compiler.tf import tensorflow


class LSTMLayer(RecurrentLayer):
    """tf_keras.layers.LSTM."""

    keras_class = "LSTM"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "lstm", "units": 5, "return_sequences": True},
        {"type": "dense", "name": "logits", "units": 12},
    )
    gates = 4  # input, forget, candidate, output
    state_suffixes = ("h", "c")

    type: Literal["lstm"]
    """The layer type: lstm."""
    unit_forget_bias: bool = True
    """Start the forget gate's bias at 1 (Jozefowicz et al., 2015)."""

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        tf = tensorflow()
        cell = layer.cell
        units = cell.units
        act, rec_act = cell.activation, cell.recurrent_activation
        x, z_in = sequence_inputs(layer, x, 4 * units, cell.bias if cell.use_bias else None)
        probe = pe.probe(tape, z_in)
        recurrent = tf.stop_gradient(cell.recurrent_kernel)
        zeros = tf.zeros([tf.shape(x)[0], units], dtype=z_in.dtype)

        def step(carry: tuple[Any, Any], z_t: Any) -> tuple[Any, Any]:
            h, c = carry
            z = z_t + tf.matmul(h, recurrent)
            i, f, c_hat, o = tf.split(z, 4, axis=1)
            c = rec_act(f) * c + rec_act(i) * act(c_hat)
            return rec_act(o) * act(c), c

        hs, _ = tf.scan(step, pe.time_major(z_in + probe), initializer=(zeros, zeros))
        a = tf.concat([x, previous(hs, zeros)], axis=-1)  # what [kernel; recurrent] multiply

        def squared_norms(grads: list[Any]) -> Any:
            return pe.product_squared_norms(a, grads[0], bias=cell.use_bias)

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            g = pe.scaled(grads[0], factors)
            both = pe.product_sum(a, g)
            sums = [both[: x.shape[-1]], both[x.shape[-1] :]]
            if cell.use_bias:
                sums.append(tf.reduce_sum(g, axis=[0, 1]))
            return sums

        variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])
        return sequence_output(layer, hs), pe.Term(variables, [probe], squared_norms, clipped_sum)

"""gru (tf_keras.layers.GRU): its gates, its h state, its fast-DP recurrence."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from compiler.layers import per_example as pe
from compiler.layers.base import Shape
from compiler.layers.recurrent import RecurrentLayer, previous, sequence_inputs, sequence_output
from compiler.tf import tensorflow


class GRULayer(RecurrentLayer):
    """tf_keras.layers.GRU."""

    keras_class = "GRU"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "gru", "units": 5, "return_sequences": True},
        {"type": "dense", "name": "logits", "units": 12},
    )
    gates = 3  # update, reset, candidate
    state_suffixes = ("h",)

    type: Literal["gru"]
    """The layer type: gru."""
    reset_after: bool = Field(
        True,
        description="Apply the reset gate after the matrix product (the cuDNN-compatible form).",
    )

    def cudnn_reasons(self) -> list[str]:
        return super().cudnn_reasons() + ([] if self.reset_after else ["reset_after: false"])

    def bias_shape(self) -> Shape:
        # reset_after keeps separate input and recurrent biases.
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        tf = tensorflow()
        cell = layer.cell
        units = cell.units
        act, rec_act = cell.activation, cell.recurrent_activation
        bias = cell.bias if cell.use_bias else None
        after = cell.reset_after
        input_bias = None if bias is None else (bias[0] if after else bias)
        x, z_in = sequence_inputs(layer, x, 3 * units, input_bias)
        probe_x = pe.probe(tape, z_in)
        recurrent = tf.stop_gradient(cell.recurrent_kernel)
        zeros = tf.zeros([tf.shape(x)[0], units], dtype=z_in.dtype)
        # With reset_after the recurrent product is one [units, 3 units] matmul of h;
        # without, the candidate's third multiplies r * h, so it is a product (and a probe)
        # of its own.
        width = 3 * units if after else 2 * units
        probe_r = pe.probe(tape, tf.zeros([x.shape[1], tf.shape(x)[0], width], z_in.dtype))
        probe_h = None if after else pe.probe(tape, tf.zeros([x.shape[1], tf.shape(x)[0], units]))
        recurrent_bias = None if bias is None or not after else tf.stop_gradient(bias[1])

        def step(carry: tuple[Any, Any], inputs: tuple[Any, ...]) -> tuple[Any, Any]:
            h, _ = carry
            z_t, p_r = inputs[0], inputs[1]
            x_z, x_r, x_h = tf.split(z_t, 3, axis=1)
            if after:
                inner = tf.matmul(h, recurrent)
                if recurrent_bias is not None:
                    inner = inner + recurrent_bias
                r_z, r_r, r_h = tf.split(inner + p_r, 3, axis=1)
                z = rec_act(x_z + r_z)
                r = rec_act(x_r + r_r)
                h_hat = act(x_h + r * r_h)
                reset_h = h  # unused: keeps one loop signature for both forms
            else:
                r_z, r_r = tf.split(tf.matmul(h, recurrent[:, : 2 * units]) + p_r, 2, axis=1)
                z = rec_act(x_z + r_z)
                r = rec_act(x_r + r_r)
                reset_h = r * h
                h_hat = act(x_h + tf.matmul(reset_h, recurrent[:, 2 * units :]) + inputs[2])
            return z * h + (1 - z) * h_hat, reset_h

        scanned = (pe.time_major(z_in + probe_x), probe_r) + (() if after else (probe_h,))
        hs, reset_hs = tf.scan(step, scanned, initializer=(zeros, zeros))
        h_prev = previous(hs, zeros)
        reset_prev = pe.time_major(reset_hs)
        probes = [probe_x, probe_r] + ([] if after else [probe_h])

        def batch_major(grads: list[Any]) -> list[Any]:
            return [grads[0]] + [pe.time_major(g) for g in grads[1:]]

        def squared_norms(grads: list[Any]) -> Any:
            g = batch_major(grads)
            norms = pe.product_squared_norms(x, g[0], bias=bias is not None)
            norms += pe.product_squared_norms(h_prev, g[1], bias=recurrent_bias is not None)
            if not after:
                norms += pe.product_squared_norms(reset_prev, g[2], bias=False)
            return norms

        def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
            g = [pe.scaled(t, factors) for t in batch_major(grads)]
            kernel = pe.product_sum(x, g[0])
            if after:
                rec = pe.product_sum(h_prev, g[1])
            else:
                rec = tf.concat([pe.product_sum(h_prev, g[1]), pe.product_sum(reset_prev, g[2])], 1)
            sums = [kernel, rec]
            if bias is not None:
                b_in = tf.reduce_sum(g[0], axis=[0, 1])
                sums.append(tf.stack([b_in, tf.reduce_sum(g[1], axis=[0, 1])]) if after else b_in)
            return sums

        variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if bias is not None else [])
        return sequence_output(layer, hs), pe.Term(variables, probes, squared_norms, clipped_sum)

"""What the recurrent layer types share: fields, shape rule, states, fast-DP scaffolding.

Under fast DP a recurrent layer is computed here, not by Keras, so that the gradient of
every step's products is reachable: the input projection of all steps is one product
outside the loop, the recurrence runs in `tf.scan`, and the probes enter as scanned inputs.
The variables are the Keras layer's own (same names, same shapes, same forward results),
so checkpoints, `keraspec export` and the reference model are unaffected.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import Field

from compiler.layers import per_example as pe
from compiler.layers.base import (
    Activation,
    Context,
    Initializer,
    LayerBase,
    PositiveInt,
    Rate,
    Shape,
    Weight,
    fmt_shape,
)
from compiler.tf import tensorflow


class RecurrentLayer(LayerBase):
    # Gate blocks in the kernels and the state tensors' suffixes, set by each type.
    gates: ClassVar[int]
    state_suffixes: ClassVar[tuple[str, ...]]
    keras_fixed = {
        "return_state": (False,),
        "time_major": (False,),
        "implementation": (1, 2),  # the same computation, split differently
        "seed": (None,),
        "use_cudnn": ("auto", True, False),
        "zero_output_for_mask": (False,),
    }

    units: PositiveInt
    """Size of the hidden state (and of the output at each step)."""
    activation: Activation = "tanh"
    """Activation of the cell and hidden state (Keras `activation`); tanh keeps the fused kernel."""
    recurrent_activation: Activation = "sigmoid"
    """Activation of the gates (Keras `recurrent_activation`); sigmoid keeps the fused kernel."""
    use_bias: bool = True
    """Add bias vectors to the gates."""
    kernel_initializer: Initializer = "glorot_uniform"
    """Initializer of the input weights."""
    recurrent_initializer: Initializer = "orthogonal"
    """Initializer of the recurrent weights."""
    bias_initializer: Initializer = "zeros"
    """Initializer of the biases."""
    dropout: Rate = Field(0.0, description="Dropout on the inputs, in [0, 1).")
    recurrent_dropout: Rate = Field(
        0.0,
        description=(
            "Dropout on the recurrent state, in [0, 1); > 0 forfeits the fused cuDNN " "kernel."
        ),
    )
    return_sequences: bool = Field(
        False,
        description=(
            "Emit the whole sequence (needed when another RNN or a per-step layer follows)."
        ),
    )
    stateful: bool = Field(
        False,
        description="Carry state across batches; needs a fixed input.batch_size.",
    )
    go_backwards: bool = False
    """Read the sequence in reverse order."""
    unroll: bool = False
    """Unroll the time loop into the graph (faster for very short sequences, more memory)."""

    # ----------------------------------------------------------------- static analysis

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        if self.stateful and ctx.input.batch_size is None:
            ctx.error(
                ("stateful",),
                "stateful_batch",
                "expected a fixed input.batch_size for a stateful layer, received "
                "input.batch_size: null",
            )
        reasons = self.cudnn_reasons()
        if reasons:
            ctx.warn(
                (),
                "cudnn_incompatible",
                f"expected a {self.type} that can use the fused cuDNN kernel on GPU, "
                f"received {', '.join(reasons)}: it will train several times slower "
                "there",
            )
        (shape,) = inputs
        if len(shape) != 3:
            ctx.error(
                (),
                "rnn_input_rank",
                f"expected a sequence of shape (batch, time, features) for {self.type}, "
                f"received shape {fmt_shape(shape)}" + ctx.upstream_hint(),
            )
            return None
        u = self.units
        return (shape[0], shape[1], u) if self.return_sequences else (shape[0], u)

    def cudnn_reasons(self) -> list[str]:
        """Settings that rule out the fused cuDNN kernel."""
        reasons = []
        if self.recurrent_dropout > 0:
            reasons.append(f"recurrent_dropout: {self.recurrent_dropout}")
        if self.activation != "tanh":
            reasons.append(f"activation: {self.activation}")
        if self.recurrent_activation != "sigmoid":
            reasons.append(f"recurrent_activation: {self.recurrent_activation}")
        if self.unroll:
            reasons.append("unroll: true")
        if not self.use_bias:
            reasons.append("use_bias: false")
        return reasons

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        width = self.gates * self.units
        bias = [("bias", self.bias_shape())] if self.use_bias else []
        return [
            ("kernel", (inputs[0][-1], width)),
            ("recurrent_kernel", (self.units, width)),
        ] + bias

    def bias_shape(self) -> Shape:
        return (self.gates * self.units,)

    def states(self, inputs: list[Shape], context: int) -> list[tuple[str, Shape]]:
        return [(suffix, (self.units,)) for suffix in self.state_suffixes]

    def state_keras(self, tf: Any) -> Any:
        return self.keras(tf, stateful=False, return_state=True)

    @property
    def is_stateful(self) -> bool:
        return self.stateful

    def with_stateful(self, stateful: bool) -> "RecurrentLayer":
        return self.model_copy(update={"stateful": stateful})

    def call_with_state(
        self, keras_layer: Any, x: Any, states: list[Any], position: Any
    ) -> tuple[Any, list[Any]]:
        out, *final = keras_layer(x, initial_state=states)
        return out, final

    def activation_width(self, inputs: list[Shape], sequence_length: int) -> int:
        return self.gates * self.units

    def time_axis_hint(self) -> Optional[str]:
        if self.return_sequences:
            return ""
        return f"; set return_sequences: true on {self.type} {self.name!r}"

    def steps_alone(self) -> bool:
        return not self.go_backwards  # a one-token step runs its cell; backwards it cannot

    def fast_dp_problems(self) -> list[tuple[str, Any, str, str]]:
        hint = "put a dropout layer before or after the recurrent layer instead"
        return [
            (field, getattr(self, field), "0", hint)
            for field in ("dropout", "recurrent_dropout")
            if getattr(self, field)
        ]


# --------------------------------------------------------------------- fast DP helpers


def sequence_inputs(layer: Any, x: Any, width: int, bias: Optional[Any]) -> tuple[Any, Any]:
    """The sequence as the Keras `layer` reads it, and its input projection for every step."""
    tf = tensorflow()
    if layer.go_backwards:
        x = tf.reverse(x, axis=[1])
    cell = layer.cell
    z = tf.matmul(pe.flat_rows(x, x.shape[-1]), tf.stop_gradient(cell.kernel))
    z = tf.reshape(z, [tf.shape(x)[0], x.shape[1], width])
    if bias is not None:
        z = z + tf.stop_gradient(bias)
    return x, z


def previous(hs: Any, h0: Any) -> Any:
    """[steps, batch, units] states before each step, batch-major."""
    tf = tensorflow()
    return pe.time_major(tf.concat([h0[None], hs[:-1]], axis=0))


def sequence_output(layer: Any, hs: Any) -> Any:
    """The layer's output from its time-major states: all steps, or the last."""
    return pe.time_major(hs) if layer.return_sequences else hs[-1]

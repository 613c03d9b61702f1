"""What every layer type declares, and the field types layer specs share.

A layer type is one pydantic model, in its own module of this package. Like a Keras layer
class, it carries its own behaviour, so the stages that handle layers hold no per-type
chains:

- its fields: the spec language (the published JSON Schema is generated from them);
- `output_shape`: the static shape rule, reporting problems through a `Context`;
- `weights`: its variables' names and shapes (parameter counts, `keraspec diff`'s
  checkpoint compatibility);
- `states`: the state tensors the serving signatures take and return (a recurrent
  layer's h and c, an attention layer's cache), and `call_with_state`, how the serving
  model calls the layer with them;
- `keras`: the Keras layer it builds;
- `per_example`: its fast-DP forward pass (`compiler.layers.per_example`), or None for a
  layer without weights, which the DP step calls as Keras defines it.

Nothing here imports TensorFlow: `keraspec validate` never does.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field

Shape = tuple[Optional[int], ...]
Weight = tuple[str, Shape]  # a variable's name (as Keras names it) and shape
SubPath = tuple[str, ...]  # a path below the layer's own, e.g. ("units",)

# Sizes TensorFlow indexes with int32; larger ones are never meant (and would overflow).
MAX_SIZE = 2**31 - 1
PositiveInt = Annotated[int, Field(gt=0, le=MAX_SIZE)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Rate = Annotated[float, Field(ge=0, lt=1)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]

Initializer = Literal[
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "orthogonal",
    "identity",
    "zeros",
    "ones",
    "uniform",
    "random_uniform",
    "random_normal",
    "truncated_normal",
    "variance_scaling",
]
Activation = Literal[
    "linear",
    "relu",
    "relu6",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "softmax",
    "softplus",
    "softsign",
    "elu",
    "selu",
    "gelu",
    "swish",
    "exponential",
]


class StrictModel(BaseModel):
    """Base of every spec model: unknown keys are errors, no silent type coercion.

    Field descriptions are attribute docstrings, read when the JSON Schema is generated
    (`compiler.lang.schema`), not here.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
    )


def fmt_shape(shape: Optional[Shape]) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


class Context(Protocol):
    """What a layer's shape rule sees of the spec around it, and where it reports."""

    input: Any  # the spec's InputSpec: name, vocab_size, batch_size, sequence_length
    inputs: list[str]  # the names of the values feeding the layer

    def error(self, field: SubPath, code: str, message: str) -> None:
        """An error at the layer's `field` (() for the layer itself)."""

    def warn(self, field: SubPath, code: str, message: str) -> None:
        """A warning at the layer's `field`."""

    def upstream_hint(self) -> str:
        """A hint naming the layer upstream that dropped the time axis, or ""."""


class Refuse(Protocol):
    """Raises a located import error for the config key `key` of the layer being read."""

    def __call__(self, key: str, message: str) -> Any: ...


class LayerBase(StrictModel):
    """Fields every layer has, and the behaviour each layer type declares."""

    # Takes two or more inputs (a merge); any other layer takes exactly one.
    merges: ClassVar[bool] = False
    # Takes the model's integer token ids; every other layer takes float features.
    reads_tokens: ClassVar[bool] = False
    # Depends on each token's position (a position table, a cache written by position): the
    # serving signatures then take and return each row's `position`.
    uses_position: ClassVar[bool] = False
    # The tf_keras.layers class the layer builds; spec fields are named after its arguments.
    keras_class: ClassVar[str]
    # The layers of a tiny model that uses the type (vocabulary 12, one embedding named
    # `emb`, logits last): tests/test_registry.py checks every registered type on it.
    example: ClassVar[tuple[dict[str, Any], ...]]
    # Arguments of the Keras class the spec does not write, with the values the spec's
    # layer gives them (`keras import` accepts a model's layer only with one of these).
    keras_fixed: ClassVar[dict[str, tuple[Any, ...]]] = {}

    name: Optional[Identifier] = Field(
        None,
        description="Unique layer name; defaults to the Keras convention (lstm, lstm_1, ...).",
    )
    inputs: Optional[Annotated[list[Identifier], Field(min_length=1)]] = Field(
        None,
        description="Names of the layers (or the input) feeding this one; defaults to the "
        "previous layer in the list, or the model input for the first layer.",
    )

    # ----------------------------------------------------------------- static analysis

    def with_defaults(self, input: Any) -> "LayerBase":
        """The layer with the defaults that depend on the spec's `input` filled."""
        return self

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        """The output's shape from the inputs' shapes, or None after reporting an error."""
        return inputs[0]

    def weights(self, inputs: list[Shape], output: Shape) -> list[Weight]:
        """The layer's variables (Keras names, shapes) in the order Keras creates them."""
        return []

    def params(self, inputs: list[Shape], output: Shape) -> int:
        return sum(math.prod(shape) for _, shape in self.weights(inputs, output))

    def states(self, inputs: list[Shape], context: int) -> list[tuple[str, Shape]]:
        """State tensors as (suffix, shape after the batch): served as `{name}_{suffix}`.
        `context` is the positions a cache must hold (`compiler.layers.states`)."""
        return []

    def context_length(self) -> Optional[int]:
        """The positions the layer can place (a position table's rows), or None."""
        return None

    def is_causal(self) -> bool:
        """Whether each position's output depends only on it and earlier positions (what
        next-token training and the generation signatures need)."""
        return True

    def activation_width(self, inputs: list[Shape], sequence_length: int) -> int:
        """Floats per step the backward pass keeps besides the output (gates, attention
        scores over the `sequence_length` positions, ...)."""
        return 0

    def output_activation(self) -> Optional[str]:
        """The activation that ends the layer, when it may end a model's logits (the loss
        checks it against from_logits); None for a layer that is not such an ending."""
        return None

    def time_axis_hint(self) -> Optional[str]:
        """How to keep the time axis when this layer drops it; "" when it keeps it; None
        when the layer has no say (look further upstream)."""
        return None

    def steps_alone(self) -> bool:
        """Whether the layer acts on each position alone, so that generation's one-token
        step may call it on [batch, features] (recurrent layers step through their cell)."""
        return True

    def steps_as_sequence(self) -> bool:
        """Whether generation's one-token step calls the layer on a one-position sequence
        ([batch, 1, features]) through `call_with_state`, with its states (a cache, a
        window, the position): for a layer that does not act on [batch, features]."""
        return False

    def fast_dp_problems(self) -> list[tuple[str, Any, str, str]]:
        """Settings the fast DP step cannot train: (field, value, expected, hint)."""
        return []

    @property
    def is_stateful(self) -> bool:
        """Whether the layer carries state from one batch into the next (Keras' `stateful`)."""
        return False

    def with_stateful(self, stateful: bool) -> "LayerBase":
        """The same layer, stateful or not where the type can be (same weights)."""
        return self

    # ----------------------------------------------------------------- TensorFlow

    def keras_kwargs(self) -> dict[str, Any]:
        # `inputs` wires the graph and `type` picks the class; every other field is an
        # argument of the Keras class.
        return self.model_dump(exclude={"type", "inputs"})

    def keras(self, tf: Any, **overrides: Any) -> Any:
        """The Keras layer, with `overrides` over the spec's arguments."""
        from compiler.tf import tf_keras

        cls = self.custom_keras_class() or getattr(tf_keras().layers, self.keras_class)
        return cls(**{**self.keras_kwargs(), **overrides})

    @classmethod
    def custom_keras_class(cls) -> Optional[type]:
        """keraspec's own Keras layer class for the type (registered as
        `keraspec>ClassName`, which a model's JSON names), or None for a Keras class."""
        return None

    def state_keras(self, tf: Any) -> Any:
        """The Keras layer as the serving model builds it (stateless, returning states)."""
        return self.keras(tf)

    def call_with_state(
        self, keras_layer: Any, x: Any, states: list[Any], position: Any
    ) -> tuple[Any, list[Any]]:
        """The serving model's call: `x` after `states` (as `states()` lists them), the
        first new token at `position` -> (output, new states)."""
        return keras_layer(x), []

    @classmethod
    def from_keras(cls, config: dict[str, Any], refuse: Refuse) -> dict[str, Any]:
        """The layer's spec fields from its Keras config (the inverse of `keras_kwargs`).

        Every config key is a spec field, a fixed argument at its fixed value
        (`keras_fixed`, and what every layer shares: trainable, float32, no regularizer or
        constraint), or a refusal: `refuse(key, message)` raises, naming the key.
        """
        from compiler.layers.keras_config import spec_fields_from

        return spec_fields_from(cls, config, refuse)

    @staticmethod
    def per_example(layer: Any, x: Any, tape: Any, training: bool) -> Any:
        """Fast DP: run the Keras `layer` on `x` with probes on its weight products and
        return (output, `per_example.Term`); None: the layer has no weights and is called
        as Keras defines it."""
        return None

"""The layer types of the spec language: one module per type, and their registry.

Each module declares a pydantic model (its spec fields, from which the schema is generated)
that carries the type's behaviour: static shape rule, weights, recurrent states, the Keras
layer it builds, and its fast-DP forward pass (see `compiler.layers.base`). The stages that
handle layers (checks, build, diff, export, the DP step) look a type up in `LAYER_TYPES`.

To add a layer type: write its module here (a `LayerBase` subclass with `type:
Literal["..."]`), list its class in `LAYER_TYPES` below, add golden valid and invalid
cases under tests/cases, and regenerate the schema (`keraspec schema -o schema/`).
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from compiler.layers.activation import ActivationLayer
from compiler.layers.base import LayerBase
from compiler.layers.dense import DenseLayer
from compiler.layers.dropout import DropoutLayer
from compiler.layers.embedding import EmbeddingLayer
from compiler.layers.gru import GRULayer
from compiler.layers.layer_normalization import LayerNormalizationLayer
from compiler.layers.lstm import LSTMLayer
from compiler.layers.merging import AddLayer, ConcatenateLayer
from compiler.layers.recurrent import RecurrentLayer

# The spec's `type` -> its layer class, in the order the schema lists them.
LAYER_TYPES: dict[str, type[LayerBase]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        EmbeddingLayer,
        DropoutLayer,
        LSTMLayer,
        GRULayer,
        DenseLayer,
        LayerNormalizationLayer,
        ActivationLayer,
        AddLayer,
        ConcatenateLayer,
    )
}

# A layer of a spec: the member of the union its `type` names.
Layer = Annotated[Union[tuple(LAYER_TYPES.values())], Field(discriminator="type")]

__all__ = ["LAYER_TYPES", "Layer", "LayerBase", "RecurrentLayer"]

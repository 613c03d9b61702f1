"""The layer types of the spec language: one module per type, and their registry.

Each module declares a pydantic model (its spec fields, from which the schema is generated)
that carries the type's behaviour: static shape rule, weights, recurrent states, the Keras
layer it builds, and its fast-DP forward pass (see `compiler.layers.base`). The stages that
handle layers (checks, build, diff, export, the DP step) look a type up in `LAYER_TYPES`.

To add a layer type: write its module here (a `LayerBase` subclass with `type:
Literal["..."]` and an `example`), list its class in `LAYER_TYPES` below (tests/test_registry.py
then checks it), add golden cases for its diagnostics under tests/cases, and regenerate the
schema (`keraspec schema -o schema/`).
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from compiler.layers.activation import ActivationLayer
from compiler.layers.base import LayerBase
from compiler.layers.conv1d import Conv1DLayer
from compiler.layers.dense import DenseLayer
from compiler.layers.dropout import DropoutLayer
from compiler.layers.embedding import EmbeddingLayer
from compiler.layers.gru import GRULayer
from compiler.layers.layer_normalization import LayerNormalizationLayer
from compiler.layers.lstm import LSTMLayer
from compiler.layers.merging import AddLayer, ConcatenateLayer
from compiler.layers.multi_head_attention import MultiHeadAttentionLayer
from compiler.layers.position_embedding import PositionEmbeddingLayer
from compiler.layers.recurrent import RecurrentLayer

# The spec's `type` -> its layer class, in the order the schema lists them.
LAYER_TYPES: dict[str, type[LayerBase]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        EmbeddingLayer,
        PositionEmbeddingLayer,
        DropoutLayer,
        LSTMLayer,
        GRULayer,
        DenseLayer,
        LayerNormalizationLayer,
        MultiHeadAttentionLayer,
        Conv1DLayer,
        ActivationLayer,
        AddLayer,
        ConcatenateLayer,
    )
}

# A layer of a spec: the member of the union its `type` names.
Layer = Annotated[Union[tuple(LAYER_TYPES.values())], Field(discriminator="type")]


def custom_objects() -> dict[str, type]:
    """keraspec's own Keras layer classes by registered name, for loading a compiled
    model's JSON: `tf_keras.models.model_from_json(text, custom_objects=...)`."""
    classes = [layer_type.custom_keras_class() for layer_type in LAYER_TYPES.values()]
    return {f"keraspec>{cls.__name__}": cls for cls in classes if cls is not None}


__all__ = ["LAYER_TYPES", "Layer", "LayerBase", "RecurrentLayer", "custom_objects"]

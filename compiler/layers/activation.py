"""activation: a function applied element-wise (tf_keras.layers.Activation)."""

from __future__ import annotations

from typing import Literal

from compiler.layers.base import Activation, LayerBase


class ActivationLayer(LayerBase):
    """tf_keras.layers.Activation."""

    keras_class = "Activation"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "activation", "activation": "gelu"},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["activation"]
    """The layer type: activation."""
    activation: Activation
    """The function applied element-wise."""

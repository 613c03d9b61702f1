"""dropout (tf_keras.layers.Dropout)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from compiler.layers.base import LayerBase, Rate


class DropoutLayer(LayerBase):
    """tf_keras.layers.Dropout."""

    keras_class = "Dropout"
    keras_fixed = {"noise_shape": (None,)}
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["dropout"]
    """The layer type: dropout."""
    rate: Rate = Field(description="Fraction of units to drop, in [0, 1).")
    seed: Optional[int] = None
    """Seed of the dropout mask; null: from the run's seed."""

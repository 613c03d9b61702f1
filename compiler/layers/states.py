"""The state tensors a model's serving signatures take and return.

A recurrent layer's state (`lstm_h`, `lstm_c`), an attention layer's key and value cache
(`attention_key`, `attention_value`), a causal convolution's window of earlier inputs
(`conv1d_window`), and, when a layer depends on where a token is (a position embedding, an
attention cache), the position of each row's next token (`position`). A client feeding a
model token by token passes back what the last call returned.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

POSITION = "position"


@dataclasses.dataclass(frozen=True)
class State:
    """One state tensor, as the serving signatures name it.

    Attributes:
        layer: The layer it belongs to (None for the model's `position`).
        name: The layer's name and the state's suffix, e.g. "lstm_h", or "position".
        shape: Its shape after the batch dimension.
        dtype: float32, or int32 for the position.
    """

    layer: Optional[str]
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def units(self) -> int:
        """The last dimension (a recurrent state's width)."""
        return self.shape[-1]


def context_length(spec: Any) -> Optional[int]:
    """Positions a model can attend over: its position embeddings' length, else, when a
    layer keeps a cache by position, the training sequence length; None when unbounded."""
    layers = spec.model.layers
    lengths = [n for n in (layer.context_length() for layer in layers) if n is not None]
    if lengths:
        return min(lengths)
    if any(layer.uses_position for layer in layers):
        return spec.training.sequence_length
    return None


def serving_states(spec: Any, analysis: Any) -> list[State]:
    """The states of a resolved spec's model in layer order, then `position` if used."""
    layers = {layer.name: layer for layer in spec.model.layers}
    shapes: dict[str, Any] = {spec.input.name: analysis.input_shape}
    context = context_length(spec) or 0
    states: list[State] = []
    for info in analysis.layers:
        shapes[info.name] = info.output_shape
        layer = layers[info.name]
        inputs = [shapes[n] for n in info.inputs]
        states += [
            State(layer.name, f"{layer.name}_{suffix}", tuple(shape))
            for suffix, shape in layer.states(inputs, context)
        ]
    if any(layer.uses_position for layer in spec.model.layers):
        states.append(State(None, POSITION, (), "int32"))
    return states

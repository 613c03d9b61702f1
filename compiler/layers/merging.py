"""add and concatenate: the layers that merge several inputs (tf_keras.layers.Add,
tf_keras.layers.Concatenate)."""

from __future__ import annotations

from typing import Literal, Optional

from compiler.layers.base import Context, LayerBase, Shape, fmt_shape


class _Merge(LayerBase):
    merges = True

    def _shapes(self, inputs: list[Shape], ctx: Context) -> str:
        return ", ".join(f"{n} {fmt_shape(s)}" for n, s in zip(ctx.inputs, inputs))

    def _merged(
        self, inputs: list[Shape], axes: list[int], out: list[Optional[int]], ctx: Context
    ) -> Optional[Shape]:
        """`out` with each of `axes` set to the inputs' common size, or None when the
        inputs disagree on one."""
        for a in axes:
            dims = {s[a] for s in inputs} - {None}
            if len(dims) > 1:
                ctx.error(
                    ("inputs",),
                    "merge_shapes",
                    f"expected matching shapes for {self.type}, received "
                    + self._shapes(inputs, ctx),
                )
                return None
            if dims:
                out[a] = dims.pop()
        return tuple(out)

    def _rank(self, inputs: list[Shape], ctx: Context) -> Optional[int]:
        rank = len(inputs[0])
        if any(len(s) != rank for s in inputs):
            ctx.error(
                ("inputs",),
                "merge_shapes",
                f"expected inputs of one rank for {self.type}, received shapes "
                + self._shapes(inputs, ctx),
            )
            return None
        return rank


class AddLayer(_Merge):
    """tf_keras.layers.Add: element-wise sum of inputs of one shape."""

    keras_class = "Add"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "dense", "name": "side", "units": 6},
        {"type": "add", "inputs": ["emb", "side"]},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["add"]
    """The layer type: add."""

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        rank = self._rank(inputs, ctx)
        if rank is None:
            return None
        return self._merged(inputs, list(range(1, rank)), list(inputs[0]), ctx)


class ConcatenateLayer(_Merge):
    """tf_keras.layers.Concatenate along `axis`."""

    keras_class = "Concatenate"
    example = (
        {"type": "embedding", "name": "emb", "output_dim": 6},
        {"type": "dense", "name": "side", "units": 3},
        {"type": "concatenate", "inputs": ["emb", "side"]},
        {"type": "dense", "name": "logits", "units": 12},
    )

    type: Literal["concatenate"]
    """The layer type: concatenate."""
    axis: int = -1
    """Axis to concatenate along; -1 is the feature axis."""

    def output_shape(self, inputs: list[Shape], ctx: Context) -> Optional[Shape]:
        rank = self._rank(inputs, ctx)
        if rank is None:
            return None
        axis = self.axis % rank if -rank <= self.axis < rank else None
        if axis is None or axis == 0:
            ctx.error(
                ("axis",),
                "concat_axis",
                f"expected an axis in 1..{rank - 1} or -{rank - 1}..-1 for inputs of "
                f"rank {rank}, received {self.axis}",
            )
            return None
        dims = [s[axis] for s in inputs]
        out = list(inputs[0])
        out[axis] = None if None in dims else sum(dims)
        return self._merged(inputs, [a for a in range(1, rank) if a != axis], out, ctx)

    def steps_alone(self) -> bool:
        return self.axis in (-1, 2)  # along time, one step's output depends on others

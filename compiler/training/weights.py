"""Trained weights into rebuilt models.

A run's checkpoints hold the training model's variables (`tf.train.Checkpoint(model=...)`).
Sampling and export rebuild the spec's model in another shape (another batch size, stateful
or not, taking and returning states); these helpers load a checkpoint into a model of the
training shape and copy weights between models layer by layer, by the spec's layer names.
"""

from __future__ import annotations

import os
from typing import Any, Union

from compiler.diagnostics import Diagnostic, RunError
from compiler.lang import spec as s
from compiler.lang.checked import CheckedSpec, derived, spec_of

AnySpec = Union[s.Spec, CheckedSpec]


def with_stateful(original: AnySpec, stateful: bool) -> AnySpec:
    """The spec with every recurrent layer's `stateful` set (same layers, same weights)."""
    spec = spec_of(original)
    layers = [layer.with_stateful(stateful) for layer in spec.model.layers]
    return derived(
        original,
        spec.model_copy(update={"model": spec.model.model_copy(update={"layers": layers})}),
    )


def reshaped_spec(
    original: AnySpec, *, batch_size: int | None, stateful: bool | None, sequence_length=None
) -> AnySpec:
    """The spec's model with another batch size, stateful setting and no DP optimizer."""
    spec = spec_of(original)
    if stateful is not None:
        spec = with_stateful(spec, stateful)
    training = {"privacy": None, "sequence_length": None, "distribution": None}
    if batch_size is not None:
        training["batch_size"] = batch_size
    return derived(
        original,
        spec.model_copy(
            update={
                "input": spec.input.model_copy(
                    update={"batch_size": batch_size, "sequence_length": sequence_length}
                ),
                "training": spec.training.model_copy(update=training),
            }
        ),
    )


def _unreadable(where: str, e: Exception) -> RunError:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return RunError(
        [
            Diagnostic(
                "error",
                "checkpoint_unreadable",
                f"expected weights of this spec's model, received ones that do not load: {first}",
                "",
                where,
            )
        ]
    )


def load_weights(model: Any, path: str) -> None:
    """Load weights into a model built from the spec they were trained with.

    Args:
        model: A Keras model of the spec (any batch size, stateful or not).
        path: A TensorFlow checkpoint prefix (what `train` writes, or
            `tf.train.Checkpoint(model=model).write(prefix)`), or a Keras weights file
            (`model.save_weights("x.h5")`).

    Raises:
        RunError: the weights are missing or do not fit the model.
    """
    from compiler.tf import tensorflow

    tf = tensorflow()
    try:
        if path.endswith((".h5", ".hdf5", ".keras")):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no such file: {path}")
            model.load_weights(path)
            return
        status = tf.train.Checkpoint(model=model).read(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, OSError, IndexError, tf.errors.OpError) as e:
        # IndexError: TensorFlow's reader of a truncated checkpoint ("Read less bytes").
        raise _unreadable(path, e) from e
    # A checkpoint that matched nothing restores nothing, silently: make sure it held ours.
    try:
        stored = {name for name, _ in tf.train.list_variables(path)}
    except (ValueError, OSError, IndexError, tf.errors.OpError) as e:
        raise _unreadable(path, e) from e
    if not any(n.startswith("model/") for n in stored):
        raise _unreadable(path, ValueError("the checkpoint holds no model variables"))


def copy_weights(source: Any, target: Any) -> None:
    """Copy every layer's weights from `source` to the layer of the same name in `target`."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())

"""Per-example DP-SGD without a loop over examples: the `fast` privacy implementation.

DP-SGD clips each example's gradient to `l2_norm_clip`, sums the clipped gradients, adds
Gaussian noise of standard deviation `l2_norm_clip * noise_multiplier` once, and divides by
the batch size. tensorflow-privacy's optimizers get each example's gradient by looping (or
vectorising) over the batch: a backward pass per example. This module gets the same result
from one forward and one backward pass over the whole batch: each layer type's
`per_example` forward (in its module of `compiler.layers`) adds probes to its weight
products and says how to turn their gradients into per-example norms and clipped sums
(`compiler.layers.per_example`). Layers without weights (dropout, activation, merges) are
called as Keras defines them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

from compiler.data.sampling import secret_key
from compiler.layers import LAYER_TYPES
from compiler.layers.per_example import Term
from compiler.tf import tensorflow, tf_keras


@dataclasses.dataclass(frozen=True)
class FastDP:
    """The DP-SGD settings a model trains with.

    Attributes:
        l2_norm_clip: Each example's gradient is clipped to this L2 norm.
        noise_multiplier: The noise's standard deviation, as a multiple of l2_norm_clip.
        batch_size: The global batch the noisy sum is divided by. Under Poisson sampling
            it is the expected batch, never the realised one (which dividing would leak).
    """

    l2_norm_clip: float
    noise_multiplier: float
    batch_size: int


# ------------------------------------------------------------------------ the step


@dataclasses.dataclass(frozen=True)
class Graph:
    """A model's layers in call order, by name (names, not layers: Keras would track them).

    Attributes:
        layers: (layer name, names of the values it takes) in call order.
        types: Each layer's spec type, by name.
        input: The name of the model's input.
        output: The name of the layer giving the model's output.
    """

    layers: tuple[tuple[str, tuple[str, ...]], ...]
    types: tuple[tuple[str, str], ...]
    input: str
    output: str


class DPStep:
    """The fast implementation's train step, with everything it reads.

    Attributes:
        graph: The model's layers in call order (what `forward` walks).
        dp: The clipping norm, noise multiplier and batch the step divides by.
        noise: A checkpointable holder of the secret noise key (`noise.key`).
        canaries: A white-box audit's gradient canaries (`compiler.privacy.canaries`
            `Observer`), or None.
    """

    def __init__(self, graph: Graph, dp: FastDP) -> None:
        tf = tensorflow()
        self.graph = graph
        self.dp = dp
        # Noise must be unpredictable: its key comes from the operating system's entropy,
        # not from the run's seed. Each step's noise is drawn from (key, step), so every
        # replica of a distributed run draws the same noise (the key is a variable: a
        # distribution strategy gives every worker the chief's), and a resumed run, whose
        # checkpoint holds the key and the step, goes on with the stream instead of
        # repeating it.
        self.noise = tf.train.Checkpoint(
            key=tf.Variable(secret_key(), trainable=False, name="dp_noise_key")
        )
        self.canaries: Optional[Any] = None

    def __call__(self, model: Any, data: Any) -> dict[str, Any]:
        """Keras `train_step` of `model`, a model of `model_classes()`.

        DP-SGD's gradient is the noisy sum divided by the expected global batch. With
        gradient canaries, `x` is (inputs, the canaries sampled into this replica's share
        of the batch): their gradients are clipped and summed with the examples', and the
        noisy sum is observed along their coordinates.
        """
        tf = tensorflow()
        x, y, sample_weight = tf_keras().utils.unpack_x_y_sample_weight(data)
        dp, canaries = self.dp, self.canaries
        if canaries is not None:
            x, sampled = x
        gradients, _, _, y_pred = clipped_gradients(
            model, self.graph, x, y, sample_weight, l2_norm_clip=dp.l2_norm_clip
        )
        if canaries is not None:
            gradients = canaries.add(gradients, sampled, dp.l2_norm_clip)
        noisy = noised_sum(gradients, dp, self.noise.key, model.optimizer.iterations)
        if canaries is not None:
            canaries.observe(noisy)
        size = tf.constant(dp.batch_size, noisy[0].dtype)
        model.optimizer.apply_gradients(zip([g / size for g in noisy], model.trainable_variables))
        return model.compute_metrics(x, y, y_pred, sample_weight)


@functools.cache
def model_classes() -> tuple[type, type]:
    """Keras model classes (Sequential, functional) whose `fit` runs a `DPStep`.

    Their constructors are Keras' own (Keras writes a functional model's architecture into
    its config only for its own constructor), so a model's config (`to_json`,
    `get_config`) is the plain architecture, naming the plain class; `train_with` gives a
    built model its step.
    """
    keras = tf_keras()

    class _FastDPModel:
        plain_class: str  # the class `to_json` names: the architecture is plain Keras
        _dp_step: Optional[DPStep] = None

        def train_with(self, dp_step: DPStep) -> None:
            # A plain object: Keras tracks neither it nor its noise key (a run's
            # checkpoint holds the key as a part of its own).
            self._dp_step = dp_step

        def train_step(self, data: Any) -> dict[str, Any]:
            if self._dp_step is None:
                raise ValueError("a fast DP model trains with a DPStep: call train_with first")
            return self._dp_step(self, data)

        def _updated_config(self) -> dict[str, Any]:
            return {**super()._updated_config(), "class_name": self.plain_class}

    class FastDPSequential(_FastDPModel, keras.Sequential):
        plain_class = "Sequential"

    class FastDPModel(_FastDPModel, keras.Model):
        plain_class = "Functional"

    return FastDPSequential, FastDPModel


def forward(
    model: Any, graph: Graph, x: Any, tape: Any, *, training: bool
) -> tuple[Any, list[Term]]:
    """Run `model` (whose layers `graph` lists) on `x` with probes on every weight product.

    Returns:
        The model's output (same values as `model(x, training=training)`) and one `Term`
        per layer with weights.
    """
    types = dict(graph.types)
    values: dict[str, Any] = {graph.input: x}
    terms = []
    for name, inputs in graph.layers:
        layer = model.get_layer(name)
        args = [values[n] for n in inputs]
        done = LAYER_TYPES[types[name]].per_example(layer, args[0], tape, training)
        if done is None:
            if layer.trainable_weights:
                raise ValueError(f"layer {name!r}: no per-example norms for {types[name]}")
            values[name] = layer(args if len(args) > 1 else args[0], training=training)
            continue
        values[name], term = done
        terms.append(term)
    return values[graph.output], terms


def per_example_losses(model: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    """Each example's loss as tensorflow-privacy defines it: the mean over its elements."""
    tf = tensorflow()
    losses = model.compiled_loss(y, y_pred, sample_weight, regularization_losses=model.losses)
    return tf.reduce_mean(tf.reshape(losses, [tf.shape(y_pred)[0], -1]), axis=1)


def clipped_gradients(
    model: Any,
    graph: Graph,
    x: Any,
    y: Any,
    sample_weight: Any = None,
    *,
    l2_norm_clip: float,
    training: bool = True,
) -> tuple[list[Any], Any, Any, Any]:
    """The sum over the batch of each example's gradient, clipped to `l2_norm_clip`.

    Returns:
        (gradients in the order of `model.trainable_variables`, per-example gradient norms
        before clipping, per-example losses, the model's output).
    """
    tf = tensorflow()
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        y_pred, terms = forward(model, graph, x, tape, training=training)
        losses = per_example_losses(model, y, y_pred, sample_weight)
        total = tf.reduce_sum(losses)
    probes = [p for term in terms for p in term.probes]
    grads = tape.gradient(total, probes, unconnected_gradients="zero")
    per_term, start = [], 0
    for term in terms:
        per_term.append(grads[start : start + len(term.probes)])
        start += len(term.probes)
    squared = tf.add_n([term.squared_norms(g) for term, g in zip(terms, per_term)])
    norms = tf.sqrt(tf.maximum(squared, 0.0))
    factors = clip_factors(norms, l2_norm_clip)
    by_variable = {}
    for term, g in zip(terms, per_term):
        for variable, gradient in zip(term.variables, term.clipped_sum(g, factors)):
            by_variable[id(variable)] = gradient
    missing = [v.name for v in model.trainable_variables if id(v) not in by_variable]
    if missing:
        raise ValueError(f"no per-example gradient for {', '.join(missing)}")
    ordered = [by_variable[id(v)] for v in model.trainable_variables]
    return ordered, norms, losses, y_pred


def clip_factors(norms: Any, l2_norm_clip: float) -> Any:
    """Each example's clipping factor, l2_norm_clip / max(norm, l2_norm_clip).

    As tf.clip_by_global_norm, which tensorflow-privacy applies to each microbatch. Every
    per-example gradient of the step is clipped here, a white-box audit's gradient canaries
    (`compiler.privacy.canaries`) included.
    """
    tf = tensorflow()
    return l2_norm_clip / tf.maximum(norms, l2_norm_clip)


def noised_sum(gradients: list[Any], dp: FastDP, key: Any, step: Any) -> list[Any]:
    """This replica's share of DP-SGD's noisy sum: clipped sum + N(0, (clip * noise)^2).

    Args:
        gradients: This replica's clipped sums.
        dp: The clipping norm and noise multiplier.
        key: The secret noise key, an int64 [2] tensor.
        step: The step number: with the key it picks the noise.

    Under a distribution strategy each replica returns its share and the optimizer sums
    the shares: every replica draws the same noise (same key and step) and adds 1/replicas
    of it, so the sum holds the noise once.
    """
    tf = tensorflow()
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    stddev = dp.l2_norm_clip * dp.noise_multiplier
    seed = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
    out = []
    for i, g in enumerate(gradients):
        if stddev > 0:
            draw = tf.random.stateless_normal(
                tf.shape(g),
                tf.random.experimental.stateless_fold_in(seed, i),
                stddev=stddev,
                dtype=g.dtype,
            )
            g = g + draw / replicas
        out.append(g)
    return out

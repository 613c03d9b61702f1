"""Per-example DP-SGD without a loop over examples: the `fast` privacy implementation.

DP-SGD clips each example's gradient to `l2_norm_clip`, sums the clipped gradients, adds
Gaussian noise of standard deviation `l2_norm_clip * noise_multiplier` once, and divides by
the batch size. tensorflow-privacy's optimizers get each example's gradient by looping (or
vectorising) over the batch: a backward pass per example. This module gets the same result
from one forward and one backward pass over the whole batch.

Every weight of a supported layer enters the forward pass through a product `a @ W` (plus a
bias). The forward pass adds a watched zero tensor, a *probe*, to each product's output; one
backward pass gives the gradient `g` at every probe, per example and time step. An
example's gradient for `W` is `sum_t a_t g_t^T`, so its squared norm is either
`sum_{t,s} (a_t . a_s)(g_t . g_s)` (a "ghost norm": two [T, T] Gram matrices per example,
computed by tensorflow-privacy's `compute_fast_einsum_squared_gradient_norm`) or the norm of
the materialised [in, out] gradient, whichever costs fewer operations for the layer's
sizes. Embeddings use tensorflow-privacy's `embedding_sqr_norm_fn`. The clipped sum is then
one product per weight: `sum_b sum_t a_bt (c_b g_bt)^T`, with `c_b` the example's clip
factor.

Recurrent layers are computed here, not by Keras, so that the gradient of every step's
products is reachable: the input projection of all steps is one product outside the loop,
the recurrence runs in `tf.scan`, and the probes enter as scanned inputs. The variables are
the Keras layers' own (same names, same shapes, same forward results), so checkpoints,
`keraspec export` and the reference model are unaffected.

The table `FORWARD` maps Keras layer classes to the functions that run them with probes;
layers without weights (dropout, activation, add, concatenate) are called as they are.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

from compiler.data.sampling import secret_key
from compiler.tf import tensorflow

# A layer's contribution: the probes it watched, and what to do with their gradients.
SquaredNorms = Callable[[list[Any]], Any]  # probe gradients -> [batch] squared norms
ClippedSum = Callable[[list[Any], Any], list[Any]]  # (probe gradients, clip factors) -> grads


@dataclasses.dataclass
class Term:
    """One layer's weights in the DP step.

    Attributes:
        variables: The layer's trainable variables, in the order `gradients` returns them.
        probes: The zero tensors added to the layer's products (watched by the tape).
        squared_norms: Per-example squared gradient norm of all `variables`.
        clipped_sum: Sum over the batch of each example's gradient times its clip factor.
    """

    variables: list[Any]
    probes: list[Any]
    squared_norms: SquaredNorms
    clipped_sum: ClippedSum


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


# ------------------------------------------------------------------------ norm helpers


def _flat_rows(t: Any, width: int) -> Any:
    tf = tensorflow()
    return tf.reshape(t, [-1, width])


def product_squared_norms(a: Any, g: Any, *, bias: bool) -> Any:
    """Per-example squared norm of the gradient of `a @ W (+ b)`.

    Args:
        a: The product's input, [batch, steps, in].
        g: The gradient at its output, [batch, steps, out].
        bias: Count the bias gradient `sum_t g_t` too.
    """
    tf = tensorflow()
    steps, fan_in, fan_out = a.shape[1], a.shape[2], g.shape[2]
    ghost = steps * steps * (fan_in + fan_out)
    materialised = steps * fan_in * fan_out
    if ghost <= materialised:
        # The ghost norm (Goodfellow, 2015; Li et al., 2022): ||sum_t a_t g_t^T||^2 =
        # sum_{t,s} (a_t . a_s)(g_t . g_s), without forming the [in, out] gradient.
        grams = tf.einsum("bti,bsi->bts", a, a), tf.einsum("bto,bso->bts", g, g)
        norms = tf.reduce_sum(grams[0] * grams[1], axis=[1, 2])
        if bias:  # ||sum_t g_t||^2 = sum_{t,s} g_t . g_s
            norms += tf.reduce_sum(grams[1], axis=[1, 2])
        return norms
    per_example = tf.einsum("btk,btg->bkg", a, g)
    norms = tf.reduce_sum(tf.square(per_example), axis=[1, 2])
    if bias:
        norms += tf.reduce_sum(tf.square(tf.reduce_sum(g, axis=1)), axis=1)
    return norms


def embedding_squared_norms(rows: Any, ids: Any) -> Any:
    """Per-example squared norm of an embedding table's gradient.

    Args:
        rows: The gradient at each looked-up row, [batch * steps, width].
        ids: The ids looked up, [batch, steps].

    Each example's gradient touches the rows of its ids: the sum of the gradients of an id's
    occurrences in the example. Rows are summed per (example, id), then squared and summed
    per example: O(batch * steps * width).
    """
    tf = tensorflow()
    batch = tf.shape(ids)[0]
    flat = tf.cast(tf.reshape(ids, [-1]), tf.int64)
    example = tf.repeat(tf.range(batch, dtype=tf.int64), tf.size(flat) // tf.cast(batch, tf.int32))
    span = tf.reduce_max(flat) + 1
    pairs, index = tf.unique(example * span + flat)
    summed = tf.math.unsorted_segment_sum(rows, index, tf.size(pairs))
    return tf.math.unsorted_segment_sum(tf.reduce_sum(tf.square(summed), axis=1),
                                        pairs // span, batch)


def _product_sum(a: Any, g: Any) -> Any:
    """sum over batch and steps of a_bt g_bt^T: [in, out]."""
    tf = tensorflow()
    return tf.matmul(
        _flat_rows(a, a.shape[-1]), _flat_rows(g, g.shape[-1]), transpose_a=True
    )


def _scaled(g: Any, factors: Any) -> Any:
    tf = tensorflow()
    return g * tf.reshape(factors, [-1] + [1] * (len(g.shape) - 1))


def _probe(tape: Any, like: Any) -> Any:
    tf = tensorflow()
    probe = tf.zeros_like(like)
    tape.watch(probe)
    return probe


def _as_steps(x: Any) -> Any:
    """[batch, ..., features] as [batch, steps, features] (a 2-D input has one step)."""
    tf = tensorflow()
    if len(x.shape) == 2:
        return x[:, None, :]
    if len(x.shape) == 3:
        return x
    return tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])


# ------------------------------------------------------------------------ layers


def _dense(layer: Any, x: Any, tape: Any, training: bool) -> tuple[Any, Term]:
    tf = tensorflow()
    kernel = tf.stop_gradient(layer.kernel)
    a = _as_steps(x)
    z = tf.matmul(_flat_rows(a, a.shape[-1]), kernel)
    z = tf.reshape(z, [tf.shape(a)[0], a.shape[1], kernel.shape[1]])
    if layer.use_bias:
        z = z + tf.stop_gradient(layer.bias)
    probe = _probe(tape, z)
    z = z + probe
    out = tf.reshape(z, tf.concat([tf.shape(x)[:-1], [kernel.shape[1]]], 0))
    out.set_shape(x.shape[:-1].concatenate([kernel.shape[1]]))
    if layer.activation is not None:
        out = layer.activation(out)

    def squared_norms(grads: list[Any]) -> Any:
        return product_squared_norms(a, grads[0], bias=layer.use_bias)

    def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
        g = _scaled(grads[0], factors)
        out = [_product_sum(a, g)]
        if layer.use_bias:
            out.append(tf.reduce_sum(g, axis=[0, 1]))
        return out

    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    return out, Term(variables, [probe], squared_norms, clipped_sum)


def _embedding(layer: Any, x: Any, tape: Any, training: bool) -> tuple[Any, Term]:
    tf = tensorflow()
    ids = tf.cast(x, "int32")
    table = layer.embeddings
    out = tf.nn.embedding_lookup(tf.stop_gradient(table), ids)
    probe = _probe(tape, out)
    out = out + probe
    width = table.shape[1]

    def squared_norms(grads: list[Any]) -> Any:
        return embedding_squared_norms(_flat_rows(grads[0], width), ids)

    def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
        g = _flat_rows(_scaled(grads[0], factors), width)
        return [tf.math.unsorted_segment_sum(g, tf.reshape(ids, [-1]), table.shape[0])]

    return out, Term([table], [probe], squared_norms, clipped_sum)


def _layer_normalization(layer: Any, x: Any, tape: Any, training: bool) -> tuple[Any, Term]:
    tf = tensorflow()
    axes = [a % len(x.shape) for a in layer.axis]
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    normalised = (x - mean) * tf.math.rsqrt(variance + layer.epsilon)
    out = normalised
    if layer.scale:
        out = out * tf.stop_gradient(layer.gamma)
    if layer.center:
        out = out + tf.stop_gradient(layer.beta)
    probe = _probe(tape, out)
    out = out + probe
    reduce = list(range(1, len(x.shape) - len(axes)))

    def per_example(grads: list[Any]) -> list[Any]:
        g = grads[0]
        parts = []
        if layer.scale:
            parts.append(tf.reduce_sum(g * normalised, axis=reduce))
        if layer.center:
            parts.append(tf.reduce_sum(g, axis=reduce))
        return parts

    def squared_norms(grads: list[Any]) -> Any:
        return tf.add_n(
            [
                tf.reduce_sum(tf.square(tf.reshape(p, [tf.shape(p)[0], -1])), axis=1)
                for p in per_example(grads)
            ]
        )

    def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
        return [tf.reduce_sum(_scaled(p, factors), axis=0) for p in per_example(grads)]

    variables = ([layer.gamma] if layer.scale else []) + ([layer.beta] if layer.center else [])
    return out, Term(variables, [probe], squared_norms, clipped_sum)


def _time_major(t: Any) -> Any:
    tf = tensorflow()
    return tf.transpose(t, [1, 0] + list(range(2, len(t.shape))))


def _recurrent_inputs(layer: Any, x: Any, width: int, bias: Optional[Any]) -> tuple[Any, Any]:
    """The sequence as the layer reads it, and its input projection for every step."""
    tf = tensorflow()
    if layer.go_backwards:
        x = tf.reverse(x, axis=[1])
    cell = layer.cell
    z = tf.matmul(_flat_rows(x, x.shape[-1]), tf.stop_gradient(cell.kernel))
    z = tf.reshape(z, [tf.shape(x)[0], x.shape[1], width])
    if bias is not None:
        z = z + tf.stop_gradient(bias)
    return x, z


def _previous(hs: Any, h0: Any) -> Any:
    """[steps, batch, units] states before each step, batch-major."""
    tf = tensorflow()
    return _time_major(tf.concat([h0[None], hs[:-1]], axis=0))


def _recurrent_output(layer: Any, hs: Any) -> Any:
    return _time_major(hs) if layer.return_sequences else hs[-1]


def _lstm(layer: Any, x: Any, tape: Any, training: bool) -> tuple[Any, Term]:
    tf = tensorflow()
    cell = layer.cell
    units = cell.units
    act, rec_act = cell.activation, cell.recurrent_activation
    x, z_in = _recurrent_inputs(layer, x, 4 * units, cell.bias if cell.use_bias else None)
    probe = _probe(tape, z_in)
    recurrent = tf.stop_gradient(cell.recurrent_kernel)
    zeros = tf.zeros([tf.shape(x)[0], units], dtype=z_in.dtype)

    def step(carry: tuple[Any, Any], z_t: Any) -> tuple[Any, Any]:
        h, c = carry
        z = z_t + tf.matmul(h, recurrent)
        i, f, c_hat, o = tf.split(z, 4, axis=1)
        c = rec_act(f) * c + rec_act(i) * act(c_hat)
        return rec_act(o) * act(c), c

    hs, _ = tf.scan(step, _time_major(z_in + probe), initializer=(zeros, zeros))
    a = tf.concat([x, _previous(hs, zeros)], axis=-1)  # what [kernel; recurrent] multiply

    def squared_norms(grads: list[Any]) -> Any:
        return product_squared_norms(a, grads[0], bias=cell.use_bias)

    def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
        g = _scaled(grads[0], factors)
        both = _product_sum(a, g)
        out = [both[: x.shape[-1]], both[x.shape[-1] :]]
        if cell.use_bias:
            out.append(tf.reduce_sum(g, axis=[0, 1]))
        return out

    variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])
    return _recurrent_output(layer, hs), Term(variables, [probe], squared_norms, clipped_sum)


def _gru(layer: Any, x: Any, tape: Any, training: bool) -> tuple[Any, Term]:
    tf = tensorflow()
    cell = layer.cell
    units = cell.units
    act, rec_act = cell.activation, cell.recurrent_activation
    bias = cell.bias if cell.use_bias else None
    after = cell.reset_after
    input_bias = None if bias is None else (bias[0] if after else bias)
    x, z_in = _recurrent_inputs(layer, x, 3 * units, input_bias)
    probe_x = _probe(tape, z_in)
    recurrent = tf.stop_gradient(cell.recurrent_kernel)
    zeros = tf.zeros([tf.shape(x)[0], units], dtype=z_in.dtype)
    # With reset_after the recurrent product is one [units, 3 units] matmul of h; without,
    # the candidate's third multiplies r * h, so it is a product (and a probe) of its own.
    width = 3 * units if after else 2 * units
    probe_r = _probe(tape, tf.zeros([x.shape[1], tf.shape(x)[0], width], z_in.dtype))
    probe_h = None if after else _probe(tape, tf.zeros([x.shape[1], tf.shape(x)[0], units]))
    recurrent_bias = None if bias is None or not after else tf.stop_gradient(bias[1])

    def step(carry: tuple[Any, Any], inputs: tuple[Any, ...]) -> tuple[Any, Any]:
        h, _ = carry
        z_t, p_r = inputs[0], inputs[1]
        x_z, x_r, x_h = tf.split(z_t, 3, axis=1)
        if after:
            inner = tf.matmul(h, recurrent)
            if recurrent_bias is not None:
                inner = inner + recurrent_bias
            r_z, r_r, r_h = tf.split(inner + p_r, 3, axis=1)
            z = rec_act(x_z + r_z)
            r = rec_act(x_r + r_r)
            h_hat = act(x_h + r * r_h)
            reset_h = h  # unused: keeps one loop signature for both forms
        else:
            r_z, r_r = tf.split(tf.matmul(h, recurrent[:, : 2 * units]) + p_r, 2, axis=1)
            z = rec_act(x_z + r_z)
            r = rec_act(x_r + r_r)
            reset_h = r * h
            h_hat = act(x_h + tf.matmul(reset_h, recurrent[:, 2 * units :]) + inputs[2])
        return z * h + (1 - z) * h_hat, reset_h

    scanned = (_time_major(z_in + probe_x), probe_r) + (() if after else (probe_h,))
    hs, reset_hs = tf.scan(step, scanned, initializer=(zeros, zeros))
    h_prev = _previous(hs, zeros)
    reset_prev = _time_major(reset_hs)
    probes = [probe_x, probe_r] + ([] if after else [probe_h])

    def batch_major(grads: list[Any]) -> list[Any]:
        return [grads[0]] + [_time_major(g) for g in grads[1:]]

    def squared_norms(grads: list[Any]) -> Any:
        g = batch_major(grads)
        norms = product_squared_norms(x, g[0], bias=bias is not None)
        norms += product_squared_norms(h_prev, g[1], bias=recurrent_bias is not None)
        if not after:
            norms += product_squared_norms(reset_prev, g[2], bias=False)
        return norms

    def clipped_sum(grads: list[Any], factors: Any) -> list[Any]:
        g = [_scaled(t, factors) for t in batch_major(grads)]
        kernel = _product_sum(x, g[0])
        if after:
            rec = _product_sum(h_prev, g[1])
        else:
            rec = tf.concat([_product_sum(h_prev, g[1]), _product_sum(reset_prev, g[2])], 1)
        out = [kernel, rec]
        if bias is not None:
            b_in = tf.reduce_sum(g[0], axis=[0, 1])
            out.append(tf.stack([b_in, tf.reduce_sum(g[1], axis=[0, 1])]) if after else b_in)
        return out

    variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if bias is not None else [])
    return _recurrent_output(layer, hs), Term(variables, probes, squared_norms, clipped_sum)


# Keras layer class name -> forward with probes. Layers without weights are not listed:
# they are called as Keras defines them.
FORWARD: dict[str, Callable[..., tuple[Any, Term]]] = {
    "Dense": _dense,
    "Embedding": _embedding,
    "LayerNormalization": _layer_normalization,
    "LSTM": _lstm,
    "GRU": _gru,
}


def unsupported(layer: Any) -> Optional[str]:
    """Why the fast implementation cannot train `layer`, or None when it can."""
    name = type(layer).__name__
    if name not in FORWARD:
        return None if not layer.trainable_weights else f"no per-example norms for {name}"
    if name == "Embedding" and layer.mask_zero:
        return "mask_zero is not supported"
    if name in ("LSTM", "GRU"):
        cell = layer.cell
        if cell.dropout or cell.recurrent_dropout:
            return "dropout and recurrent_dropout inside the recurrent layer are not supported"
    return None


# ------------------------------------------------------------------------ the step


@dataclasses.dataclass(frozen=True)
class Graph:
    """A model's layers in call order, by name (names, not layers: Keras would track them).

    Attributes:
        layers: (layer name, names of the values it takes) in call order.
        input: The name of the model's input.
        output: The name of the layer giving the model's output.
    """

    layers: tuple[tuple[str, tuple[str, ...]], ...]
    input: str
    output: str


def attach(model: Any, graph: Graph, dp: FastDP) -> None:
    """Make `model` (built by `model_classes`) train with the fast implementation.

    Args:
        model: The Keras model.
        graph: Its layers in call order.
        dp: The clipping norm and noise multiplier.
    """
    tf = tensorflow()
    model._fast_dp_graph = graph
    model.fast_dp = dp
    # Noise must be unpredictable: its key comes from the operating system's entropy, not
    # from the run's seed. Each step's noise is drawn from (key, step), so every replica
    # of a distributed run draws the same noise (the key is a variable: a distribution
    # strategy gives every worker the chief's), and a resumed run, whose checkpoint holds
    # the key and the step, goes on with the stream instead of repeating it.
    key = secret_key()
    model.dp_noise = tf.train.Checkpoint(
        key=tf.Variable(key, trainable=False, name="dp_noise_key")
    )


@functools.cache
def model_classes() -> tuple[type, type]:
    """Keras model classes (Sequential, functional) whose `fit` is fast per-example DP-SGD."""
    tf = tensorflow()

    # The architecture is plain Keras; the DP step is training behaviour. `to_json` names
    # the plain class, so the JSON loads with tf.keras.models.model_from_json.
    class FastDPSequential(tf.keras.Sequential):
        def train_step(self, data: Any) -> dict[str, Any]:
            return train_step(self, data)

        def _updated_config(self) -> dict[str, Any]:
            return {**super()._updated_config(), "class_name": "Sequential"}

    class FastDPModel(tf.keras.Model):
        def train_step(self, data: Any) -> dict[str, Any]:
            return train_step(self, data)

        def _updated_config(self) -> dict[str, Any]:
            return {**super()._updated_config(), "class_name": "Functional"}

    return FastDPSequential, FastDPModel


def forward(
    model: Any, x: Any, tape: Any, *, training: bool
) -> tuple[Any, list[Term]]:
    """Run `model` on `x` with probes on every weight product.

    Returns:
        The model's output (same values as `model(x, training=training)`) and one `Term`
        per layer with weights.
    """
    graph: Graph = model._fast_dp_graph
    values: dict[str, Any] = {graph.input: x}
    terms = []
    for name, inputs in graph.layers:
        layer = model.get_layer(name)
        args = [values[n] for n in inputs]
        run = FORWARD.get(type(layer).__name__)
        if run is None:
            if layer.trainable_weights:
                raise ValueError(f"layer {layer.name!r}: {unsupported(layer)}")
            values[layer.name] = layer(args if len(args) > 1 else args[0], training=training)
            continue
        reason = unsupported(layer)
        if reason is not None:
            raise ValueError(f"layer {layer.name!r}: {reason}")
        values[layer.name], term = run(layer, args[0], tape, training)
        terms.append(term)
    return values[graph.output], terms


def per_example_losses(model: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
    """Each example's loss as tensorflow-privacy defines it: the mean over its elements."""
    tf = tensorflow()
    losses = model.compiled_loss(y, y_pred, sample_weight, regularization_losses=model.losses)
    return tf.reduce_mean(tf.reshape(losses, [tf.shape(y_pred)[0], -1]), axis=1)


def clipped_gradients(
    model: Any,
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
        y_pred, terms = forward(model, x, tape, training=training)
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
    # As tf.clip_by_global_norm, which tensorflow-privacy applies to each microbatch.
    factors = l2_norm_clip / tf.maximum(norms, l2_norm_clip)
    by_variable = {}
    for term, g in zip(terms, per_term):
        for variable, gradient in zip(term.variables, term.clipped_sum(g, factors)):
            by_variable[id(variable)] = gradient
    missing = [v.name for v in model.trainable_variables if id(v) not in by_variable]
    if missing:
        raise ValueError(f"no per-example gradient for {', '.join(missing)}")
    ordered = [by_variable[id(v)] for v in model.trainable_variables]
    return ordered, norms, losses, y_pred


def noised_mean(gradients: list[Any], dp: FastDP, key: Any, step: Any) -> list[Any]:
    """DP-SGD's gradient: (clipped sum + N(0, (clip * noise)^2)) / dp.batch_size.

    Args:
        gradients: This replica's clipped sums.
        dp: The clipping norm, noise multiplier and (expected) global batch size.
        key: The secret noise key, an int64 [2] tensor.
        step: The step number: with the key it picks the noise.

    Under a distribution strategy each replica returns its share and the optimizer sums
    the shares: every replica draws the same noise (same key and step) and adds 1/replicas
    of it, so the sum holds the noise once, and divides by the global batch size.
    """
    tf = tensorflow()
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    stddev = dp.l2_norm_clip * dp.noise_multiplier
    size = tf.constant(dp.batch_size, gradients[0].dtype)
    seed = tf.random.experimental.stateless_fold_in(key, tf.cast(step, tf.int64))
    out = []
    for i, g in enumerate(gradients):
        if stddev > 0:
            draw = tf.random.stateless_normal(
                tf.shape(g), tf.random.experimental.stateless_fold_in(seed, i),
                stddev=stddev, dtype=g.dtype,
            )
            g = g + draw / replicas
        out.append(g / size)
    return out


def train_step(model: Any, data: Any) -> dict[str, Any]:
    """Keras `train_step` of a model compiled with the fast implementation."""
    tf = tensorflow()
    x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
    dp: FastDP = model.fast_dp
    gradients, _, _, y_pred = clipped_gradients(
        model, x, y, sample_weight, l2_norm_clip=dp.l2_norm_clip
    )
    gradients = noised_mean(gradients, dp, model.dp_noise.key, model.optimizer.iterations)
    model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return model.compute_metrics(x, y, y_pred, sample_weight)

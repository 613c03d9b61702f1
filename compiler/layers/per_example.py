"""The arithmetic of per-example gradient norms, which each layer's fast-DP forward uses.

Every weight of a supported layer enters the forward pass through a product `a @ W` (plus a
bias). The forward pass adds a watched zero tensor, a *probe*, to each product's output; one
backward pass gives the gradient `g` at every probe, per example and time step. An
example's gradient for `W` is `sum_t a_t g_t^T`, so its squared norm is either
`sum_{t,s} (a_t . a_s)(g_t . g_s)` (a "ghost norm": two [T, T] Gram matrices per example)
or the norm of the materialised [in, out] gradient, whichever costs fewer operations for
the layer's sizes. The clipped sum is then one product per weight:
`sum_b sum_t a_bt (c_b g_bt)^T`, with `c_b` the example's clip factor.

The DP step itself (clipping, noise, the Keras models) is `compiler.privacy.fast`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from compiler.tf import tensorflow

SquaredNorms = Callable[[list[Any]], Any]  # probe gradients -> [batch] squared norms
ClippedSum = Callable[[list[Any], Any], list[Any]]  # (probe gradients, clip factors) -> grads


@dataclasses.dataclass
class Term:
    """One layer's weights in the DP step.

    Attributes:
        variables: The layer's trainable variables, in the order `clipped_sum` returns them.
        probes: The zero tensors added to the layer's products (watched by the tape).
        squared_norms: Per-example squared gradient norm of all `variables`.
        clipped_sum: Sum over the batch of each example's gradient times its clip factor.
    """

    variables: list[Any]
    probes: list[Any]
    squared_norms: SquaredNorms
    clipped_sum: ClippedSum


def flat_rows(t: Any, width: int) -> Any:
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
    return tf.math.unsorted_segment_sum(
        tf.reduce_sum(tf.square(summed), axis=1), pairs // span, batch
    )


def product_sum(a: Any, g: Any) -> Any:
    """sum over batch and steps of a_bt g_bt^T: [in, out]."""
    tf = tensorflow()
    return tf.matmul(flat_rows(a, a.shape[-1]), flat_rows(g, g.shape[-1]), transpose_a=True)


def scaled(g: Any, factors: Any) -> Any:
    """`g` with each example's slice times its factor."""
    tf = tensorflow()
    return g * tf.reshape(factors, [-1] + [1] * (len(g.shape) - 1))


def probe(tape: Any, like: Any) -> Any:
    """A zero tensor shaped like `like`, watched by `tape`."""
    tf = tensorflow()
    zeros = tf.zeros_like(like)
    tape.watch(zeros)
    return zeros


def probed_product(tape: Any, a: Any, kernel: Any, bias: Any = None) -> tuple[Any, Any]:
    """`a @ kernel (+ bias)` with the weights held constant, plus a probe watched by `tape`.

    Args:
        a: The product's input, [batch, steps, in].
        kernel: The weight, [in, ...] (its trailing axes are flattened to `out`).
        bias: The bias, of `out` values in any shape, or None.

    Returns:
        (the output [batch, steps, out] with the probe added, the probe).
    """
    tf = tensorflow()
    flat = tf.reshape(tf.stop_gradient(kernel), [a.shape[-1], -1])
    z = tf.matmul(flat_rows(a, a.shape[-1]), flat)
    z = tf.reshape(z, [tf.shape(a)[0], tf.shape(a)[1], flat.shape[1]])
    if bias is not None:
        z = z + tf.reshape(tf.stop_gradient(bias), [-1])
    zeros = probe(tape, z)
    return z + zeros, zeros


def as_steps(x: Any) -> Any:
    """[batch, ..., features] as [batch, steps, features] (a 2-D input has one step)."""
    tf = tensorflow()
    if len(x.shape) == 2:
        return x[:, None, :]
    if len(x.shape) == 3:
        return x
    return tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]])


def time_major(t: Any) -> Any:
    """Swap the first two axes: [batch, steps, ...] <-> [steps, batch, ...]."""
    tf = tensorflow()
    return tf.transpose(t, [1, 0] + list(range(2, len(t.shape))))

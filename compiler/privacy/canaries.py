"""Gradient canaries: a white-box audit of the fast DP step from the inside.

Dirac canaries (Nasr et al., "Tight Auditing of Differentially Private Machine Learning",
USENIX Security 2023; Steinke, Nasr and Jagielski, NeurIPS 2023, Section 7). Canary i is a
gradient of norm `norm` x l2_norm_clip on one coordinate c_i of the model's parameters; the
coordinates are distinct, drawn from a secret key. Each canary is included with secret
probability 1/2, and an included canary is an example of the run like any record:

- the step's sampler draws it (Poisson, with the run's probability q at every step);
- its gradient goes through the step's clipping (`fast.clip_factors`), so its raw norm,
  above the clip, must come out as exactly l2_norm_clip;
- it is summed with the examples' clipped gradients before the noise.

What DP-SGD releases at each step is the noisy sum, and that is what its guarantee covers.
`Observer` reads the noisy sum along each canary's coordinate, z_t = sum[c_i] /
l2_norm_clip, and keeps two scores per canary:

- `sum`: the sum over steps of z_t;
- `likelihood`: the sum over steps of log(1 - q + q exp((z_t - 1/2) / sigma^2)), the log
  likelihood ratio of "included" against "excluded" for a coordinate that holds the canary
  and the noise only, at the claimed q and noise multiplier sigma: the Neyman-Pearson test
  of one canary, if the step does what it claims.

Scores are functions of what was released, so any guessing rule on them is a valid attack.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any

import numpy as np

from compiler.tf import tensorflow

# A canary's raw norm, as a multiple of l2_norm_clip: above the clip, so that a step that
# skips clipping releases it at this size instead of l2_norm_clip.
CANARY_NORM = 4.0
SCORES = ("likelihood", "sum")


@dataclasses.dataclass(frozen=True)
class GradientCanaries:
    """A white-box audit's canaries and their secrets.

    Attributes:
        included: Canary i is trained on (an example of the run) iff included[i].
        key: A secret 128-bit integer; it picks the canaries' coordinates.
        norm: The canaries' raw norm, as a multiple of l2_norm_clip.
    """

    included: tuple[bool, ...]
    key: int
    norm: float = CANARY_NORM

    @classmethod
    def draw(cls, count: int) -> "GradientCanaries":
        """`count` canaries, each included with probability 1/2: coins and key from the OS."""
        coins = np.frombuffer(secrets.token_bytes(count), dtype=np.uint8) & 1
        return cls(tuple(bool(c) for c in coins), secrets.randbits(128))

    @property
    def count(self) -> int:
        return len(self.included)

    @property
    def trained(self) -> np.ndarray:
        """The included canaries' numbers: the sampler's extra examples, in order."""
        return np.flatnonzero(np.array(self.included, dtype=bool))

    def coordinates(self, parameters: int) -> np.ndarray:
        """Each canary's coordinate among `parameters` flattened parameters (distinct)."""
        if self.count > parameters:
            raise ValueError(
                f"expected at most one canary per parameter: {self.count} canaries, "
                f"{parameters} parameters"
            )
        rng = np.random.default_rng(np.random.SeedSequence(self.key))
        return rng.choice(parameters, size=self.count, replace=False)


class Observer:
    """A model's canaries inside its train step: their gradients in, their scores out.

    A plain object (Keras does not track it): `state` holds the scores as variables, for
    the run's checkpoint, so a resumed audit goes on adding to them.
    """

    def __init__(
        self,
        variables: list[Any],
        canaries: GradientCanaries,
        *,
        sampling_probability: float,
        noise_multiplier: float,
        l2_norm_clip: float,
    ) -> None:
        tf = tensorflow()
        sizes = [int(np.prod(v.shape)) for v in variables]
        starts = np.concatenate(([0], np.cumsum(sizes)))
        flat = canaries.coordinates(int(starts[-1]))
        variable_of = np.searchsorted(starts, flat, side="right") - 1
        offset_of = flat - starts[variable_of]
        self.norm = canaries.norm
        self.clip = l2_norm_clip
        self.q = sampling_probability
        self.sigma = noise_multiplier
        # Coordinates are read variable by variable; `by_canary` puts them in canary order.
        self.groups: list[tuple[int, Any]] = []
        order = []
        for i in range(len(variables)):
            mine = np.flatnonzero(variable_of == i)
            if len(mine):
                self.groups.append((i, tf.constant(offset_of[mine], tf.int64)))
                order.extend(mine)
        self._by_canary = tf.constant(np.argsort(np.array(order, dtype=np.int64)), tf.int64)
        self._variable_of = tf.constant(variable_of, tf.int32)
        self._offset_of = tf.constant(offset_of, tf.int64)
        zeros = np.zeros(canaries.count, np.float64)
        aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.state = tf.train.Checkpoint(
            **{
                name: tf.Variable(zeros, trainable=False, name=name, aggregation=aggregation)
                for name in SCORES
            }
        )

    def add(self, gradients: list[Any], sampled: Any, l2_norm_clip: float) -> list[Any]:
        """The clipped sums with the sampled canaries' clipped gradients added."""
        from compiler.privacy import fast  # its clipping, as the examples' (a module look-up)

        tf = tensorflow()
        dtype = gradients[0].dtype
        norms = tf.fill(tf.shape(sampled), tf.constant(self.norm * l2_norm_clip, dtype))
        values = fast.clip_factors(norms, l2_norm_clip) * norms
        where = tf.gather(self._variable_of, sampled)
        offsets = tf.gather(self._offset_of, sampled)
        out = list(gradients)
        for i, _ in self.groups:
            mine = tf.equal(where, i)
            flat = tf.tensor_scatter_nd_add(
                tf.reshape(out[i], [-1]),
                tf.boolean_mask(offsets, mine)[:, None],
                tf.boolean_mask(values, mine),
            )
            out[i] = tf.reshape(flat, tf.shape(out[i]))
        return out

    def observe(self, noisy: list[Any]) -> None:
        """Add this step's released noisy sums, along the canaries' coordinates, to the scores."""
        tf = tensorflow()
        parts = [tf.gather(tf.reshape(noisy[i], [-1]), offsets) for i, offsets in self.groups]
        released = tf.gather(tf.concat(parts, axis=0), self._by_canary)
        # Each replica holds its share (its examples and its part of the noise): the sum
        # over replicas is what the optimizer applies.
        released = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, released
        )
        z = tf.cast(released, tf.float64) / self.clip
        self.state.sum.assign_add(z)
        if self.sigma > 0:
            excluded = tf.fill(tf.shape(z), tf.constant(_log(1.0 - self.q), tf.float64))
            included = _log(self.q) + (z - 0.5) / self.sigma**2
            self.state.likelihood.assign_add(
                tf.reduce_logsumexp(tf.stack([excluded, included]), axis=0)
            )
        else:
            self.state.likelihood.assign_add(z)


def saved_scores(prefix: str) -> dict[str, np.ndarray]:
    """The canaries' scores, by canary number, from a run's checkpoint."""
    tf = tensorflow()
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(f"canaries/{name}/.ATTRIBUTES/VARIABLE_VALUE") for name in SCORES
    }


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf

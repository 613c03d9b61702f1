"""Privacy accounting for DP-SGD specs, with dp_accounting's RDP accountant.

The model of a run: each step samples a batch by Poisson sampling with probability
q = batch_size / examples, for ceil(epochs / q) steps, and adds Gaussian noise of standard
deviation noise_multiplier * l2_norm_clip to the sum of clipped microbatch gradients. When a
microbatch holds more than one example (num_microbatches < batch_size), one example can
change a clipped microbatch gradient by up to 2 * l2_norm_clip under add-or-remove
adjacency, so the effective noise multiplier is halved. This is tensorflow-privacy's
`compute_dp_sgd_privacy_statement` model; its deprecated `compute_dp_sgd_privacy` ignores the
doubling.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from compiler.diagnostics import Diagnostic, SpecError
from compiler.lang.spec import Spec

EPSILON_WARNING_BOUND = 10.0


@dataclasses.dataclass(frozen=True)
class PrivacyReport:
    """An (epsilon, delta) guarantee and what it assumes."""

    epsilon: float
    delta: float
    noise_multiplier: float
    examples: int
    batch_size: int
    epochs: float
    num_microbatches: int
    sampling_probability: float
    steps: int
    microbatching: bool
    accountant: str = "RDP (dp_accounting.rdp.RdpAccountant)"

    @property
    def assumptions(self) -> list[str]:
        return [
            "example-level DP, add-or-remove-one adjacency",
            f"Poisson sampling with probability {self.sampling_probability:.6g} "
            f"(batch {self.batch_size} of {self.examples} examples), {self.steps} steps",
            (
                f"microbatches of {self.batch_size // self.num_microbatches} examples: "
                "sensitivity doubled (noise multiplier halved in the accounting)"
                if self.microbatching
                else "one example per microbatch: sensitivity = l2_norm_clip"
            ),
            "all intermediate checkpoints are released (no privacy amplification by iteration)",
        ]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["assumptions"] = self.assumptions
        if math.isinf(self.epsilon):
            out["epsilon"] = None  # JSON has no infinity; null = no guarantee
        return out


def _event(noise_multiplier: float, q: float, steps: int, microbatching: bool) -> Any:
    import dp_accounting

    sigma = noise_multiplier / 2 if microbatching else noise_multiplier
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def _plan(batch_size: int, examples: int, epochs: float) -> tuple[float, int]:
    q = batch_size / examples
    return q, int(math.ceil(epochs / q))


def compute_epsilon(
    *,
    noise_multiplier: float,
    batch_size: int,
    examples: int,
    epochs: float,
    delta: float,
    microbatching: bool,
) -> float:
    """Epsilon of DP-SGD at `delta`; infinity when there is no noise."""
    q, steps = _plan(batch_size, examples, epochs)
    return epsilon_for_steps(noise_multiplier, q, steps, delta, microbatching)


def epsilon_for_steps(
    noise_multiplier: float, q: float, steps: int, delta: float, microbatching: bool
) -> float:
    """Epsilon at `delta` after `steps` Poisson-sampled steps with probability `q`."""
    from dp_accounting.rdp import RdpAccountant

    if noise_multiplier == 0:
        return math.inf
    if steps == 0:
        return 0.0
    accountant = RdpAccountant()
    accountant.compose(_event(noise_multiplier, q, steps, microbatching))
    return float(accountant.get_epsilon(delta))


def noise_for_epsilon(
    *,
    target_epsilon: float,
    batch_size: int,
    examples: int,
    epochs: float,
    delta: float,
    microbatching: bool,
) -> float:
    """The smallest noise multiplier whose run reaches at most `target_epsilon`."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    q, steps = _plan(batch_size, examples, epochs)
    return float(
        dp_accounting.calibrate_dp_mechanism(
            RdpAccountant,
            lambda sigma: _event(sigma, q, steps, microbatching),
            target_epsilon,
            delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(1e-3, 1e3),
            tol=1e-4,
        )
    )


def _problem(spec: Spec, path: tuple[str, ...], message: str) -> SpecError:
    """An error about the spec (located in its file) or about an argument of the run."""
    source = getattr(spec, "_source", None)
    if path[0] == "training" and source is not None:
        return SpecError([source.diagnostic(path, "privacy", message)])
    return SpecError([Diagnostic("error", "privacy", message, ".".join(path), "<arguments>")])


def privacy_report(
    spec: Spec,
    examples: int,
    *,
    epochs: Optional[float] = None,
    delta: Optional[float] = None,
    target_epsilon: Optional[float] = None,
    steps: Optional[int] = None,
) -> PrivacyReport:
    """The guarantee of training `spec` on `examples` examples.

    Args:
        spec: A resolved spec with a `training.privacy` block.
        examples: Number of training examples (sequences, for a text model).
        epochs: Defaults to training.epochs.
        delta: Defaults to privacy.delta, else 1 / examples.
        target_epsilon: Solve for the noise multiplier reaching this epsilon instead of
            using the spec's noise (defaults to privacy.target_epsilon when the spec gives
            no noise multiplier).
        steps: The steps a run actually took; the guarantee is then for those steps
            (epochs = steps x batch / examples) rather than for the planned epochs.

    Raises:
        SpecError: when the spec has no privacy block or the numbers make no run.
    """
    privacy = spec.training.privacy
    if privacy is None:
        raise _problem(
            spec, ("training",), "expected a training.privacy block (a DP spec), received none"
        )
    batch = spec.training.batch_size or 0
    if examples < batch:
        raise _problem(
            spec,
            ("examples",),
            f"expected at least training.batch_size = {batch} examples, received {examples}",
        )
    if steps is not None:
        epochs = steps * batch / examples
    epochs = float(epochs if epochs is not None else spec.training.epochs)
    if epochs <= 0 and steps is None:
        raise _problem(
            spec, ("epochs",), f"expected a positive number of epochs, received {epochs}"
        )
    delta = delta if delta is not None else privacy.delta
    delta = delta if delta is not None else 1.0 / examples
    if not 0 < delta < 1:
        raise _problem(spec, ("delta",), f"expected delta in (0, 1), received {delta}")
    microbatches = privacy.num_microbatches or batch
    microbatching = microbatches < batch
    target = (
        target_epsilon
        if target_epsilon is not None
        else (privacy.target_epsilon if privacy.noise_multiplier is None else None)
    )
    q, planned = _plan(batch, examples, epochs)
    steps = planned if steps is None else steps
    common = dict(batch_size=batch, examples=examples, epochs=epochs, delta=delta)
    if target is not None:
        noise = noise_for_epsilon(target_epsilon=target, microbatching=microbatching, **common)
    else:
        noise = float(privacy.noise_multiplier or 0.0)
    epsilon = epsilon_for_steps(noise, q, steps, delta, microbatching)
    return PrivacyReport(
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=noise,
        examples=examples,
        batch_size=batch,
        epochs=epochs,
        num_microbatches=microbatches,
        sampling_probability=q,
        steps=steps,
        microbatching=microbatching,
    )


def epsilon_warning(report: PrivacyReport) -> Optional[str]:
    """A plain warning when the guarantee is too weak to mean anything."""
    if report.epsilon <= EPSILON_WARNING_BOUND:
        return None
    eps = "infinite" if math.isinf(report.epsilon) else f"{report.epsilon:.4g}"
    return (
        f"epsilon is {eps} (delta {report.delta:.3g}), above {EPSILON_WARNING_BOUND:g}: this "
        "run gives no meaningful privacy guarantee; raise noise_multiplier, train fewer "
        "epochs or on more examples, or set target_epsilon"
    )


def weak_privacy_warning(spec: Spec, report: PrivacyReport) -> Optional[Diagnostic]:
    """`epsilon_warning` as a diagnostic at the spec's privacy settings, or None."""
    message = epsilon_warning(report)
    if message is None:
        return None
    from compiler.lang.parse import source_of

    return source_of(spec).diagnostic(
        ("training", "privacy"), "weak_privacy", message, severity="warning"
    )

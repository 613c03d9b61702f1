"""Privacy accounting for DP-SGD specs, with dp_accounting's PLD or RDP accountant.

What a run does, and so what is accounted for:

- **poisson** sampling (the default of the fast implementation): each of the `steps` steps
  includes every training record independently with probability q = batch_size / records,
  chosen with a secret key. Each step is a Poisson-subsampled Gaussian mechanism: the sum of
  the clipped gradients plus noise of standard deviation noise_multiplier * l2_norm_clip,
  composed `steps` times, under add-or-remove-one adjacency. This is the model in which
  subsampling amplifies privacy, and the model the accountant is given.
- **shuffle** sampling (tensorflow-privacy's optimizers, which need full batches): a secret
  permutation per epoch cut into batches. Amplification by Poisson subsampling does not
  carry over to shuffling (Chua et al., "How Private are DP-SGD Implementations?", ICML
  2024), so no amplification is claimed: each record is in exactly one step of an epoch,
  and the guarantee is the composition of one Gaussian mechanism per epoch touched. Under
  replace-one adjacency (the dataset size is public: batches are full) one record changes
  its clipped gradient by up to 2 * l2_norm_clip, so the noise is halved in the accounting.

When a microbatch holds more than one example (num_microbatches < batch_size), one example
can change a clipped microbatch gradient by up to 2 * l2_norm_clip under add-or-remove
adjacency too, so the effective noise multiplier is halved. This is tensorflow-privacy's
`compute_dp_sgd_privacy_statement` model; its deprecated `compute_dp_sgd_privacy` ignores the
doubling.

On Python 3.11, tensorflow-privacy pins dp-accounting 0.4.3; 3.12 and later use 0.6.0. PLD
epsilons agree across them to about 1e-8 relative (the same with the same numpy; numpy 2's
FFT rounds differently). RDP epsilons of a Poisson-subsampled Gaussian differ: 0.4.3 stops
summing the fractional orders' series too early (fixed in 0.5.0), so its epsilon is low, by
up to about 1% below an effective noise multiplier of 1.5 (which the report then says) and
by less than 1e-6 above it.

Delta defaults to records^-1.1, strictly below 1 / records: a mechanism that publishes one
whole record at random satisfies (0, 1 / records)-DP, so a delta of that size permits it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Union

from compiler.diagnostics import Diagnostic, SpecError
from compiler.lang.checked import CheckedSpec, positionless
from compiler.lang.source import Source
from compiler.lang.spec import Spec

EPSILON_WARNING_BOUND = 10.0
DELTA_EXPONENT = 1.1
ACCOUNTANTS = ("pld", "rdp")
ACCOUNTANT_NAMES = {
    "pld": "PLD (dp_accounting.pld.PLDAccountant)",
    "rdp": "RDP (dp_accounting.rdp.RdpAccountant)",
}
# dp_accounting's default grid; its estimates are pessimistic, so the bound stays valid.
PLD_DISCRETIZATION = 1e-4


# Below this effective noise multiplier, dp-accounting before 0.5 cut the fractional RDP
# orders' series short (see the module docstring).
RDP_SERIES_NOISE = 1.5


@functools.cache
def rdp_series_cut_short() -> bool:
    """Whether the installed dp-accounting is one whose fractional-order RDP sums stop early."""
    from importlib.metadata import version

    major, minor = (int(p) for p in version("dp-accounting").split(".")[:2])
    return (major, minor) < (0, 5)


def default_delta(records: int) -> float:
    """The default delta: records^-1.1, strictly below 1 / records."""
    return float(records) ** -DELTA_EXPONENT


def delta_warning(delta: float, records: int) -> Optional[str]:
    """A plain warning when delta is too large to protect any one record."""
    if delta < 1.0 / records:
        return None
    return (
        f"expected delta below 1 / records = {1.0 / records:.3g}, received {delta:.3g}: a "
        "mechanism that publishes one whole record at random satisfies (0, 1/records)-DP, "
        f"so this delta allows it; remove delta (default records^-{DELTA_EXPONENT:g}) or "
        "set a smaller one"
    )


@dataclasses.dataclass(frozen=True)
class PrivacyReport:
    """An (epsilon, delta) guarantee and what it assumes.

    Attributes:
        epsilon: From the spec's accountant (infinity without noise).
        delta: The delta of the guarantee; `delta_rule` says where it came from.
        sampling: "poisson" or "shuffle" (see the module docstring).
        batch_size: The expected batch (poisson) or the batch (shuffle).
        sampling_probability: q = batch_size / examples.
        steps: Steps accounted for; `epochs` = steps / steps per epoch.
        accountant: "pld" or "rdp".
        epsilons: Epsilon by accountant; both when asked for (`compare=True`).
    """

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
    sampling: str = "poisson"
    accountant: str = "pld"
    delta_rule: str = "given"
    epsilons: dict[str, Optional[float]] = dataclasses.field(default_factory=dict)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.batch_size, self.examples)

    @property
    def assumptions(self) -> list[str]:
        if self.sampling == "poisson":
            sampled = [
                "example-level DP, add-or-remove-one adjacency",
                f"Poisson sampling: each step includes every example independently with "
                f"probability {self.sampling_probability:.6g} (expected batch "
                f"{self.batch_size} of {self.examples} examples), chosen with a secret key; "
                f"{self.steps} steps",
            ]
        else:
            epochs = epochs_touched(self.steps, self.steps_per_epoch)
            sampled = [
                "example-level DP, replace-one adjacency (full batches: the number of "
                "examples is public)",
                f"shuffling: a secret permutation per epoch cut into batches of "
                f"{self.batch_size}; no amplification by subsampling is claimed (it holds for "
                f"Poisson sampling, not for shuffling): each example is in one step of each "
                f"of the {epochs} epochs touched, a Gaussian mechanism of sensitivity "
                "2 x l2_norm_clip per epoch",
            ]
        return (
            sampled
            + [
                (
                    f"microbatches of {self.batch_size // self.num_microbatches} examples: "
                    "sensitivity doubled (noise multiplier halved in the accounting)"
                    if self.microbatching
                    else "one example per microbatch: sensitivity = l2_norm_clip"
                ),
                f"delta: {self.delta_rule}",
                "all intermediate checkpoints are released (no privacy amplification by iteration)",
            ]
            + self._rdp_caveat()
        )

    def _rdp_caveat(self) -> list[str]:
        effective = self.noise_multiplier / (2 if self.microbatching else 1)
        if (
            self.sampling != "poisson"
            or "rdp" not in {self.accountant, *self.epsilons}
            or effective >= RDP_SERIES_NOISE
            or not rdp_series_cut_short()
        ):
            return []
        return [
            "RDP from dp-accounting before 0.5 (Python 3.11, pinned by tensorflow-privacy): "
            f"at an effective noise multiplier of {effective:.3g} its epsilon can be up to "
            "about 1% low; PLD, or Python 3.12 or later (dp-accounting 0.6), has no such error"
        ]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["assumptions"] = self.assumptions
        out["accountant_name"] = ACCOUNTANT_NAMES[self.accountant]
        if math.isinf(self.epsilon):
            out["epsilon"] = None  # JSON has no infinity; null = no guarantee
        return out


def steps_per_epoch(batch_size: int, examples: int) -> int:
    """Steps of one epoch, as training takes them: 1 / q, rounded down (at least 1)."""
    return max(1, examples // batch_size)


def epochs_touched(steps: int, per_epoch: int) -> int:
    return -(-steps // per_epoch)


def _make_accountant(name: str, grid: float = PLD_DISCRETIZATION) -> Any:
    if name == "pld":
        from dp_accounting.pld import PLDAccountant

        return PLDAccountant(value_discretization_interval=grid)
    if name == "rdp":
        from dp_accounting.rdp import RdpAccountant

        return RdpAccountant()
    raise ValueError(f"expected an accountant in {ACCOUNTANTS}, received {name!r}")


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """What a DP-SGD run releases, as the accountant sees it.

    Attributes:
        noise_multiplier: The noise, as a multiple of l2_norm_clip.
        sampling: "poisson" or "shuffle".
        q: The sampling probability (batch / examples).
        steps: Steps taken.
        per_epoch: Steps per epoch (shuffling composes one mechanism per epoch touched).
        microbatching: Microbatches of several examples (sensitivity doubled).
    """

    noise_multiplier: float
    sampling: str
    q: float
    steps: int
    per_epoch: int
    microbatching: bool

    def with_noise(self, noise_multiplier: float) -> "Mechanism":
        return dataclasses.replace(self, noise_multiplier=float(noise_multiplier))

    def event(self) -> Any:
        """The dp_accounting event (see the module docstring)."""
        import dp_accounting

        sigma = self.noise_multiplier
        if self.sampling == "poisson":
            sigma = sigma / 2 if self.microbatching else sigma
            step = dp_accounting.PoissonSampledDpEvent(self.q, dp_accounting.GaussianDpEvent(sigma))
            return dp_accounting.SelfComposedDpEvent(step, self.steps)
        if self.sampling == "shuffle":
            # Replace-one: sensitivity 2C, i.e. a Gaussian mechanism with half the multiplier
            # (a Gaussian event's multiplier is relative to sensitivity 1 either way).
            epoch = dp_accounting.GaussianDpEvent(sigma / 2)
            return dp_accounting.SelfComposedDpEvent(
                epoch, epochs_touched(self.steps, self.per_epoch)
            )
        raise ValueError(f"expected sampling poisson or shuffle, received {self.sampling!r}")


@functools.lru_cache(maxsize=256)
def _epsilon(accountant: str, mechanism: Mechanism, delta: float) -> float:
    if mechanism.noise_multiplier == 0:
        return math.inf
    if mechanism.steps == 0:
        return 0.0
    grid = PLD_DISCRETIZATION
    if accountant == "pld":
        # PLD's cost grows steeply as the guarantee weakens (seconds to minutes beyond
        # epsilon 10). There, a grid as coarse relative to epsilon as the fine one is at 10
        # keeps it fast; the estimate stays pessimistic, so the bound stays valid.
        grid *= max(1.0, _epsilon("rdp", mechanism, delta) / EPSILON_WARNING_BOUND)
    acc = _make_accountant(accountant, grid)
    acc.compose(mechanism.event())
    return float(acc.get_epsilon(delta))


def _mechanism(
    noise_multiplier: float,
    q: float,
    steps: int,
    microbatching: bool,
    sampling: str,
    per_epoch: Optional[int],
) -> Mechanism:
    per_epoch = per_epoch if per_epoch is not None else max(1, int(1 / q))
    return Mechanism(
        float(noise_multiplier), sampling, float(q), int(steps), int(per_epoch), bool(microbatching)
    )


def epsilon_for_steps(
    noise_multiplier: float,
    q: float,
    steps: int,
    delta: float,
    microbatching: bool,
    *,
    accountant: str = "pld",
    sampling: str = "poisson",
    per_epoch: Optional[int] = None,
) -> float:
    """Epsilon at `delta` after `steps` steps (`per_epoch` is needed for shuffling)."""
    mechanism = _mechanism(noise_multiplier, q, steps, microbatching, sampling, per_epoch)
    return _epsilon(accountant, mechanism, float(delta))


def compute_epsilon(
    *,
    noise_multiplier: float,
    batch_size: int,
    examples: int,
    epochs: float,
    delta: float,
    microbatching: bool,
    accountant: str = "rdp",
) -> float:
    """Epsilon of Poisson-sampled DP-SGD for ceil(epochs / q) steps, the step count of
    tensorflow-privacy's `compute_dp_sgd_privacy_statement` (infinity without noise)."""
    q = batch_size / examples
    return epsilon_for_steps(
        noise_multiplier, q, int(math.ceil(epochs / q)), delta, microbatching, accountant=accountant
    )


def noise_for_epsilon(*, target_epsilon: float, accountant: str = "pld", **run: Any) -> float:
    """The smallest noise multiplier whose run reaches at most `target_epsilon`.

    Args:
        target_epsilon: The epsilon to reach.
        accountant: "pld" or "rdp".
        run: The run, as `epsilon_for_steps` takes it: q, steps, delta, microbatching and
            optionally sampling and per_epoch.
    """
    import dp_accounting

    mechanism = _mechanism(
        0.0,
        run["q"],
        run["steps"],
        run["microbatching"],
        run.get("sampling", "poisson"),
        run.get("per_epoch"),
    )

    def solve(name: str, interval: Any, tol: float, grid: float = PLD_DISCRETIZATION) -> float:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                lambda: _make_accountant(name, grid),
                lambda sigma: mechanism.with_noise(sigma).event(),
                target_epsilon,
                run["delta"],
                bracket_interval=interval,
                tol=tol,
            )
        )

    # RDP is fast and never needs less noise than PLD: it bounds the PLD search.
    rdp = solve("rdp", dp_accounting.ExplicitBracketInterval(1e-3, 1e3), 1e-5)
    if accountant == "rdp":
        return rdp
    # The search runs on a grid 10x coarser than the reports' (8x faster): its epsilon is
    # never below the fine grid's, so the noise found keeps the reported epsilon within the
    # target, at most a few percent of noise above the least that would.
    return solve(
        "pld",
        dp_accounting.ExplicitBracketInterval(rdp / 2, rdp * 1.001),
        rdp * 1e-3,
        grid=PLD_DISCRETIZATION * 10,
    )


def _problem(spec: Union[Spec, CheckedSpec], path: tuple[str, ...], message: str) -> SpecError:
    """An error about the spec (located in its file) or about an argument of the run."""
    if path[0] == "training" and isinstance(spec, CheckedSpec):
        return spec.error(path, "privacy", message)
    return SpecError([Diagnostic("error", "privacy", message, ".".join(path), "<arguments>")])


def _located(
    spec: Union[Spec, CheckedSpec],
    path: tuple[str, ...],
    code: str,
    message: str,
    source: Optional[Source] = None,
) -> Diagnostic:
    """A warning at `path` of the spec, in its file when it has one."""
    if source is None:
        source = spec.source if isinstance(spec, CheckedSpec) else positionless(spec)
    return source.diagnostic(path, code, message, severity="warning")


def privacy_report(
    spec: Union[Spec, CheckedSpec],
    examples: int,
    *,
    epochs: Optional[float] = None,
    delta: Optional[float] = None,
    target_epsilon: Optional[float] = None,
    noise_multiplier: Optional[float] = None,
    steps: Optional[int] = None,
    compare: bool = False,
) -> PrivacyReport:
    """The guarantee of training `spec` on `examples` examples.

    Args:
        spec: A resolved spec with a `training.privacy` block.
        examples: Number of training examples (records, one per example under DP).
        epochs: Defaults to training.epochs; the planned steps are epochs x steps per epoch.
        delta: Defaults to privacy.delta, else examples^-1.1.
        target_epsilon: Solve for the noise multiplier reaching this epsilon instead of
            using the spec's noise (defaults to privacy.target_epsilon when the spec gives
            no noise multiplier).
        noise_multiplier: The noise a run trains with, instead of the spec's (a run
            derives it once from target_epsilon and records it).
        steps: The steps a run actually took; the guarantee is then for those steps.
        compare: Also compute epsilon with the other accountant (`epsilons`).

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
    per_epoch = steps_per_epoch(batch, examples)
    if steps is None:
        epochs = float(epochs if epochs is not None else spec.training.epochs)
        if epochs <= 0:
            raise _problem(
                spec, ("epochs",), f"expected a positive number of epochs, received {epochs}"
            )
        steps = int(math.ceil(epochs * per_epoch - 1e-9))
    epochs = steps / per_epoch
    if delta is not None:
        rule = "given as an argument"
    elif privacy.delta is not None:
        delta, rule = privacy.delta, "training.privacy.delta"
    else:
        delta = default_delta(examples)
        rule = f"default, examples^-{DELTA_EXPONENT:g}"
    if not 0 < delta < 1:
        raise _problem(spec, ("delta",), f"expected delta in (0, 1), received {delta}")
    microbatches = privacy.num_microbatches or batch
    microbatching = microbatches < batch
    sampling = privacy.sampling or ("poisson" if privacy.implementation == "fast" else "shuffle")
    q = batch / examples
    accounting = dict(
        q=q,
        steps=steps,
        delta=delta,
        microbatching=microbatching,
        sampling=sampling,
        per_epoch=per_epoch,
    )
    target = (
        target_epsilon
        if target_epsilon is not None
        else (privacy.target_epsilon if privacy.noise_multiplier is None else None)
    )
    if noise_multiplier is not None and target_epsilon is None:
        noise = float(noise_multiplier)
    elif target is not None:
        noise = noise_for_epsilon(
            target_epsilon=target, accountant=privacy.accountant, **accounting
        )
    else:
        noise = float(privacy.noise_multiplier or 0.0)
    names = ACCOUNTANTS if compare else (privacy.accountant,)
    epsilons = {name: epsilon_for_steps(noise, accountant=name, **accounting) for name in names}
    return PrivacyReport(
        epsilon=epsilons[privacy.accountant],
        delta=delta,
        noise_multiplier=noise,
        examples=examples,
        batch_size=batch,
        epochs=epochs,
        num_microbatches=microbatches,
        sampling_probability=q,
        steps=steps,
        microbatching=microbatching,
        sampling=sampling,
        accountant=privacy.accountant,
        delta_rule=rule,
        epsilons={k: (None if math.isinf(v) else v) for k, v in epsilons.items()},
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


def privacy_warnings(report: PrivacyReport) -> list[str]:
    """Every warning about a guarantee: a weak epsilon, a delta of 1 / records or more."""
    found = [epsilon_warning(report), delta_warning(report.delta, report.examples)]
    return [w for w in found if w is not None]


def weak_privacy_warning(
    spec: Union[Spec, CheckedSpec], report: PrivacyReport
) -> Optional[Diagnostic]:
    """`epsilon_warning` as a diagnostic at the spec's privacy settings, or None."""
    message = epsilon_warning(report)
    if message is None:
        return None
    return _located(spec, ("training", "privacy"), "weak_privacy", message)


def delta_diagnostic(
    spec: Union[Spec, CheckedSpec],
    examples: int,
    delta: Optional[float] = None,
    *,
    source: Optional[Source] = None,
) -> Optional[Diagnostic]:
    """A warning when the delta in force is at least 1 / examples (no TensorFlow needed).

    Args:
        spec: A resolved spec.
        examples: Training records.
        delta: A delta given as an argument; default: the spec's privacy.delta (the
            records^-1.1 default is always below 1 / examples).
        source: Where the spec was written, for a spec that failed its checks.

    The warning points at privacy.delta when the spec's delta is the one in force, else at
    the privacy block.
    """
    privacy = spec.training.privacy
    given = privacy.delta if privacy is not None and delta is None else delta
    message = None if given is None else delta_warning(given, examples)
    if message is None:
        return None
    where = ("training", "privacy") + (("delta",) if delta is None else ())
    return _located(spec, where, "privacy_delta", message, source)

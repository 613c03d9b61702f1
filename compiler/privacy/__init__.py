"""Differential privacy: the guarantee a run's settings give, and the fast per-example step.

- `accounting`: (epsilon, delta) of DP-SGD for a spec, its records and steps (dp_accounting,
  no TensorFlow): `privacy_report`, the noise for a target epsilon, warnings.
- `fast`: the `fast` implementation's training step (one backward pass, per-example
  clipping, noise from a secret key); each layer type's forward with probes is in its own
  module of `compiler.layers`.

tensorflow-privacy's optimizers (implementations standard and vectorized) are built in
`compiler.build`.
"""

from compiler.privacy.accounting import (
    ACCOUNTANTS,
    PrivacyReport,
    compute_epsilon,
    default_delta,
    delta_diagnostic,
    epsilon_for_steps,
    noise_for_epsilon,
    privacy_report,
    privacy_warnings,
    steps_per_epoch,
)

__all__ = [
    "ACCOUNTANTS",
    "PrivacyReport",
    "compute_epsilon",
    "default_delta",
    "delta_diagnostic",
    "epsilon_for_steps",
    "noise_for_epsilon",
    "privacy_report",
    "privacy_warnings",
    "steps_per_epoch",
]

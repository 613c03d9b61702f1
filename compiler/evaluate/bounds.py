"""From canary scores to an epsilon lower bound: the audit's two analyses (no TensorFlow).

- **guessing** (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run",
  NeurIPS 2023, Theorem 3.1): guess "in" for the best-scored canaries (and "out" for the
  worst); the correct guesses of an (epsilon, delta)-DP run are dominated by a binomial.
  Valid for any mechanism; with m canaries it cannot show more than `most_provable`.
- **gaussian** (as in Agrawal et al., "Let's Ask Gauss", 2026): a mu-GDP run allows no
  test an area under the ROC curve above Phi(mu / sqrt 2); the AUC's lower confidence
  bound gives mu, and mu-GDP's epsilon at delta the bound. Asymptotic: it assumes a
  Gaussian-shaped trade-off curve (see `compiler.evaluate.audit`).

`analyse` runs them on every score, with the Bonferroni corrections that keep the reported
bound valid at the asked confidence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """How likely v or more of r guesses about m canaries are right under (epsilon, delta)-DP.

    Theorem 3.1 of Steinke, Nasr and Jagielski (2023): the correct guesses are dominated by
    Binomial(r, e^eps / (1 + e^eps)), plus a term for delta.
    """
    from scipy.stats import binom

    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    # alpha = max over i of P[v - i <= Binomial(r, q) < v] / i
    shifts = np.arange(1, v + 1)
    alpha = float(np.max(np.cumsum(binom.pmf(v - shifts, r, q)) / shifts)) if v else 0.0
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    """The largest epsilon that v correct of r guesses reject at `confidence` (0 if none)."""
    level = 1.0 - confidence
    if r == 0 or p_value(m, r, v, 0.0, delta) >= level:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < level:
        low, high = high, high * 2
        if high > 1e3:
            return low
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if p_value(m, r, v, mid, delta) < level else (low, mid)
    return low


GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5)
# White-box: also the few most extreme canaries, and "in" guesses alone (a step that
# breaks the guarantee for some canaries only, such as a fixed batch, shows at the top).
WHITE_BOX_FRACTIONS = (0.005, 0.01) + GUESS_FRACTIONS


def _guessing_rules(m: int, white_box: bool = False) -> list[tuple[int, bool]]:
    """(k, also_out): guess "in" for the top k, and "out" for the bottom k if also_out."""
    fractions = WHITE_BOX_FRACTIONS if white_box else GUESS_FRACTIONS
    sizes = sorted({max(1, int(m * f)) for f in fractions})
    return [(k, both) for k in sizes for both in ((False, True) if white_box else (True,))]


def best_guesses(
    scores: np.ndarray,
    included: np.ndarray,
    delta: float,
    confidence: float,
    tests: int = 1,
    white_box: bool = False,
) -> tuple[float, int, int]:
    """The best bound over the guessing rules: top k "in", with or without bottom k "out".

    Several rules are tried on the same canaries (and `tests` sets of scores), so each is
    tested at confidence 1 - (1 - confidence) / (rules * tests) (Bonferroni): the reported
    bound holds at `confidence`.
    """
    m = len(scores)
    order = np.argsort(-scores, kind="stable")  # most likely first
    rules = _guessing_rules(m, white_box)
    corrected = 1.0 - (1.0 - confidence) / (len(rules) * tests)
    best = (0.0, 0, 0)
    for k, both in rules:
        top = order[:k]
        bottom = (order[m - k :] if 2 * k <= m else order[k:]) if both else order[:0]
        correct = int(included[top].sum() + (~included[bottom]).sum())
        guesses = len(top) + len(bottom)
        bound = epsilon_lower_bound(m, guesses, correct, delta, corrected)
        if bound > best[0] or best[1] == 0:
            best = (bound, guesses, correct)
    return best


def most_provable(
    m: int, delta: float, confidence: float, tests: int = 1, white_box: bool = False
) -> float:
    """The largest bound the guessing analysis can give with m canaries: every guess right."""
    rules = _guessing_rules(m, white_box)
    corrected = 1.0 - (1.0 - confidence) / (len(rules) * tests)
    most = max(min(2 * k, m) if both else k for k, both in rules)
    return epsilon_lower_bound(m, most, most, delta, corrected)


def auc_lower_bound(scores: np.ndarray, included: np.ndarray, confidence: float) -> float:
    """A one-sided lower confidence bound on P(score in > score out) (ties count half).

    The Mann-Whitney estimate with DeLong's variance (from each canary's placement among
    the other group), normal at `confidence`.
    """
    from scipy.stats import norm, rankdata

    inside, outside = scores[included], scores[~included]
    n1, n0 = len(inside), len(outside)
    if n1 < 2 or n0 < 2:
        return 0.5
    ranks = rankdata(np.concatenate([inside, outside]))
    own_in, own_out = rankdata(inside), rankdata(outside)
    # Placements: the share of the other group each canary beats.
    v10 = (ranks[:n1] - own_in) / n0
    v01 = 1.0 - (ranks[n1:] - own_out) / n1
    auc = float(v10.mean())
    variance = v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0
    return auc - float(norm.ppf(confidence)) * math.sqrt(max(variance, 0.0))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The epsilon of mu-GDP at delta (Dong, Roth and Su, Corollary 2.13), 0 if mu <= 0."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    if mu <= 0:
        return 0.0

    def excess(eps: float) -> float:
        return float(
            norm.cdf(-eps / mu + mu / 2) - math.exp(eps + norm.logcdf(-eps / mu - mu / 2)) - delta
        )

    if excess(0.0) <= 0:
        return 0.0
    high = 1.0
    while excess(high) > 0:
        high *= 2
        if high > 1e4:
            return high
    return float(brentq(excess, 0.0, high, xtol=1e-9))


def gaussian_bound(
    scores: np.ndarray, included: np.ndarray, delta: float, confidence: float
) -> float:
    """The Gaussian analysis's bound: AUC's lower confidence bound, as mu-GDP, at delta."""
    from scipy.stats import norm

    auc = auc_lower_bound(scores, included, confidence)
    if auc <= 0.5:
        return 0.0
    return gdp_epsilon(math.sqrt(2.0) * float(norm.ppf(min(auc, 1.0 - 1e-12))), delta)


def analyse(
    scores: dict[str, np.ndarray],
    included: np.ndarray,
    delta: float,
    confidence: float,
    *,
    white_box: bool = True,
) -> dict[str, Any]:
    """The analyses on every score. White-box: the guessing analysis with more rules, and
    the Gaussian one, each at half the error level.

    Returns the best bound, its analysis and score, the guesses behind the guessing bound,
    every bound by "analysis/score", and the most the guessing analysis could prove.
    """
    level = (1.0 - confidence) / (2 if white_box else 1)
    tests = len(scores)
    bounds: dict[str, float] = {}
    best: dict[str, Any] = {"bound": 0.0, "analysis": "guessing", "score": next(iter(scores))}
    guesses = (-1.0, 0, 0)  # the best guessing bound's guesses and correct guesses
    for name, values in scores.items():
        bound, r, v = best_guesses(values, included, delta, 1.0 - level, tests, white_box)
        if bound > guesses[0]:
            guesses = (bound, r, v)
        found = [("guessing", bound)]
        if white_box:
            found.append(("gaussian", gaussian_bound(values, included, delta, 1 - level / tests)))
        for analysis, value in found:
            bounds[f"{analysis}/{name}"] = value
            if value > best["bound"]:
                best = {"bound": value, "analysis": analysis, "score": name}
    return {
        **best,
        "guesses": guesses[1:],
        "bounds": bounds,
        "most_provable": most_provable(len(included), delta, 1.0 - level, tests, white_box),
    }


def histograms(values: np.ndarray, included: np.ndarray, bins: int = 30) -> dict[str, Any]:
    """Included and excluded canaries' scores on shared bins (for the report's plot)."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    clipped = np.clip(values, edges[0], edges[-1])
    return {
        "edges": [float(e) for e in edges],
        "included": np.histogram(clipped[included], edges)[0].tolist(),
        "excluded": np.histogram(clipped[~included], edges)[0].tolist(),
    }

"""Empirical privacy audit of a spec, in one training run.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023):
make m canary records, include each in the training corpus independently with probability
1/2 (a secret coin), train once exactly as `keraspec train` does, then guess which canaries
were included from the trained model alone: "in" for the canaries it finds most likely,
"out" for the least likely, no guess for the rest. An (epsilon, delta)-DP training run
cannot guess much better than randomised response with that epsilon, so the number of
correct guesses gives, at a chosen confidence, a lower bound on the epsilon of the run as
it really is: clipping, noise, sampling and accounting included. A lower bound above the
claimed epsilon means the guarantee is broken.

It also reports the exposure of the included canaries (Carlini et al., "The Secret Sharer",
USENIX Security 2019): log2 of the number of random candidates of the same kind, minus
log2 of the canary's rank among them by the model's likelihood. A model that memorised a
canary ranks it first: exposure log2(candidates + 1).

Canaries are made in the corpus's own format: for a delimited corpus (CSV and the like),
each field is a training value of that column with every letter and digit replaced at
random (same length, same punctuation); otherwise, random characters of the corpus with a
training record's length. They use only characters the corpus has, so the run's tokenizer
reads them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import random
import string
from typing import Any, Callable, Optional, Union

import numpy as np

from compiler.diagnostics import DataError, Diagnostic
from compiler.files import write_atomic
from compiler.lang.checked import checked

AUDIT_FILE = "audit.json"
DATA_FILE = "data.txt"
RUN_SUBDIR = "run"
CANDIDATES = 1000


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """What an audit found; also written to AUDIT_DIR/audit.json.

    Attributes:
        claimed_epsilon: The run's reported epsilon (None without DP: no claim).
        delta: The delta the lower bound is stated for (the run's, or records^-1.1).
        epsilon_lower_bound: With probability `confidence`, the run's epsilon is at least
            this.
        confidence: The confidence of the bound.
        canaries: Canaries made; `included` of them were trained on.
        guesses, correct: The best guessing rule's guesses and correct guesses.
        exposure: Exposure of the included canaries against `candidates` random ones:
            mean, median and max (bits), and the most any canary could reach.
        broken: The lower bound exceeds the claimed epsilon.
    """

    claimed_epsilon: Optional[float]
    delta: float
    epsilon_lower_bound: float
    confidence: float
    canaries: int
    included: int
    guesses: int
    correct: int
    exposure: dict[str, float]
    broken: bool
    run_dir: str
    data: str
    steps: int
    mean_score_in: float
    mean_score_out: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ canaries


def _alphabets(records: list[str]) -> dict[str, str]:
    seen = set("".join(records))
    classes = {
        "digit": string.digits,
        "lower": string.ascii_lowercase,
        "upper": string.ascii_uppercase,
    }
    return {name: "".join(c for c in chars if c in seen) for name, chars in classes.items()}


def _scramble(value: str, alphabets: dict[str, str], rng: random.Random) -> str:
    out = []
    for c in value:
        kind = (
            "digit" if c.isdigit() else "lower" if c.islower() else "upper" if c.isupper() else ""
        )
        pool = alphabets.get(kind, "")
        out.append(rng.choice(pool) if c.isascii() and pool else c)
    return "".join(out)


def make_canaries(
    records: list[str], count: int, rng: random.Random, shape: Optional[dict[str, Any]] = None
) -> list[str]:
    """`count` distinct random records in the corpus's format, none of them a corpus record."""
    alphabets = _alphabets(records)
    corpus = set(records)
    rows = None
    if shape is not None:
        delimiter = str(shape["delimiter"])
        parsed = list(csv.reader(records[:5000], delimiter=delimiter))
        rows = [r for r in parsed if len(r) == shape["fields"]]
    chars = sorted(set("".join(records)))
    made: list[str] = []
    taken: set[str] = set()
    for _ in range(count * 50):
        if len(made) == count:
            break
        if rows:
            fields = [_scramble(rng.choice(rows)[i], alphabets, rng) for i in range(len(rows[0]))]
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(fields)
            candidate = buffer.getvalue()
        else:
            length = len(rng.choice(records))
            candidate = "".join(rng.choice(chars) for _ in range(max(1, length))).strip()
        if (
            candidate
            and candidate not in corpus
            and candidate not in taken
            and "\n" not in candidate
        ):
            made.append(candidate)
            taken.add(candidate)
    if len(made) < count:
        raise DataError(
            [
                Diagnostic(
                    "error",
                    "audit_canaries",
                    f"expected {count} distinct canaries in the corpus's format, could make "
                    f"{len(made)}; use fewer --canaries",
                    "data",
                    "",
                )
            ]
        )
    return made


# ------------------------------------------------------------------------------ the bound


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


def best_guesses(
    scores: np.ndarray, included: np.ndarray, delta: float, confidence: float
) -> tuple[float, int, int]:
    """The best bound over a few guessing rules (top k "in", bottom k "out").

    Several rules are tried on the same canaries, so each is tested at confidence
    1 - (1 - confidence) / rules (Bonferroni): the reported bound holds at `confidence`.
    """
    m = len(scores)
    order = np.argsort(-scores)  # most likely first
    sizes = sorted({max(1, int(m * f)) for f in (0.02, 0.05, 0.1, 0.2, 0.5)})
    corrected = 1.0 - (1.0 - confidence) / len(sizes)
    best = (0.0, 0, 0)
    for k in sizes:
        top, bottom = order[:k], order[m - k :] if 2 * k <= m else order[k:]
        correct = int(included[top].sum() + (~included[bottom]).sum())
        guesses = len(top) + len(bottom)
        bound = epsilon_lower_bound(m, guesses, correct, delta, corrected)
        if bound > best[0] or best[1] == 0:
            best = (bound, guesses, correct)
    return best


def exposure(canary_losses: np.ndarray, candidate_losses: np.ndarray) -> dict[str, float]:
    """Secret Sharer exposure of each canary against the same random candidates."""
    pool = np.sort(candidate_losses)
    ranks = 1 + np.searchsorted(pool, canary_losses, side="left")
    bits = math.log2(len(pool) + 1) - np.log2(ranks)
    return {
        "mean": float(np.mean(bits)) if len(bits) else 0.0,
        "median": float(np.median(bits)) if len(bits) else 0.0,
        "max": float(np.max(bits)) if len(bits) else 0.0,
        "possible": math.log2(len(pool) + 1),
        "candidates": float(len(pool)),
    }


# ------------------------------------------------------------------------------ scoring


def record_losses(run_dir: str, records: list[str], batch: int = 256) -> np.ndarray:
    """Each record's mean next-token loss under the run's latest weights, `<eor>` to `<eor>`."""
    from compiler.data.tokenizer import EOR_ID
    from compiler.generation import load_run_model
    from compiler.tf import tensorflow, tf_keras
    from compiler.training.rundir import LATEST

    tf, keras = tensorflow(), tf_keras()
    trained, model, _ = load_run_model(run_dir, None, LATEST, stateful=False)
    tokenizer = trained.tokenizer
    encoded = [np.concatenate(([EOR_ID], tokenizer.encode(r), [EOR_ID])) for r in records]
    width = max(len(e) for e in encoded)
    ids = np.zeros((len(encoded), width), np.int32)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
    lengths = np.array([len(e) - 1 for e in encoded])
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    out = []
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        logits = call(tf.constant(chunk[:, :-1]))
        losses = sce(chunk[:, 1:], logits).numpy()
        mask = np.arange(width - 1)[None, :] < lengths[start : start + batch, None]
        out.append((losses * mask).sum(axis=1) / mask.sum(axis=1))
    return np.concatenate(out)


# ------------------------------------------------------------------------------ audit


def audit(
    spec: Any,
    data: Union[str, os.PathLike[str]],
    audit_dir: Union[str, os.PathLike[str]],
    *,
    canaries: int = 1000,
    epochs: Optional[int] = None,
    max_steps: Optional[int] = None,
    confidence: float = 0.95,
    candidates: int = CANDIDATES,
    callback: Optional[Callable[[Any], None]] = None,
) -> AuditReport:
    """Audit `spec` on corpus `data`: canaries in, one training run, the epsilon lower bound.

    Args:
        spec: A checked spec (`load_spec`), DP or not.
        data: The corpus, as `keraspec train` takes it.
        audit_dir: Where the audit corpus (data.txt), the run (run/) and audit.json go; a
            directory holding an unfinished audit of the same spec resumes its training.
        canaries: How many canaries to make (half of them, in expectation, are trained on).
        epochs, max_steps: As `train`.
        confidence: Of the lower bound.
        candidates: Random candidates for the exposure.
        callback: Training progress, as `train`'s.

    Raises:
        DataError, SpecError, RunError: as `train`; DataError when the canaries cannot be
        made. Nothing is trained before every check has passed.
    """
    from compiler.data.columns import declared_header
    from compiler.data.corpus import read_corpus, record_shape
    from compiler.privacy.accounting import default_delta
    from compiler.training import train

    if canaries < 2:
        raise ValueError("expected at least 2 canaries")
    if not 0 < confidence < 1:
        raise ValueError("expected a confidence in (0, 1)")
    audit_dir = os.fspath(audit_dir)
    spec = checked(spec)
    corpus = read_corpus(data, header=declared_header(spec))
    os.makedirs(audit_dir, exist_ok=True)
    state_path = os.path.join(audit_dir, "canaries.json")
    data_path = os.path.join(audit_dir, DATA_FILE)
    if os.path.exists(state_path) and os.path.exists(data_path):
        # Resuming: the canaries and coins were drawn before; they must not be drawn again.
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        made, included = state["canaries"], np.array(state["included"], bool)
        pool = state["candidates"]
    else:
        rng = random.Random(int.from_bytes(os.urandom(16), "little"))  # secret coins
        shape = record_shape(corpus.records)
        everything = make_canaries(corpus.records, canaries + candidates, rng, shape)
        made, pool = everything[:canaries], everything[canaries:]
        included = np.array([rng.random() < 0.5 for _ in made])
        records = list(corpus.records)
        for canary, keep in zip(made, included):
            if keep:
                # Never before the first record, which may be a header.
                records.insert(rng.randrange(1, len(records) + 1), canary)
        head = [] if corpus.header is None else [corpus.header]  # the declared header
        write_atomic(data_path, "\n".join(head + records) + "\n")
        write_atomic(
            state_path,
            json.dumps({"canaries": made, "included": included.tolist(), "candidates": pool}),
        )
    # Every record of the audit corpus must be a training record: an included canary held
    # out for validation would be counted as trained on.
    audited = spec.variant(
        spec.spec.model_copy(
            update={"training": spec.training.model_copy(update={"validation_split": 0.0})}
        )
    )
    run_dir = os.path.join(audit_dir, RUN_SUBDIR)
    report = train(
        audited, data_path, run_dir, epochs=epochs, max_steps=max_steps, callback=callback
    )
    losses = record_losses(run_dir, made + pool)
    canary_losses, pool_losses = losses[: len(made)], losses[len(made) :]
    scores = -canary_losses
    claimed = report.privacy["epsilon"] if report.privacy is not None else None
    delta = report.privacy["delta"] if report.privacy is not None else default_delta(report.records)
    bound, guesses, correct = best_guesses(scores, included, delta, confidence)
    result = AuditReport(
        claimed_epsilon=claimed,
        delta=delta,
        epsilon_lower_bound=bound,
        confidence=confidence,
        canaries=len(made),
        included=int(included.sum()),
        guesses=guesses,
        correct=correct,
        exposure=exposure(canary_losses[included], pool_losses),
        broken=claimed is not None and bound > claimed,
        run_dir=run_dir,
        data=data_path,
        steps=report.steps,
        mean_score_in=float(scores[included].mean()) if included.any() else 0.0,
        mean_score_out=float(scores[~included].mean()) if (~included).any() else 0.0,
    )
    write_atomic(os.path.join(audit_dir, AUDIT_FILE), json.dumps(result.to_dict(), indent=2))
    return result

"""Empirical privacy audit of a spec, in one training run: black-box or white-box.

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

**White-box** (`white_box=True`): the canaries are gradients, not records
(`compiler.privacy.canaries`): Dirac vectors on secret coordinates, sampled, clipped and
noised by the run's own DP step, and scored by the noisy sums the run released along their
coordinates. Black-box input-space canaries of DP-SGD stay far below the claimed epsilon;
gradient canaries measure the step itself, so a step that adds too little noise, skips
clipping or does not sample as the accountant assumes is caught.

Two analyses turn scores into a bound (`compiler.evaluate.bounds`): guessing, valid for
any mechanism, and the Gaussian one, asymptotic: it assumes the run's trade-off curve is
Gaussian-shaped, which DP-SGD's subsampled Gaussian steps satisfy or exceed in the tail
(their PLD epsilon is the larger), so for a correct run it stays below the accountant's
epsilon. White-box runs both, each at half the error level, and reports the larger bound
with the analysis that gave it; black-box runs the guessing analysis.
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

from compiler.diagnostics import DataError, Diagnostic, RunError
from compiler.evaluate.bounds import analyse, histograms
from compiler.files import write_atomic
from compiler.lang.checked import checked

AUDIT_FILE = "audit.json"
AUDIT_PAGE = "audit.html"
CANARIES_FILE = "canaries.json"
MODES = ("black-box", "white-box")
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
        mode: "black-box" (record canaries, scored by the model's loss) or "white-box"
            (gradient canaries, scored by the released noisy sums).
        analysis: The analysis that gave the bound ("guessing" or "gaussian"); `bounds`
            holds each one's bound, by analysis and score.
        score: The canary score the bound came from.
        most_provable: The largest bound the guessing analysis could give with these
            canaries, were every guess right.
        informative: Whether the audit could have shown a broken guarantee: the claimed
            epsilon is within what it can prove (always, without a claim, if it can
            prove more than 0.5).
        distributions: Histograms of the included and excluded canaries' scores.
        notes: What the bound does and does not show, in plain words.
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
    mode: str = "black-box"
    analysis: str = "guessing"
    score: str = "loss"
    bounds: dict[str, float] = dataclasses.field(default_factory=dict)
    most_provable: float = 0.0
    informative: bool = True
    distributions: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

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
    white_box: bool = False,
    callback: Optional[Callable[[Any], None]] = None,
) -> AuditReport:
    """Audit `spec` on corpus `data`: canaries in, one training run, the epsilon lower bound.

    Args:
        spec: A checked spec (`load_spec`), DP or not (white-box: DP with the fast
            implementation and Poisson sampling).
        data: The corpus, as `keraspec train` takes it.
        audit_dir: Where the canaries, the run (run/), audit.json and audit.html go; a
            directory holding an unfinished audit of the same spec and mode resumes its
            training.
        canaries: How many canaries to make (half of them, in expectation, are trained on).
        epochs, max_steps: As `train`.
        confidence: Of the lower bound.
        candidates: Random candidates for the exposure (black-box).
        white_box: Gradient canaries through the DP step instead of record canaries.
        callback: Training progress, as `train`'s.

    Raises:
        DataError, SpecError, RunError: as `train`; DataError when the canaries cannot be
        made; SpecError when a white-box audit meets a step it cannot audit; RunError when
        the directory holds an audit of the other mode. Nothing is trained before every
        check has passed.
    """
    from compiler.data.columns import declared_header
    from compiler.data.corpus import read_corpus
    from compiler.privacy.accounting import default_delta

    if canaries < 2:
        raise ValueError("expected at least 2 canaries")
    if not 0 < confidence < 1:
        raise ValueError("expected a confidence in (0, 1)")
    audit_dir = os.fspath(audit_dir)
    spec = checked(spec)
    mode = MODES[1] if white_box else MODES[0]
    if white_box:
        _check_white_box(spec)
    corpus = read_corpus(data, header=declared_header(spec))
    saved = _saved_state(audit_dir, mode)
    os.makedirs(audit_dir, exist_ok=True)
    if white_box:
        report, included, scores = _white_box(
            spec, corpus, audit_dir, saved, canaries, epochs, max_steps, callback
        )
        exposure_of: dict[str, float] = {}
    else:
        report, included, scores, exposure_of = _black_box(
            spec, corpus, audit_dir, saved, canaries, candidates, epochs, max_steps, callback
        )
    claimed = report.privacy["epsilon"] if report.privacy is not None else None
    delta = report.privacy["delta"] if report.privacy is not None else default_delta(report.records)
    found = analyse(scores, included, delta, confidence, white_box=white_box)
    bound = found["bound"]
    chosen = scores[found["score"]]
    # The Gaussian analysis (white-box) has no ceiling; guessing alone has most_provable.
    informative = white_box or found["most_provable"] > (claimed if claimed is not None else 0.5)
    notes = _notes(mode, claimed, bound, found, len(included), informative)
    result = AuditReport(
        claimed_epsilon=claimed,
        delta=delta,
        epsilon_lower_bound=bound,
        confidence=confidence,
        canaries=len(included),
        included=int(included.sum()),
        guesses=found["guesses"][0],
        correct=found["guesses"][1],
        exposure=exposure_of,
        broken=claimed is not None and bound > claimed,
        run_dir=os.path.join(audit_dir, RUN_SUBDIR),
        data=corpus.path if white_box else os.path.join(audit_dir, DATA_FILE),
        steps=report.steps,
        mean_score_in=float(chosen[included].mean()) if included.any() else 0.0,
        mean_score_out=float(chosen[~included].mean()) if (~included).any() else 0.0,
        mode=mode,
        analysis=found["analysis"],
        score=found["score"],
        bounds=found["bounds"],
        most_provable=found["most_provable"],
        informative=informative,
        distributions={name: histograms(values, included) for name, values in scores.items()},
        notes=notes,
    )
    write_atomic(os.path.join(audit_dir, AUDIT_FILE), json.dumps(result.to_dict(), indent=2))
    from compiler.evaluate.html import render_audit_html

    write_atomic(os.path.join(audit_dir, AUDIT_PAGE), render_audit_html(result))
    return result


def _notes(
    mode: str,
    claimed: Optional[float],
    bound: float,
    found: dict[str, Any],
    canaries: int,
    informative: bool,
) -> list[str]:
    """What the bound shows, and what it cannot, for the report and the command's output."""
    most = found["most_provable"]
    notes = []
    if not informative:
        notes.append(
            f"uninformative: with {canaries} canaries, even a perfect guesser could not show "
            f"more than epsilon {most:.3g}"
            + (f", below the claimed {claimed:.3g}" if claimed is not None else "")
            + ": this audit cannot detect a broken guarantee; "
            + ("use --white-box, or " if mode == MODES[0] and claimed is not None else "")
            + "use more canaries"
        )
    if bound == 0:
        notes.append(
            "no leak beyond chance was found: this does not show that the claimed epsilon "
            "is tight, only that this attack, on these canaries, found nothing it forbids"
        )
    if mode == MODES[0] and claimed is not None:
        notes.append(
            "black-box record canaries stay far below the claimed epsilon of a correct "
            "DP-SGD run (as in the literature): --white-box audits the DP step itself"
        )
    if found["analysis"] == "gaussian" and bound > 0:
        notes.append(
            "the bound is from the Gaussian analysis: asymptotic, it assumes the run's "
            "trade-off curve is Gaussian-shaped (DP-SGD's is, or has heavier tails); the "
            "guessing analysis, valid for any mechanism, gave "
            f"{max(v for k, v in found['bounds'].items() if k.startswith('guessing')):.3g}"
        )
    return notes


def _check_white_box(spec: Any) -> None:
    """A white-box audit needs keraspec's own DP step: DP, fast, Poisson."""
    privacy = spec.training.privacy
    if privacy is None:
        raise spec.error(
            ("training",),
            "white_box_needs_dp",
            "expected training.privacy for a white-box audit (it audits the DP step's "
            "clipping, sampling and noise), received a spec without DP; audit it without "
            "--white-box",
        )
    if privacy.implementation != "fast":
        raise spec.error(
            ("training", "privacy", "implementation"),
            "white_box_needs_fast",
            f"expected implementation fast for a white-box audit (keraspec's own DP step, "
            f"whose gradients it can observe), received {privacy.implementation}",
        )
    if privacy.sampling != "poisson":
        raise spec.error(
            ("training", "privacy", "sampling"),
            "white_box_needs_poisson",
            f"expected sampling poisson for a white-box audit, received {privacy.sampling}",
        )


def _saved_state(audit_dir: str, mode: str) -> Optional[dict[str, Any]]:
    """The canaries of an unfinished audit in `audit_dir` (None for a new audit)."""
    path = os.path.join(audit_dir, CANARIES_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        kept = state.get("mode", MODES[0])
    except (OSError, ValueError, AttributeError) as e:
        raise RunError(
            [
                Diagnostic(
                    "error",
                    "audit_unreadable",
                    f"expected the canaries of an audit, received an unreadable file ({e})",
                    "",
                    path,
                )
            ]
        ) from None
    if kept != mode:
        raise RunError(
            [
                Diagnostic(
                    "error",
                    "audit_mode",
                    f"expected a new audit directory or one of a {mode} audit, received one "
                    f"holding a {kept} audit; give another --output",
                    "",
                    path,
                )
            ]
        )
    return state


def _audited_spec(spec: Any) -> Any:
    # Every record of the audit corpus must be a training record: an included canary held
    # out for validation would be counted as trained on.
    return spec.variant(
        spec.spec.model_copy(
            update={"training": spec.training.model_copy(update={"validation_split": 0.0})}
        )
    )


def _black_box(
    spec: Any,
    corpus: Any,
    audit_dir: str,
    saved: Optional[dict[str, Any]],
    count: int,
    candidates: int,
    epochs: Optional[int],
    max_steps: Optional[int],
    callback: Optional[Callable[[Any], None]],
) -> tuple[Any, np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """Record canaries in the corpus, one run, each canary scored by the model's loss."""
    from compiler.data.corpus import record_shape
    from compiler.training import train

    data_path = os.path.join(audit_dir, DATA_FILE)
    if saved is not None and os.path.exists(data_path):
        # Resuming: the canaries and coins were drawn before; they must not be drawn again.
        made, included = saved["canaries"], np.array(saved["included"], bool)
        pool = saved["candidates"]
    else:
        rng = random.Random(int.from_bytes(os.urandom(16), "little"))  # secret coins
        shape = record_shape(corpus.records)
        everything = make_canaries(corpus.records, count + candidates, rng, shape)
        made, pool = everything[:count], everything[count:]
        included = np.array([rng.random() < 0.5 for _ in made])
        records = list(corpus.records)
        for canary, keep in zip(made, included):
            if keep:
                # Never before the first record, which may be a header.
                records.insert(rng.randrange(1, len(records) + 1), canary)
        head = [] if corpus.header is None else [corpus.header]  # the declared header
        write_atomic(data_path, "\n".join(head + records) + "\n")
        write_atomic(
            os.path.join(audit_dir, CANARIES_FILE),
            json.dumps(
                {
                    "mode": MODES[0],
                    "canaries": made,
                    "included": included.tolist(),
                    "candidates": pool,
                }
            ),
        )
    run_dir = os.path.join(audit_dir, RUN_SUBDIR)
    report = train(
        _audited_spec(spec),
        data_path,
        run_dir,
        epochs=epochs,
        max_steps=max_steps,
        callback=callback,
    )
    losses = record_losses(run_dir, made + pool)
    canary_losses, pool_losses = losses[: len(made)], losses[len(made) :]
    scores = {"loss": -canary_losses}
    return report, included, scores, exposure(canary_losses[included], pool_losses)


def _white_box(
    spec: Any,
    corpus: Any,
    audit_dir: str,
    saved: Optional[dict[str, Any]],
    count: int,
    epochs: Optional[int],
    max_steps: Optional[int],
    callback: Optional[Callable[[Any], None]],
) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """Gradient canaries through the run's own DP step, scored by the released sums."""
    from compiler.privacy.canaries import GradientCanaries, saved_scores
    from compiler.training import train
    from compiler.training.rundir import LATEST, RunDir

    if saved is not None:
        # Resuming: the same coins and coordinates, and the scores in the checkpoint.
        canaries = GradientCanaries(
            tuple(bool(c) for c in saved["included"]), int(saved["key"]), float(saved["norm"])
        )
    else:
        canaries = GradientCanaries.draw(count)
        write_atomic(
            os.path.join(audit_dir, CANARIES_FILE),
            json.dumps(
                {
                    "mode": MODES[1],
                    "included": list(canaries.included),
                    "key": str(canaries.key),
                    "norm": canaries.norm,
                }
            ),
        )
    run_dir = os.path.join(audit_dir, RUN_SUBDIR)
    report = train(
        spec,
        corpus.path,
        run_dir,
        epochs=epochs,
        max_steps=max_steps,
        callback=callback,
        canaries=canaries,
    )
    scores = saved_scores(RunDir(run_dir).pointer(LATEST).prefix)
    return report, np.array(canaries.included, dtype=bool), scores

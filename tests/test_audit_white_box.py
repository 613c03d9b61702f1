"""The white-box audit: gradient canaries through the real DP step, and a step broken three
ways (a quarter of the noise, no clipping, one fixed batch) that it must catch.

The breaks are test-only: each replaces one function of the step for the test's duration
(monkeypatch), which no spec or command can do.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.data import sampling
from compiler.diagnostics import SpecError
from compiler.evaluate.audit import audit
from compiler.privacy import fast
from compiler.privacy.canaries import CANARY_NORM, GradientCanaries, saved_scores
from compiler.training import loop
from compiler.training.rundir import LATEST, RunDir

from conftest import ROOT
from training_fixtures import load, spec_text, transformer_spec_text, write_corpus

CANARIES = 10_000  # the tiny model has more parameters than this


NOISE = 1.5


def _spec(tmp_path, extra="", epochs=1):
    # q = 8 / 360, 45 steps an epoch, noise 1.5, delta 1e-9: a claimed epsilon of about 0.8
    # (1 epoch, the breaks), 1.1 (2) or 1.3 (3 epochs, where the released sums are checked:
    # more steps, a tighter estimate of their shift).
    text = spec_text(
        dp=True,
        epochs=epochs,
        noise=NOISE,
        implementation="fast",
        dropout=0.0,
        length=12,
        extra=extra,
    ).replace("rnn_units: 16", "rnn_units: 64")
    path = tmp_path / "dp.yaml"
    path.write_text(text + "  privacy:\n    delta: 1.0e-9\n")
    return path


def _check_scores(audit_dir, steps, noise, q, shift=(0.4, 1.6)):
    """The released sums along the canaries' coordinates are what DP-SGD releases: for an
    excluded canary, noise of standard deviation noise x sqrt(steps) (in clips); for an
    included one, one clip more per step it was sampled in, q x steps in expectation. A
    canary counted twice (or noise added twice, or missed) moves these far off."""
    scores = saved_scores(RunDir(str(audit_dir / "run")).pointer(LATEST).prefix)["sum"]
    included = np.array(json.loads((audit_dir / "canaries.json").read_text())["included"])
    spread = scores[~included].std() / (noise * np.sqrt(steps))
    moved = (scores[included].mean() - scores[~included].mean()) / (q * steps)
    assert 0.85 < spread < 1.2 and shift[0] < moved < shift[1], (spread, moved)


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt", records=400)


def _audit(tmp_path, corpus, name="audit", epochs=1):
    return audit(
        load(_spec(tmp_path, epochs=epochs)),
        corpus,
        tmp_path / name,
        canaries=CANARIES,
        white_box=True,
    )


def test_a_correct_step_is_bounded_below_its_claim_and_well_above_zero(tmp_path, corpus):
    report = _audit(tmp_path, corpus, epochs=3)
    assert report.mode == "white-box" and report.canaries == CANARIES
    assert 1.0 < report.claimed_epsilon < 1.7
    assert not report.broken and report.epsilon_lower_bound <= report.claimed_epsilon
    # Measured 0.5-0.6 of the claim; what a black-box audit of this run finds is 0.
    assert report.epsilon_lower_bound > 0.25 * report.claimed_epsilon
    assert report.analysis == "gaussian" and report.score in ("likelihood", "sum")
    assert report.mean_score_in > report.mean_score_out
    # The report and its page hold both scores' distributions, included against excluded.
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    for name in ("likelihood", "sum"):
        hist = saved["distributions"][name]
        assert sum(hist["included"]) == report.included
        assert sum(hist["excluded"]) == CANARIES - report.included
    page = (tmp_path / "audit" / "audit.html").read_text()
    assert page.count('class="audit-histogram"') == 2 and "no evidence against" in page
    # The coins and coordinates are kept for a resume, and the scores are in the checkpoint.
    state = json.loads((tmp_path / "audit" / "canaries.json").read_text())
    assert state["mode"] == "white-box" and sum(state["included"]) == report.included
    _check_scores(tmp_path / "audit", report.steps, NOISE, 8 / 360)


def test_the_transformer_template_is_audited_through_its_step(tmp_path, corpus):
    path = tmp_path / "t.yaml"
    path.write_text(transformer_spec_text(dp=True, epochs=2, noise=1.0, dropout=0.0))
    report = audit(load(path), corpus, tmp_path / "audit", canaries=3000, white_box=True)
    assert not report.broken and 0 <= report.epsilon_lower_bound <= report.claimed_epsilon
    # Its few thousand parameters hold 3,000 canaries: the shift is measured loosely.
    _check_scores(tmp_path / "audit", report.steps, 1.0, 8 / 360, shift=(0.2, 1.8))


def test_two_replicas_release_each_canary_and_the_noise_once(tmp_path, corpus):
    """MirroredStrategy on 2 devices, through the command line, in a fresh process (the
    CPU is split into devices before TensorFlow starts)."""
    spec = _spec(
        tmp_path, extra="  distribution: {strategy: mirrored, devices_per_worker: 2}\n", epochs=2
    )
    command = ["audit", str(spec), "--data", str(corpus), "-o", str(tmp_path / "audit")]
    out = subprocess.run(
        [sys.executable, "-m", "compiler.cli", *command, "--white-box", "-f", "json"]
        + ["--canaries", str(CANARIES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert not report["broken"] and report["epsilon_lower_bound"] <= report["claimed_epsilon"]
    run = json.loads((tmp_path / "audit" / "run" / "report.json").read_text())
    assert run["distribution"]["replicas"] == 2
    _check_scores(tmp_path / "audit", report["steps"], NOISE, 8 / 360)


def _broken_noise(monkeypatch):
    honest = fast.noised_sum

    def quarter(gradients, dp, key, step):
        return honest(
            gradients, dataclasses.replace(dp, noise_multiplier=dp.noise_multiplier / 4), key, step
        )

    monkeypatch.setattr(fast, "noised_sum", quarter)


def _broken_clipping(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(fast, "clip_factors", lambda norms, clip: tf.ones_like(norms))


def _broken_sampling(monkeypatch):
    honest = sampling.poisson_indices
    monkeypatch.setattr(loop, "poisson_indices", lambda key, step, n, q: honest(key, 0, n, q))


@pytest.mark.parametrize(
    "brake", [_broken_clipping, _broken_sampling], ids=["no-clipping", "fixed-batch"]
)
def test_a_broken_step_is_caught(tmp_path, corpus, monkeypatch, brake):
    brake(monkeypatch)
    report = _audit(tmp_path, corpus)
    assert report.broken and report.epsilon_lower_bound > report.claimed_epsilon


def test_a_quarter_of_the_noise_is_caught_and_the_command_exits_1(tmp_path, corpus, monkeypatch):
    _broken_noise(monkeypatch)
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(_spec(tmp_path)),
            "--data",
            str(corpus),
            "-o",
            str(tmp_path / "audit"),
            "--white-box",
            "--canaries",
            str(CANARIES),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "the privacy guarantee is broken" in result.output
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["broken"] and saved["epsilon_lower_bound"] > 1.5 * saved["claimed_epsilon"]


def test_canaries_are_secret_distinct_and_clipped_by_the_step():
    canaries = GradientCanaries.draw(500)
    other = GradientCanaries.draw(500)
    assert canaries.key != other.key and canaries.included != other.included
    coordinates = canaries.coordinates(2_000)
    assert len(set(coordinates.tolist())) == 500 and coordinates.max() < 2_000
    assert np.array_equal(coordinates, canaries.coordinates(2_000))  # a resume finds them
    with pytest.raises(ValueError):
        canaries.coordinates(499)
    assert CANARY_NORM > 1  # above the clip: a step without clipping releases more


@pytest.mark.parametrize(
    "implementation, field",
    [("vectorized", "training.privacy.implementation"), (None, "training")],
)
def test_a_step_the_white_box_audit_cannot_observe_is_refused_before_training(
    tmp_path, corpus, implementation, field
):
    if implementation is None:  # no DP: no step to audit
        text = spec_text(epochs=1)
    else:
        text = spec_text(dp=True, epochs=1, noise=1.0, implementation=implementation)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as raised:
        audit(load(path), corpus, tmp_path / "audit", canaries=100, white_box=True)
    (diagnostic,) = raised.value.diagnostics
    assert diagnostic.path == field and diagnostic.line is not None
    assert "white-box" in diagnostic.message
    assert not (tmp_path / "audit").exists()


def test_the_gaussian_analysis_recovers_a_gaussian_mechanisms_epsilon():
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    from compiler.evaluate.bounds import auc_lower_bound, gaussian_bound, gdp_epsilon

    # mu-GDP is the Gaussian mechanism of noise 1 / mu: dp_accounting's epsilon for it.
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    for mu in (0.5, 1.0, 2.0):
        accountant = PLDAccountant(value_discretization_interval=1e-4)
        accountant.compose(dp_accounting.GaussianDpEvent(1 / mu))
        assert gdp_epsilon(mu, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-4)
    # Scores of 20,000 canaries with a Gaussian shift of mu: the bound is close to, and
    # below, mu-GDP's epsilon; with no shift it is 0.
    rng = np.random.default_rng(7)
    included = rng.random(20_000) < 0.5
    for mu in (0.5, 1.0):
        scores = rng.normal(size=20_000) + mu * included
        assert auc_lower_bound(scores, included, 0.95) < (1 + 0.03) * 0.5 * (1 + math.erf(mu / 2))
        bound = gaussian_bound(scores, included, 1e-5, 0.95)
        assert 0.8 * gdp_epsilon(mu, 1e-5) < bound < gdp_epsilon(mu, 1e-5) * 1.02
    assert gaussian_bound(rng.normal(size=20_000), included, 1e-5, 0.95) == 0.0


def test_the_guessing_analysis_knows_the_most_it_can_show():
    from compiler.evaluate.bounds import analyse, most_provable

    rng = np.random.default_rng(3)
    included = rng.random(1000) < 0.5
    perfect = {"score": included.astype(float) + rng.normal(scale=1e-3, size=1000)}
    found = analyse(perfect, included, 1e-6, 0.95, white_box=False)
    # Every guess right would show most_provable; the rules' best comes close.
    assert 0.8 * found["most_provable"] < found["bound"] <= found["most_provable"]
    assert found["guesses"][1] >= 0.99 * found["guesses"][0]
    # More canaries can show more; none can show much with a few.
    assert most_provable(10, 1e-6, 0.95) < 1.0 < most_provable(1000, 1e-6, 0.95)
    assert most_provable(1000, 1e-6, 0.95) < most_provable(10_000, 1e-8, 0.95) < 9

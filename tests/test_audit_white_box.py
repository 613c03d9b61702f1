"""The white-box audit: gradient canaries through the real DP step, and a step broken three
ways (a quarter of the noise, no clipping, one fixed batch) that it must catch.

The breaks are test-only: each replaces one function of the step for the test's duration
(monkeypatch), which no spec or command can do.
"""

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.data import sampling
from compiler.diagnostics import SpecError
from compiler.evaluate.audit import audit
from compiler.privacy import fast
from compiler.privacy.canaries import CANARY_NORM, GradientCanaries
from compiler.training import loop

from training_fixtures import load, spec_text, write_corpus

CANARIES = 10_000  # the tiny model has more parameters than this


def _spec(tmp_path, noise=1.5):
    # q = 8 / 360, 135 steps, noise 1.5, delta 1e-9: a claimed epsilon of about 1.3.
    text = (
        spec_text(
            dp=True, epochs=3, noise=noise, implementation="fast", dropout=0.0, length=12
        ).replace("rnn_units: 16", "rnn_units: 64")
        + "  privacy:\n    delta: 1.0e-9\n"
    )
    path = tmp_path / "dp.yaml"
    path.write_text(text)
    return path


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt", records=400)


def _audit(tmp_path, corpus, name="audit"):
    return audit(load(_spec(tmp_path)), corpus, tmp_path / name, canaries=CANARIES, white_box=True)


def test_a_correct_step_is_bounded_below_its_claim_and_well_above_zero(tmp_path, corpus):
    report = _audit(tmp_path, corpus)
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
    assert saved["broken"] and saved["epsilon_lower_bound"] > 2 * saved["claimed_epsilon"]


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

"""The privacy audit: its bound, its canaries, and a memorising model against a DP one."""

import csv
import json
import math
import random

import numpy as np
import pytest
from scipy.stats import binom
from typer.testing import CliRunner

from compiler.cli import app
from compiler.data.corpus import read_corpus, record_shape
from compiler.evaluate.audit import audit, make_canaries
from compiler.evaluate.bounds import epsilon_lower_bound, p_value

from training_fixtures import load, spec_text, write_corpus


def _pure_bound(r, v, confidence):
    """Independently: the epsilon at which P[Binomial(r, e^eps / (1 + e^eps)) >= v] = 1 - c."""
    low, high = 0.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        q = math.exp(mid) / (1 + math.exp(mid))
        low, high = (mid, high) if binom.sf(v - 1, r, q) < 1 - confidence else (low, mid)
    return low


def test_lower_bound_without_delta_is_the_randomised_response_quantile():
    for r, v in [(100, 95), (200, 150), (40, 40)]:
        assert epsilon_lower_bound(1000, r, v, 0.0, 0.95) == pytest.approx(
            _pure_bound(r, v, 0.95), abs=1e-6
        )
    assert epsilon_lower_bound(1000, 100, 50, 0.0, 0.95) == 0.0  # chance: no evidence
    # delta makes the bound smaller (more guesses are allowed to be right)...
    assert 0 < epsilon_lower_bound(100, 100, 95, 1e-3, 0.95) < _pure_bound(100, 95, 0.95)
    # ... and p-values fall as the claimed epsilon grows beyond what was observed.
    assert p_value(100, 100, 95, 1.0, 0.0) < p_value(100, 100, 95, 3.0, 0.0)


def test_canaries_have_the_corpus_format_and_are_new():
    corpus = read_corpus("examples/transactions.csv")
    shape = record_shape(corpus.records)
    made = make_canaries(corpus.records, 300, random.Random(0), shape)
    assert len(set(made)) == 300 and not set(made) & set(corpus.records)
    alphabet = set("".join(corpus.records))
    assert all(set(c) <= alphabet for c in made)
    rows = list(csv.reader(made, delimiter=shape["delimiter"]))
    assert all(len(row) == shape["fields"] for row in rows)
    # Column kinds survive: the amount column stays a decimal number, the flag one letter.
    assert all(re_number(row[2]) for row in rows if row[2])
    plain = make_canaries(["abc def", "ghi jk"], 20, random.Random(1))
    assert all(set(c) <= set("abc defghijk") for c in plain)


def re_number(text):
    return text.replace(".", "", 1).isdigit()


def _write(tmp_path, name, **kw):
    text = spec_text(epochs=kw.pop("epochs"), dropout=0.0, length=16, **kw).replace(
        "rnn_units: 16", "rnn_units: 64"
    )
    path = tmp_path / name
    path.write_text(text)
    return path


def test_audit_separates_a_memorising_model_from_a_dp_one(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", records=240)
    # Non-private, trained until it memorises: the audit guesses membership well.
    plain = audit(
        load(_write(tmp_path, "plain.yaml", epochs=30)), corpus, tmp_path / "plain", canaries=100
    )
    assert plain.claimed_epsilon is None and not plain.broken
    # The canaries' coins are secret (operating-system entropy), so the bound varies from
    # run to run (0.22 and above measured): what holds every time is that it is positive.
    assert plain.epsilon_lower_bound > 0 and plain.correct > 0.8 * plain.guesses
    assert plain.exposure["mean"] > 0.5 * plain.exposure["possible"]
    assert plain.mean_score_in > plain.mean_score_out
    # The run trained on exactly the corpus plus the included canaries.
    audited = read_corpus(tmp_path / "plain" / "data.txt").records
    assert len(audited) == 240 + plain.included and 20 < plain.included < 80
    # DP (noise 1.0), through the CLI: the bound stays within the claimed epsilon.
    dp = _write(tmp_path, "dp.yaml", epochs=1, dp=True, noise=1.0, implementation="fast")
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(dp),
            "--data",
            str(corpus),
            "-o",
            str(tmp_path / "dp"),
            "--canaries",
            "100",
            "-f",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "dp" / "audit.json").read_text())
    assert {"claimed_epsilon", "epsilon_lower_bound", "confidence", "canaries", "exposure"} <= set(
        report
    )
    assert report["claimed_epsilon"] is not None and not report["broken"]
    assert report["epsilon_lower_bound"] <= report["claimed_epsilon"]
    assert report["epsilon_lower_bound"] < plain.epsilon_lower_bound
    # It says what a black-box bound of a DP run cannot show, and what can.
    assert report["mode"] == "black-box" and report["most_provable"] > 0
    assert any("--white-box" in note for note in report["notes"])
    if report["epsilon_lower_bound"] == 0:
        assert any("does not show that the claimed epsilon is tight" in n for n in report["notes"])
    if report["most_provable"] <= report["claimed_epsilon"]:
        assert any(note.startswith("uninformative") for note in report["notes"])
    assert np.isfinite(report["exposure"]["mean"])

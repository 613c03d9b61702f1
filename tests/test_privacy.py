"""Privacy accounting agrees with tensorflow-privacy and inverts correctly."""

import json
import math
import re
import sys

import pytest
from conftest import ROOT
from typer.testing import CliRunner

import compiler
from compiler.cli import app
from compiler.privacy import compute_epsilon, noise_for_epsilon, privacy_report
from compiler.tf import tensorflow

tensorflow()
sys.skip_tf_privacy_import = True
from tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib import (  # noqa: E402
    compute_dp_sgd_privacy_statement,
)


def _tfp_poisson_epsilon(**kw) -> float:
    text = compute_dp_sgd_privacy_statement(**kw)
    return float(re.search(r"Epsilon assuming Poisson sampling \(\*\):\s+([0-9.]+)", text)[1])


@pytest.mark.parametrize(
    "examples, batch, epochs, noise, delta, microbatching",
    [
        (60000, 256, 15, 1.1, 1e-5, False),
        (60000, 256, 15, 1.1, 1e-5, True),
        (10000, 64, 3, 0.8, 1e-4, True),
        (50000, 32, 20, 1.1, 1e-6, False),
    ],
)
def test_epsilon_agrees_with_tensorflow_privacy(
    examples, batch, epochs, noise, delta, microbatching
):
    ours = compute_epsilon(
        noise_multiplier=noise,
        batch_size=batch,
        examples=examples,
        epochs=epochs,
        delta=delta,
        microbatching=microbatching,
    )
    theirs = _tfp_poisson_epsilon(
        number_of_examples=examples,
        batch_size=batch,
        num_epochs=epochs,
        noise_multiplier=noise,
        delta=delta,
        used_microbatching=microbatching,
    )
    assert ours == pytest.approx(theirs, abs=6e-4)  # the statement prints 3 decimals


def test_spec_report_doubles_sensitivity_only_with_microbatches_of_several():
    per_example = compiler.load_spec(ROOT / "specs" / "lstm-text-dp-per-example.yaml")
    grouped = compiler.load_spec(
        ROOT / "specs" / "lstm-text-dp-per-example.yaml",
        ["model.params.num_microbatches=8", "model.params.implementation=standard"],
    )
    a, b = privacy_report(per_example, 50000), privacy_report(grouped, 50000)
    assert not a.microbatching and b.microbatching
    assert b.epsilon > a.epsilon
    assert a.delta == 1e-6 and a.steps == math.ceil(20 / (32 / 50000))


def test_noise_for_target_epsilon_inverts():
    kw = dict(batch_size=64, examples=20000, epochs=5, delta=1e-5, microbatching=False)
    noise = noise_for_epsilon(target_epsilon=2.0, **kw)
    assert compute_epsilon(noise_multiplier=noise, **kw) == pytest.approx(2.0, rel=1e-3)
    assert compute_epsilon(noise_multiplier=noise * 0.9, **kw) > 2.0


def test_no_noise_means_no_guarantee():
    assert math.isinf(
        compute_epsilon(
            noise_multiplier=0.0,
            batch_size=8,
            examples=100,
            epochs=1,
            delta=1e-3,
            microbatching=False,
        )
    )


def test_privacy_cli_json_and_weak_guarantee_warning():
    runner = CliRunner()
    weak = runner.invoke(app, ["privacy", "specs/lstm-text-dp.yaml", "--examples", "10000"])
    assert weak.exit_code == 0
    assert "warning: training.privacy: epsilon is" in weak.output
    assert "no meaningful privacy guarantee" in weak.output
    strong = runner.invoke(
        app,
        ["privacy", "specs/lstm-text-dp-per-example.yaml", "--examples", "50000", "-f", "json"],
    )
    report = json.loads(strong.output)
    assert report["warning"] is None
    assert report["epsilon"] == pytest.approx(0.775, abs=1e-3)
    assert report["accountant"].startswith("RDP")
    solved = runner.invoke(
        app,
        [
            "privacy",
            "specs/lstm-text-dp-per-example.yaml",
            "--examples",
            "50000",
            "--target-epsilon",
            "3",
            "-f",
            "json",
        ],
    )
    assert json.loads(solved.output)["epsilon"] == pytest.approx(3.0, rel=1e-3)
    missing = runner.invoke(app, ["privacy", "specs/lstm-text.yaml", "--examples", "100"])
    assert missing.exit_code == 1
    assert "specs/lstm-text.yaml:7:13: error: training:" in missing.output

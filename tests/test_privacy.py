"""Privacy accounting: the events a run really is, independent dp_accounting computations,
tensorflow-privacy's statement, calibration, delta, and the commands that print them."""

import importlib.util
import json
import math
import re
import sys

import dp_accounting
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from typer.testing import CliRunner

import compiler
from compiler.cli import app
from compiler.privacy.accounting import (
    compute_epsilon,
    default_delta,
    epsilon_for_steps,
    noise_for_epsilon,
    privacy_report,
)
from compiler.tf import tensorflow

from conftest import ROOT

PER_EXAMPLE = ROOT / "specs" / "lstm-text-dp-per-example.yaml"


def _tfp_poisson_epsilon(**kw) -> float:
    if importlib.util.find_spec("tensorflow_privacy") is None:
        pytest.skip("tensorflow-privacy is installed on Python 3.11 only")
    tensorflow()
    sys.skip_tf_privacy_import = True
    from tensorflow_privacy.privacy.analysis.compute_dp_sgd_privacy_lib import (
        compute_dp_sgd_privacy_statement,
    )

    text = compute_dp_sgd_privacy_statement(**kw)
    return float(re.search(r"Epsilon assuming Poisson sampling \(\*\):\s+([0-9.]+)", text)[1])


@pytest.mark.parametrize(
    "examples, batch, epochs, noise, delta, microbatching",
    [
        (60000, 256, 15, 1.1, 1e-5, False),
        (60000, 256, 15, 1.1, 1e-5, True),
        (10000, 64, 3, 0.8, 1e-4, True),
    ],
)
def test_rdp_epsilon_agrees_with_tensorflow_privacy(
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


def _independent(accountant, event, delta):
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def test_poisson_report_equals_independent_pld_and_rdp_computations():
    spec = compiler.load_spec(PER_EXAMPLE)
    report = privacy_report(spec, 20000, steps=1500, compare=True)
    assert report.sampling == "poisson" and report.accountant == "pld"
    assert report.delta == 1e-6 and report.steps == 1500
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(32 / 20000, dp_accounting.GaussianDpEvent(1.1)), 1500
    )
    pld = _independent(PLDAccountant(), event, 1e-6)
    rdp = _independent(RdpAccountant(), event, 1e-6)
    assert report.epsilon == pytest.approx(pld, rel=1e-9)
    assert report.epsilons == pytest.approx({"pld": pld, "rdp": rdp}, rel=1e-9)
    assert pld < 0.9 * rdp  # PLD is the tighter bound
    # The spec's accountant is the one reported.
    as_rdp = compiler.load_spec(PER_EXAMPLE, ["training.privacy.accountant=rdp"])
    assert privacy_report(as_rdp, 20000, steps=1500).epsilon == pytest.approx(rdp, rel=1e-9)


def test_shuffled_batches_report_the_epsilon_without_amplification():
    spec = compiler.load_spec(PER_EXAMPLE, ["model.params.implementation=standard"])
    assert spec.training.privacy.sampling == "shuffle"
    per_epoch = 20000 // 32
    report = privacy_report(spec, 20000, steps=2 * per_epoch + 1)  # into a third epoch
    # Replace-one adjacency: sensitivity 2 C, one Gaussian mechanism per epoch touched.
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.1 / 2), 3)
    assert report.epsilon == pytest.approx(_independent(PLDAccountant(), event, 1e-6), rel=1e-9)
    assert any("no amplification" in a for a in report.assumptions)
    poisson = privacy_report(compiler.load_spec(PER_EXAMPLE), 20000, steps=2 * per_epoch + 1)
    assert report.epsilon > 10 * poisson.epsilon


def test_microbatches_of_several_examples_halve_the_noise_in_the_accounting():
    q, steps, delta = 64 / 10000, 200, 1e-5
    grouped = epsilon_for_steps(1.2, q, steps, delta, True, accountant="rdp")
    halved = epsilon_for_steps(0.6, q, steps, delta, False, accountant="rdp")
    assert grouped == pytest.approx(halved, rel=1e-12)
    assert grouped > epsilon_for_steps(1.2, q, steps, delta, False, accountant="rdp")


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_noise_for_target_epsilon_inverts(accountant):
    kw = dict(q=64 / 20000, steps=1560, delta=1e-5, microbatching=False, accountant=accountant)
    noise = noise_for_epsilon(target_epsilon=2.0, **kw)
    assert 0.98 * 2.0 <= epsilon_for_steps(noise, **kw) <= 2.0
    assert epsilon_for_steps(noise * 0.97, **kw) > 2.0


def test_no_noise_means_no_guarantee():
    assert math.isinf(epsilon_for_steps(0.0, 0.08, 12, 1e-3, False))


def test_default_delta_is_below_one_over_records():
    spec = compiler.load_spec(PER_EXAMPLE, ["training.privacy.delta=null"])
    report = privacy_report(spec, 3600)
    assert report.delta == pytest.approx(3600**-1.1) == default_delta(3600)
    assert report.delta < 1 / 3600 / 2
    assert "examples^-1.1" in report.delta_rule


def test_privacy_cli_prints_both_accountants_and_warns():
    runner = CliRunner()
    weak = runner.invoke(
        app,
        [
            "privacy",
            "specs/lstm-text-dp.yaml",
            "--examples",
            "10000",
            "--set",
            "model.params.noise_multiplier=0.1",
        ],
    )
    assert weak.exit_code == 0
    assert "warning: training.privacy: epsilon is" in weak.output
    assert "no meaningful privacy guarantee" in weak.output
    text = runner.invoke(app, ["privacy", str(PER_EXAMPLE), "--examples", "50000"]).output
    pld, rdp = (
        float(re.search(rf"{name} \(dp_accounting[^)]*\): ([0-9.]+)", text)[1])
        for name in ("PLD", "RDP")
    )
    assert pld < rdp and "sampling: poisson" in text
    report = json.loads(
        runner.invoke(
            app, ["privacy", str(PER_EXAMPLE), "--examples", "50000", "-f", "json"]
        ).output
    )
    assert report["epsilon"] == pytest.approx(pld, abs=1e-4) and report["warning"] is None
    assert report["accountant"] == "pld" and report["sampling"] == "poisson"
    # The spec's delta, 1e-6, is 1 / records at a million records: a warning says why.
    loose = runner.invoke(
        app, ["privacy", str(PER_EXAMPLE), "--examples", "1000000", "--epochs", "0.01"]
    )
    assert "lstm-text-dp-per-example.yaml:18:12: warning: training.privacy.delta" in loose.output
    assert "publishes one whole record" in loose.output
    solved = runner.invoke(
        app,
        ["privacy", str(PER_EXAMPLE), "--examples", "50000", "--target-epsilon", "3", "-f", "json"],
    )
    assert 0.98 * 3.0 <= json.loads(solved.output)["epsilon"] <= 3.0
    missing = runner.invoke(app, ["privacy", "specs/lstm-text.yaml", "--examples", "100"])
    assert missing.exit_code == 1
    assert "specs/lstm-text.yaml:7:13: error: training:" in missing.output


def test_validate_with_examples_warns_on_a_delta_of_one_over_records_or_more():
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(PER_EXAMPLE), "--examples", "999999", "-f", "json"])
    codes = {d["code"] for d in json.loads(ok.stdout)["files"][0]["diagnostics"]}
    assert "privacy_delta" not in codes
    loose = runner.invoke(
        app, ["validate", str(PER_EXAMPLE), "--examples", "1000000", "-f", "json"]
    )
    (found,) = [
        d
        for d in json.loads(loose.stdout)["files"][0]["diagnostics"]
        if d["code"] == "privacy_delta"
    ]
    assert found["severity"] == "warning" and found["line"] == 18
    assert found["path"] == "training.privacy.delta"
    strict = runner.invoke(app, ["validate", "--strict", str(PER_EXAMPLE), "--examples", "1000000"])
    assert strict.exit_code == 1


def test_rdp_report_names_the_old_dp_accounting_series_only_where_it_applies():
    from compiler.privacy.accounting import rdp_series_cut_short

    # tensorflow-privacy pins dp-accounting 0.4.3 on Python 3.11; 3.12 and later take 0.6.
    assert rdp_series_cut_short() == (sys.version_info < (3, 12))
    low = compiler.load_spec(
        PER_EXAMPLE, ["training.privacy.accountant=rdp", "training.privacy.noise_multiplier=0.9"]
    )
    high = compiler.load_spec(
        PER_EXAMPLE, ["training.privacy.accountant=rdp", "training.privacy.noise_multiplier=2.0"]
    )
    caveat = [
        a
        for a in privacy_report(low, 20000, steps=100).assumptions
        if "dp-accounting before 0.5" in a
    ]
    assert len(caveat) == (1 if rdp_series_cut_short() else 0)
    assert not any(
        "dp-accounting before 0.5" in a for a in privacy_report(high, 20000, steps=100).assumptions
    )
    assert not any(
        "dp-accounting before 0.5" in a
        for a in privacy_report(compiler.load_spec(PER_EXAMPLE), 20000, steps=100).assumptions
    )  # PLD alone

"""keraspec evaluate and generate --valid-only, on tiny runs trained here."""

from __future__ import annotations

import csv
import datetime
import json
import os
import random
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.data.columns import load_validators
from compiler.data.dataset import split_records
from compiler.evaluate import evaluate, write_html
from compiler.generation import ValidRecordsExhausted, generate
from compiler.training import train

from conftest import copy_fruit_run
from training_fixtures import load, spec_text, write_spec

CITIES = ["Lisbon", "Porto", "Paris, FR", "Oslo"]
BASE_AMOUNT = {"books": 20.0, "fuel": 60.0, "travel": 400.0}


def table_records(count: int, seed: int) -> list[str]:
    """Transactions whose amount depends on the kind; one city holds the delimiter."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        kind = rng.choice(list(BASE_AMOUNT))
        amount = max(1.0, rng.gauss(BASE_AMOUNT[kind], BASE_AMOUNT[kind] / 4))
        city = rng.choice(CITIES)
        day = datetime.date(2025, 1, 1) + datetime.timedelta(days=rng.randrange(365))
        shown = f'"{city}"' if "," in city else city
        records.append(f"{day.isoformat()},{kind},{amount:.2f},{shown}")
    return records


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A run on table records (two training steps: enough for validators and a split)."""
    root = tmp_path_factory.mktemp("table")
    data = root / "table.csv"
    data.write_text("\n".join(table_records(400, 0)) + "\n", encoding="utf-8")
    spec = load(write_spec(root / "s.yaml", vocab=64, validation_split=0.2))
    train(spec, data, root / "run", max_steps=2)
    return root, data


@pytest.fixture(scope="module")
def fruit(tmp_path_factory, fruit_run):
    """The fruit corpus, a model trained on it (the session's fruit run) and one trained for
    a single step."""
    root = tmp_path_factory.mktemp("fruit")
    copy_fruit_run(fruit_run, root, run="trained")
    corpus = root / "corpus.txt"
    train(load(root / "s.yaml"), corpus, root / "untrained", max_steps=1)
    return root, corpus


def test_held_out_records_score_high_and_scrambled_records_score_low(table):
    root, data = table
    unseen = table_records(300, 1)  # real records the run never saw
    real = evaluate(root / "run", data, synthetic=unseen)
    assert real.quality_score >= 85 and real.valid_share >= 0.95, real.to_dict()
    assert real.synthetic_scores.well_formed == 300
    # Each record's fields rotated: dates where kinds belong, and so on.
    rotated = []
    for record in unseen:
        fields = next(csv.reader([record]))
        fields = fields[1:] + fields[:1]
        rotated.append(",".join(f'"{f}"' if "," in f else f for f in fields))
    scrambled = evaluate(root / "run", data, synthetic=rotated)
    assert scrambled.valid_share == 0.0 and scrambled.quality_score <= 40
    # Each column shuffled on its own: the shapes stay, the kind-amount relation goes.
    columns = list(zip(*(next(csv.reader([r])) for r in unseen)))
    rng = random.Random(2)
    shuffled = [list(c) for c in columns]
    for c in shuffled[1:2]:
        rng.shuffle(c)
    unpaired = [",".join(f'"{f}"' if "," in f else f for f in row) for row in zip(*shuffled)]
    broken = evaluate(root / "run", data, synthetic=unpaired)
    assert abs(broken.synthetic_scores.column_shapes - real.synthetic_scores.column_shapes) < 0.02
    assert broken.synthetic_scores.column_pair_trends < (
        real.synthetic_scores.column_pair_trends - 0.1
    )


def test_the_run_split_gives_a_held_out_baseline_and_columns_from_the_data(table):
    root, data = table
    result = evaluate(root / "run", data, synthetic=table_records(100, 3))
    baseline = result.baseline
    assert baseline is not None and baseline.records == 80  # validation_split 0.2 of 400
    assert baseline.valid_share >= 0.95 and baseline.quality_score >= 80
    kinds = {c.name: c.kind for c in result.columns}
    assert kinds == {
        "field_1": "date",
        "field_2": "categorical",
        "field_3": "decimal",
        "field_4": "categorical",
    }
    city = next(c for c in result.columns if c.name == "field_4")
    assert "Paris, FR" in city.rule or "categorical of 4" in city.rule
    assert "not a privacy guarantee" in json.dumps(result.to_dict())


def test_exact_copies_are_memorized(table):
    root, data = table
    seed = json.loads((root / "run" / "run.json").read_text())["seed"]
    records = data.read_text().splitlines()
    train_idx, held_idx = split_records(len(records), 0.2, seed)
    copies = evaluate(root / "run", data, synthetic=[records[i] for i in train_idx])
    assert copies.memorized_share == 1.0
    assert copies.synthetic_scores.dcr["zero_share"] == 1.0
    # The whole file: its held-out fifth was never trained on.
    whole = evaluate(root / "run", data, synthetic=data)
    assert whole.memorized_share == pytest.approx(len(train_idx) / len(records), abs=0.02)
    fresh = evaluate(root / "run", data, synthetic=table_records(200, 4))
    assert fresh.memorized_share <= 0.05


def test_another_data_file_is_noted_and_nothing_is_held_out(table, tmp_path):
    root, _ = table
    other = tmp_path / "other.csv"
    other.write_text("\n".join(table_records(200, 5)) + "\n")
    result = evaluate(root / "run", other, synthetic=table_records(50, 6))
    assert result.baseline is None
    assert any("not the file the run trained on" in n for n in result.notes)


def test_a_trained_model_scores_above_an_untrained_one(fruit):
    root, corpus = fruit
    trained = evaluate(root / "trained", corpus, count=200, seed=0, constrained=False)
    untrained = evaluate(root / "untrained", corpus, count=200, seed=0, constrained=False)
    assert trained.quality_score > untrained.quality_score + 20, (
        trained.quality_score,
        untrained.quality_score,
    )
    assert trained.valid_share > untrained.valid_share + 0.2
    assert trained.generation == {
        "count": 200,
        "seed": 0,
        "temperature": 1.0,
        "constrained": False,
        "sampled": 200,
    }
    assert trained.step > untrained.step == 1


def test_constrained_generation_makes_every_record_valid_and_says_how_much_it_masked(fruit):
    root, corpus = fruit
    trained = evaluate(root / "trained", corpus, count=200, seed=0)
    untrained = evaluate(root / "untrained", corpus, count=200, seed=0)
    raw = evaluate(root / "untrained", corpus, count=200, seed=0, constrained=False)
    # An untrained model breaks the rules almost always; masked, it never does.
    assert raw.valid_share < 0.5
    assert untrained.valid_share == trained.valid_share == 1.0
    assert untrained.quality_score > raw.quality_score
    for result in (trained, untrained):
        g = result.generation
        assert g["constrained"] and len(g["masked_mass"]) == 200
        assert all(0.0 <= m <= 1.0 for m in g["masked_mass"])
    # The weak model needed the mask far more than the trained one.
    assert untrained.generation["masked_mass_mean"] > 0.9
    assert trained.generation["masked_mass_mean"] < untrained.generation["masked_mass_mean"] - 0.3


def test_valid_only_emits_only_records_that_pass(fruit):
    root, _ = fruit
    validators = load_validators(str(root / "trained"))
    result = generate(root / "trained", count=40, seed=0, valid_only=True)
    assert len(result.records) == 40 and all(map(validators.is_valid, result.records))
    assert result.sampled >= 40 and result.acceptance_rate == 40 / result.sampled
    assert result.validators and "learned" in result.validators
    # The same seed, the same records.
    again = generate(root / "trained", count=40, seed=0, valid_only=True)
    assert again.records == result.records


def test_valid_only_stops_cleanly_when_the_budget_runs_out(fruit):
    root, _ = fruit
    validators = load_validators(str(root / "untrained"))
    with pytest.raises(ValidRecordsExhausted) as e:
        generate(
            root / "untrained",
            count=50,
            seed=0,
            valid_only=True,
            max_invalid=20,
            temperature=3.0,
            constrained=False,
        )
    found = e.value.generated
    assert len(found.records) < 50 and all(map(validators.is_valid, found.records))
    assert found.sampled == len(found.records) + 21
    assert "--max-invalid = 20" in str(e.value)
    out = CliRunner().invoke(
        app,
        [
            "generate",
            str(root / "untrained"),
            "-n",
            "50",
            "--valid-only",
            "--max-invalid",
            "20",
            "--temperature",
            "3",
            "--seed",
            "0",
            "--unconstrained",
        ],
    )
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "expected 50 valid records" in out.output and "acceptance rate" in out.output


def test_a_dp_run_keeps_no_value_of_its_records(table, tmp_path):
    _, data = table
    spec = load(
        write_spec(
            tmp_path / "dp.yaml", dp=True, vocab=64, batch=8, noise=1.0, implementation="fast"
        )
    )
    train(spec, data, tmp_path / "run", max_steps=1)
    saved = (tmp_path / "run" / "validators.json").read_text()
    assert json.loads(saved)["source"] == "field_count"
    assert json.loads(saved)["columns"] is None and json.loads(saved)["fields"] == 4
    values = {v for r in table_records(400, 0) for v in re.split(r'[,"]', r) if v}
    assert not [v for v in values if v in saved and len(v) > 1]
    # Its evaluation checks the field count only, says so, and shows the guarantee; the
    # fidelity columns are learned locally, from the data file the evaluation is given.
    result = evaluate(tmp_path / "run", data, synthetic=table_records(100, 10))
    assert result.valid_share == 1.0 and "field count only" in result.validators
    assert all(c.rule is None for c in result.columns) and result.quality_score > 80
    assert result.privacy["epsilon"] > 0 and result.privacy["delta"] > 0
    # (Declared columns, which a DP run does use, are tested in test_columns.py.)


def test_a_declared_header_is_not_trained_on(tmp_path):
    data = tmp_path / "h.csv"
    data.write_text("day,kind,amount,city\n" + "\n".join(table_records(200, 7)) + "\n")
    text = spec_text(vocab=64, validation_split=0.0, extra="data: {header: true}\n")
    (tmp_path / "s.yaml").write_text(text)
    report = train(load(tmp_path / "s.yaml"), data, tmp_path / "run", max_steps=1)
    assert report.records == 200
    validators = load_validators(str(tmp_path / "run"))
    assert validators.header and validators.names == ["day", "kind", "amount", "city"]
    result = evaluate(tmp_path / "run", data, synthetic=data)
    assert result.memorized_share == 1.0 and result.synthetic_scores.records == 200


def test_records_that_are_not_delimited_are_compared_by_length(tmp_path):
    data = tmp_path / "text.txt"
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta"]
    data.write_text(
        "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(200))
        + "\n"
    )
    (tmp_path / "s.yaml").write_text(spec_text(vocab=40, validation_split=0.0))
    train(load(tmp_path / "s.yaml"), data, tmp_path / "run", max_steps=1)
    result = evaluate(tmp_path / "run", data, synthetic=data)
    assert result.valid_share is None and result.memorized_share == 1.0
    assert [c.name for c in result.columns] == ["record"] and result.quality_score > 95


def test_evaluate_cli_json_report_and_thresholds(table, tmp_path):
    root, data = table
    synthetic = tmp_path / "synthetic.csv"
    synthetic.write_text("\n".join(table_records(100, 8) + ["garbage"]) + "\n")
    runner = CliRunner()
    report = tmp_path / "report.html"
    out = runner.invoke(
        app,
        [
            "evaluate",
            str(root / "run"),
            "--data",
            str(data),
            "--synthetic",
            str(synthetic),
            "-o",
            str(report),
            "--format",
            "json",
        ],
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert {"valid_share", "quality_score", "memorized_share", "columns"} <= set(payload)
    assert payload["valid_share"] == pytest.approx(100 / 101)
    assert [c["name"] for c in payload["columns"]][:4] == [
        "field_1",
        "field_2",
        "field_3",
        "field_4",
    ]
    assert payload["failing"][0]["record"] == "garbage"
    assert report.is_file() and payload["report"] == str(report)
    text = runner.invoke(
        app,
        [
            "evaluate",
            str(root / "run"),
            "--data",
            str(data),
            "--synthetic",
            str(synthetic),
            "--min-quality",
            "99.9",
        ],
    )
    assert text.exit_code == 1 and "quality_score >= 99.9" in text.output
    assert "held-out real" in text.output and "valid_share" in text.output


def test_evaluate_cli_errors_name_the_file_and_write_nothing(table, tmp_path):
    root, data = table
    runner = CliRunner()
    missing = runner.invoke(
        app,
        [
            "evaluate",
            str(root / "run"),
            "--data",
            str(tmp_path / "nope.csv"),
            "--synthetic",
            str(data),
        ],
    )
    assert missing.exit_code == 1 and "no such file" in missing.output
    assert str(tmp_path / "nope.csv") in missing.output and "Traceback" not in missing.output
    nowhere = tmp_path / "no" / "report.html"
    bad = runner.invoke(
        app,
        [
            "evaluate",
            str(root / "run"),
            "--data",
            str(data),
            "--synthetic",
            str(data),
            "-o",
            str(nowhere),
        ],
    )
    assert bad.exit_code == 1 and "does not exist" in bad.output
    assert not nowhere.parent.exists()
    not_run = runner.invoke(
        app, ["evaluate", str(tmp_path), "--data", str(data), "--synthetic", str(data)]
    )
    assert not_run.exit_code == 1 and "run directory" in not_run.output


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("KERASPEC_REQUIRE_BROWSER"):
        pytest.fail("no headless browser (Debian's chromium), which CI installs")
    pytest.skip("no chromium on this machine (CI installs it): the report's browser test")


def _open_in_browser(browser: str, page, scratch) -> tuple[str, str, list[str]]:
    """The page's DOM after its scripts ran, the browser's log, and the URLs the page asked
    the network for (from Chromium's net log; the browser's own requests have no origin)."""
    netlog = scratch / f"{page.stem}.netlog.json"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={scratch / 'profile'}",
        f"--log-net-log={netlog}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run([browser, *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    requested = [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]
    return done.stdout, done.stderr, requested


def test_the_html_report_draws_its_plots_offline_in_a_real_browser(table, tmp_path):
    browser = _browser()
    # The check sees a page's network requests: a page that fetches is caught.
    control = tmp_path / "control.html"
    control.write_text('<html><body><img src="http://example.invalid/x.png"></body></html>')
    assert _open_in_browser(browser, control, tmp_path)[2] == ["http://example.invalid/x.png"]

    root, data = table
    hostile = table_records(100, 9) + ["2025-01-01,</script><b>x</b>,1.00,Oslo"]
    result = evaluate(root / "run", data, synthetic=hostile)
    page = tmp_path / "report.html"
    write_html(result, str(page))
    dom, log, requested = _open_in_browser(browser, page, tmp_path)
    assert requested == []  # nothing fetched: scripts, styles and plots are in the page
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert "data-errors" not in body, body
    assert "Uncaught" not in log, log[-2000:]
    plots = re.findall(r'<div id="plot-\d+" class="column-plot[^"]*"', dom)
    assert len(plots) == len(result.fidelity_columns) == 4
    # plotly drew each figure: its SVG layers are in the DOM.
    assert dom.count('class="main-svg"') >= 2 * len(plots)
    assert "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in dom  # the hostile value, shown as text
    for heading in ("Scores", "Privacy", "Columns", "Distributions", "Failing records", "Spec"):
        assert f"<h2>{heading}</h2>" in dom


def test_distances_equal_sdmetrics_dcr():
    import numpy as np
    from sdmetrics.single_table.privacy.dcr_utils import calculate_dcr

    from compiler.data.columns import Column, split_record
    from compiler.evaluate import fidelity

    columns = [
        Column("day", "date", format="%Y-%m-%d"),
        Column("kind", "categorical"),
        Column("amount", "decimal"),
        Column("flag", "integer"),
    ]
    rng = random.Random(0)

    def rows(count):
        out = []
        for record in table_records(count, rng.randrange(100)):
            day, kind, amount, _ = split_record(record, ",")
            if rng.random() < 0.1:
                amount = "n/a"  # does not parse: missing
            if rng.random() < 0.05:
                day = "2025-02-30"
            out.append([day, kind, amount, "1"])  # flag: a constant column
        return out

    reference, synthetic = fidelity.frame(columns, rows(300)), fidelity.frame(columns, rows(120))
    synthetic.loc[3, "flag"] = 2.0
    ours = fidelity.distances(columns, synthetic, reference, seed=0)
    theirs = calculate_dcr(synthetic, reference, fidelity.metadata(columns)).to_numpy()
    assert ours.shape == (120,) and np.allclose(ours, theirs, atol=1e-12)
    assert ours.min() >= 0 and ours.max() <= 1 and ours[3] >= 0.25  # the other flag


def test_pair_trends_bin_numbers_by_the_real_range_so_one_outlier_moves_no_bin():
    from compiler.data.columns import Column
    from compiler.evaluate import fidelity

    rng = np.random.default_rng(0)
    columns = [
        Column("kind", "categorical", values=("a", "b")),
        Column("x", "decimal"),
        Column("day", "date", format="%Y-%m-%d"),
    ]

    def rows(n, outlier=False):
        out = []
        for i in range(n):
            kind = "ab"[i % 2]
            x = rng.normal(0 if kind == "a" else 10, 1)
            day = f"2024-0{1 if kind == 'a' else 6}-{rng.integers(10, 28)}"
            out.append([kind, f"{x:.3f}", day])
        if outlier:
            out.append(["a", "1000.0", "2030-01-01"])
        return out

    real = fidelity.frame(columns, rows(600))
    same = fidelity.fidelity(columns, real, fidelity.frame(columns, rows(600, outlier=True)))
    scores = {(a, b): score for a, b, _, score in same.pairs}
    # The bulk follows the real trends: one value beyond the real range changes nothing.
    assert scores["kind", "x"] > 0.9 and scores["kind", "day"] > 0.9
    swapped = [[{"a": "b", "b": "a"}[k], x, d] for k, x, d in rows(600)]
    broken = fidelity.fidelity(columns, real, fidelity.frame(columns, swapped))
    assert dict(((a, b), s) for a, b, _, s in broken.pairs)["kind", "x"] < 0.2

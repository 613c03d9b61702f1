"""Spec review without TensorFlow: diff golden cases, git revisions, CI annotations, CLI bits."""

import json
import re
import subprocess

import pytest
from typer.testing import CliRunner

from compiler.cli import app

from conftest import CASES, ROOT

runner = CliRunner()
DIFF_CASES = sorted(p for p in (CASES / "diff").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", DIFF_CASES, ids=lambda p: p.name)
def test_diff_golden_case(case):
    expected = json.loads((case / "expected.json").read_text())
    args = ["diff", str(case / "old.yaml"), str(case / "new.yaml"), "--format", "json"]
    if "examples" in expected:
        args += ["--examples", str(expected["examples"])]
    result = runner.invoke(app, args)
    assert result.exit_code == expected["exit"], result.output
    report = json.loads(result.stdout)
    assert report["equivalent"] == (expected["exit"] == 0)
    if "fields" in expected:
        assert [f["path"] for f in report["fields"]] == expected["fields"]
    changed = {r["layer"]: r["status"] for r in report["layers"] if r["status"] != "same"}
    assert changed == expected["layers"]
    assert report["params"] == expected["params"]
    # Per-layer counts add up to the totals.
    assert sum(r["params_old"] for r in report["layers"]) == expected["params"]["old"]
    assert sum(r["params_new"] for r in report["layers"]) == expected["params"]["new"]
    assert report["checkpoint"] == expected["checkpoint"]
    if "serving" in expected:
        assert report["serving"] == expected["serving"]
    if "serving_compatible" in expected:
        assert report["serving"]["compatible"] == expected["serving_compatible"]
    for key, values in expected.get("privacy", {}).items():
        assert report["privacy"][key] == values
    if expected.get("epsilon_decreases"):
        old, new = report["privacy"]["epsilon"]
        assert 0 < new < old
    markdown = runner.invoke(app, args[:-2] + ["--format", "markdown"])
    assert markdown.exit_code == expected["exit"]
    if expected["exit"]:
        assert f"({expected['params']['delta']:+,})" in markdown.stdout
    else:
        assert "equivalent" in markdown.stdout


def test_diff_reads_git_revisions(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "ci@example.com")
    git("config", "user.name", "ci")
    spec = tmp_path / "model.yaml"
    case = CASES / "diff" / "units_change"
    spec.write_text((case / "old.yaml").read_text())
    git("add", "model.yaml")
    git("commit", "-qm", "old")
    spec.write_text((case / "new.yaml").read_text())  # the working tree has the new spec
    with pytest.MonkeyPatch.context() as m:
        m.chdir(tmp_path)
        result = runner.invoke(app, ["diff", "HEAD:model.yaml", "model.yaml", "-f", "json"])
        missing = runner.invoke(app, ["diff", "HEAD:nope.yaml", "model.yaml"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["old"] == "HEAD:model.yaml"
    assert report["params"]["delta"] == 619520
    assert missing.exit_code == 2 and "HEAD:nope.yaml" in missing.output


def test_diff_of_an_invalid_spec_exits_2_with_its_diagnostics():
    bad = CASES / "invalid" / "unknown_key.yaml"
    result = runner.invoke(app, ["diff", str(bad), "specs/lstm-text.yaml"])
    assert result.exit_code == 2
    assert f"{bad}:10:7: error" in result.output


_ANNOTATION = re.compile(
    r"^::(error|warning) file=([^,]+),line=(\d+),col=(\d+),title=([^:]+)::(.*)$"
)


def test_validate_github_format_is_one_annotation_per_diagnostic():
    files = [CASES / "invalid" / "unknown_key.yaml", CASES / "warnings" / "cudnn.yaml"]
    result = runner.invoke(app, ["validate", "--format", "github", *map(str, files)])
    assert result.exit_code == 1
    text = runner.invoke(app, ["validate", "--format", "json", *map(str, files)]).stdout
    diagnostics = [d for f in json.loads(text)["files"] for d in f["diagnostics"]]
    lines = result.stdout.splitlines()
    assert len(lines) == len(diagnostics) == 4
    for line, d in zip(lines, diagnostics):
        m = _ANNOTATION.match(line)
        assert m, line
        severity, file, row, col, title, message = m.groups()
        assert (severity, file, int(row), int(col)) == (
            d["severity"],
            d["file"],
            d["line"],
            d["column"],
        )
        assert title.startswith(f"keraspec {d['code']}")
        unescaped = message.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")
        assert unescaped == f"{d['path']}: {d['message']}"


def test_version_option():
    from compiler import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"keraspec {__version__}"


def test_render_to_a_file_points_at_the_schema_relative_to_it(tmp_path):
    out = tmp_path / "deep" / "spec.yaml"
    result = runner.invoke(
        app,
        [
            "render",
            "specs/char-small.yaml",
            "-o",
            str(out),
            "--schema",
            str(ROOT / "schema" / "keraspec.schema.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    first = out.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (out.parent / first.split("=", 1)[1]).resolve()
    assert target == (ROOT / "schema" / "keraspec.schema.json").resolve()
    again = runner.invoke(app, ["diff", "specs/char-small.yaml", str(out)])
    assert again.exit_code == 0  # the rendered file is the same spec


def test_a_tensorflow_command_without_the_extra_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tensorflow") else real(name, *a),
    )
    result = runner.invoke(app, ["compile", "specs/char-small.yaml"])
    assert result.exit_code == 1
    assert "pip install 'keraspec[tensorflow]'" in result.output
    assert "missing: tensorflow" in result.output and "Traceback" not in result.output

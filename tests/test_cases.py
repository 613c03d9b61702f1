"""Every invalid spec gives exactly its expected diagnostics, and the CLI reports them."""

import json

import pytest
from typer.testing import CliRunner

import compiler
from compiler.cli import app

from cases import Case, cases

INVALID = cases("invalid")
WARNINGS = cases("warnings")


def _relative(case: Case) -> str:
    return str(case.path.relative_to(case.path.parents[2]))


def _observed(result) -> set:
    return {(d.severity, d.line, d.column, d.path, d.code) for d in result.diagnostics}


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_spec_gives_expected_diagnostics(case):
    assert case.expected, f"{case.id} declares no expected diagnostic"
    result = compiler.validate(case.path)
    assert not result.ok
    assert _observed(result) == set(case.expected)
    assert all(d.file == str(case.path) for d in result.diagnostics)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_cli_reports_invalid_spec_without_traceback(case):
    path = str(case.path)
    result = CliRunner().invoke(app, ["validate", path])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for severity, line, column, field, _ in case.expected:
        prefix = f"{path}:{line}:{column}: {severity}: " + (f"{field}: " if field else "")
        assert prefix in result.output


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_cli_json_diagnostics(case):
    result = CliRunner().invoke(app, ["validate", "--format", "json", str(case.path)])
    assert result.exit_code == 1
    payload = json.loads(result.output)
    assert payload["valid"] is False
    (entry,) = payload["files"]
    got = {
        (d["severity"], d["line"], d["column"], d["path"], d["code"]) for d in entry["diagnostics"]
    }
    assert got == set(case.expected)
    assert all(
        d["message"].startswith("expected") or "expected" in d["message"]
        for d in entry["diagnostics"]
    )


@pytest.mark.parametrize("case", WARNINGS, ids=lambda c: c.id)
def test_warnings_pass_unless_strict(case):
    result = compiler.validate(case.path)
    assert result.ok
    assert _observed(result) == set(case.expected)
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(case.path)]).exit_code == 0
    strict = runner.invoke(app, ["validate", "--strict", str(case.path)])
    assert strict.exit_code == 1
    assert "warning:" in strict.output


def test_load_spec_raises_spec_error_with_all_diagnostics():
    case = next(c for c in INVALID if c.path.name == "template_param_range.yaml")
    with pytest.raises(compiler.SpecError) as info:
        compiler.load_spec(case.path)
    assert {(d.line, d.path) for d in info.value.diagnostics} == {
        (line, path) for _, line, _, path, _ in case.expected
    }
    assert str(case.path) in str(info.value)

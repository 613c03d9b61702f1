"""The checked-in specs: valid, round-trip through render, and match the published schema."""

import json

import jsonschema
import pytest
from ruamel.yaml import YAML

import compiler
from compiler.lang.render import render, to_data
from compiler.lang.schema import SCHEMA_PATH, schema_text

from cases import cases
from conftest import ROOT, spec_files

SPECS = spec_files()
SCHEMA = json.loads((ROOT / SCHEMA_PATH).read_text())
HEADER = "# yaml-language-server: $schema=../schema/keraspec.schema.json"


def _plain(text: str):
    return YAML(typ="safe", pure=True).load(text)


def test_specs_folder_is_populated():
    names = {p.name for p in SPECS}
    assert {"lstm-text.yaml", "lstm-text-dp.yaml"} <= names
    assert any(p.suffix == ".json" for p in SPECS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_spec_is_valid_without_warnings(path):
    result = compiler.validate(path)
    assert result.ok, [d.format() for d in result.diagnostics]
    assert [d.code for d in result.diagnostics] == []  # validate --strict specs/ passes
    assert result.analysis is not None and result.analysis.total_params > 0


@pytest.mark.parametrize("path", [p for p in SPECS if p.suffix == ".yaml"], ids=lambda p: p.name)
def test_yaml_spec_declares_its_schema(path):
    assert path.read_text().splitlines()[0] == HEADER


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_render_round_trip(path, fmt):
    spec = compiler.load_spec(path)
    text = render(spec, fmt)
    again = compiler.load_spec(text + "\n", name="<rendered>")
    assert again == spec  # dump then load is the identity
    assert render(again, fmt) == text  # rendering a rendered spec changes nothing


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_rendered_form_is_explicit(path):
    data = to_data(compiler.load_spec(path))
    assert "template" not in data["model"]
    assert all("name" in layer for layer in data["model"]["layers"])
    assert data["training"]["batch_size"] > 0


def test_published_schema_is_up_to_date():
    assert (
        ROOT / SCHEMA_PATH
    ).read_text() == schema_text(), (
        "schema/keraspec.schema.json is stale: run `keraspec schema -o schema/keraspec.schema.json`"
    )


def test_published_schema_is_a_valid_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_published_report_schema_is_up_to_date_and_valid():
    from compiler.training.report import REPORT_SCHEMA_FILE, report_schema_text

    published = (ROOT / "schema" / REPORT_SCHEMA_FILE).read_text()
    assert (
        published == report_schema_text()
    ), "schema/report.schema.json is stale: run `keraspec schema --report -o schema/`"
    jsonschema.Draft202012Validator.check_schema(json.loads(published))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_schema_accepts_spec_and_its_rendered_forms(path):
    validator = jsonschema.Draft202012Validator(SCHEMA)
    spec = compiler.load_spec(path)
    for document in (_plain(path.read_text()), _plain(render(spec, "yaml")), to_data(spec)):
        errors = [e.message for e in validator.iter_errors(document)]
        assert errors == []


@pytest.mark.parametrize(
    "case", [c for c in cases("invalid") if c.schema != "skip"], ids=lambda c: c.id
)
def test_schema_agrees_on_bad_cases(case):
    """Structure errors are rejected by the schema; semantic-only ones are not its job."""
    document = _plain(case.path.read_text())
    valid = jsonschema.Draft202012Validator(SCHEMA).is_valid(document)
    assert valid == (case.schema == "accept")


def test_reference_template_parameter_count():
    # The reference model's documented size (gretel-synthetics defaults).
    analysis = compiler.validate(ROOT / "specs" / "lstm-text.yaml").analysis
    assert analysis.total_params == 11_310_624
    shapes = {layer.name: layer.output_shape for layer in analysis.layers}
    assert shapes["lstm_1"] == (64, None, 256)
    assert shapes["dense"] == (64, None, 20000)
    assert analysis.sequential


def test_graph_spec_is_not_sequential():
    analysis = compiler.validate(ROOT / "specs" / "residual-lstm.yaml").analysis
    assert not analysis.sequential
    residual = next(layer for layer in analysis.layers if layer.name == "residual")
    assert residual.inputs == ["lstm_a", "lstm_b"]

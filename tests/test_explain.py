"""The spec language documented field by field: every schema property, and `explain`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.diagnostics import SpecError
from compiler.lang.explain import explain
from compiler.lang.schema import json_schema


def test_every_schema_property_has_a_description():
    schema = json_schema()
    missing = [
        f"{name}.{key}"
        for name, node in schema["$defs"].items()
        for key, prop in node.get("properties", {}).items()
        if not prop.get("description", "").strip()
    ]
    assert missing == []


def test_explain_gives_type_default_and_description():
    (noise,) = explain("training.privacy.noise_multiplier")
    assert noise.type == "number (>= 0) or null" and noise.default == "null"
    assert "multiple of l2_norm_clip" in noise.description
    (limit,) = explain("export.limits.max_batch")
    assert limit.default == "256" and "Rows per request" in limit.description
    (accountant,) = explain("training.privacy.accountant")
    assert accountant.type == "one of: pld, rdp" and accountant.default == '"pld"'


def test_a_field_shared_by_several_types_is_shown_per_meaning():
    units = explain("model.layers[0].units")
    owners = {f.owner for f in units}
    assert owners == {"LSTMLayer, GRULayer", "DenseLayer"}
    assert explain("model.layers.units") == units  # an index reads as "an item"


def test_an_object_lists_its_fields_and_template_params_are_explained():
    (privacy,) = explain("training.privacy")
    names = [name for name, _, _ in privacy.fields]
    assert {"l2_norm_clip", "noise_multiplier", "sampling", "accountant"} <= set(names)
    (units,) = explain("model.params.rnn_units")
    assert units.default == "256" and "LSTM" in units.description
    (root,) = explain("")
    assert {"apiVersion", "name", "model", "training", "export", "data"} <= {
        n for n, _, _ in root.fields
    }


def test_an_unknown_field_is_an_error_with_a_suggestion():
    with pytest.raises(SpecError) as e:
        explain("training.privcy.noise_multiplier")
    (d,) = e.value.diagnostics
    assert d.path == "training.privcy" and "did you mean privacy?" in d.message


def test_explain_cli_text_and_json():
    runner = CliRunner()
    text = runner.invoke(app, ["explain", "training.early_stopping.patience"])
    assert text.exit_code == 0 and "default: 5" in text.output
    assert "Epochs without an improvement" in text.output
    data = runner.invoke(app, ["explain", "data.fields.kind", "--format", "json"])
    (kind,) = json.loads(data.output)
    assert "categorical" in kind["type"] and kind["owner"] == "FieldSpec"
    bad = runner.invoke(app, ["explain", "model.layerz"])
    assert bad.exit_code == 1 and "did you mean layers?" in bad.output

"""The fast half of the CLI, in process, plus one real subprocess run."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from compiler.cli import app
from compiler.lang.schema import schema_text

from conftest import ROOT, spec_files

runner = CliRunner()


def test_validate_specs_folder():
    result = runner.invoke(app, ["validate", "specs/"])
    assert result.exit_code == 0, result.output
    for path in spec_files():
        assert f"✓ specs/{path.name}" in result.output
    assert f"{len(spec_files())} file(s): {len(spec_files())} valid, 0 invalid" in result.output


def test_validate_json_format():
    result = runner.invoke(app, ["validate", "specs/lstm-text.yaml", "--format", "json"])
    assert result.exit_code == 0
    payload = json.loads(result.output)
    assert payload == {
        "valid": True,
        "files": [
            {
                "file": "specs/lstm-text.yaml",
                "valid": True,
                "name": "lstm-text",
                "params": 11_310_624,
                "diagnostics": [],
            }
        ],
    }


def test_validate_mixed_files_exit_1():
    result = runner.invoke(
        app, ["validate", "specs/lstm-text.yaml", "tests/cases/invalid/logits_size.yaml"]
    )
    assert result.exit_code == 1
    assert "2 file(s): 1 valid, 1 invalid" in result.output


def test_usage_errors_exit_2():
    assert runner.invoke(app, ["validate", "does/not/exist.yaml"]).exit_code == 2
    assert runner.invoke(app, ["validate"]).exit_code == 2
    assert runner.invoke(app, ["validate", "--format", "xml", "specs"]).exit_code == 2
    assert runner.invoke(app, ["render", "does/not/exist.yaml"]).exit_code == 2


def test_validate_with_set():
    bad = runner.invoke(app, ["validate", "specs/lstm-text.yaml", "--set", "input.vocab_size=50"])
    assert bad.exit_code == 1
    assert (
        "model.layers[6].units: expected the logits layer to have input.vocab_size = 50"
        in bad.output
    )


def test_render_with_set_yaml_and_json():
    result = runner.invoke(
        app, ["render", "specs/lstm-text.yaml", "--set", "model.params.rnn_units=32", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [layer["units"] for layer in data["model"]["layers"] if layer["type"] == "lstm"] == [
        32,
        32,
    ]
    yaml_out = runner.invoke(app, ["render", "specs/lstm-text.yaml"])
    assert yaml_out.exit_code == 0
    assert "template" not in yaml_out.output
    assert "  output: dense" in yaml_out.output


def test_render_bad_set_reports_and_exits_1():
    result = runner.invoke(
        app, ["render", "specs/lstm-text.yaml", "--set", "model.params.rnn_units=-3"]
    )
    assert result.exit_code == 1
    assert (
        "--set:1:24: error: model.params.rnn_units: expected a positive integer, received -3"
        in (result.output)
    )


def test_schema_command_writes_atomically(tmp_path):
    out = tmp_path / "sub" / "schema.json"
    result = runner.invoke(app, ["schema", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text() == schema_text()
    assert [p.name for p in out.parent.iterdir()] == ["schema.json"]
    printed = runner.invoke(app, ["schema"])
    assert json.loads(printed.output)["title"] == "keraspec spec"


def test_templates_lists_params_and_defaults():
    result = runner.invoke(app, ["templates", "--format", "json"])
    data = json.loads(result.output)
    assert set(data) == {"lstm-text", "lstm-text-dp", "transformer-text", "transformer-text-dp"}
    assert data["lstm-text"]["params"]["rnn_units"]["default"] == 256
    assert data["lstm-text-dp"]["params"]["noise_multiplier"]["default"] == 1.1
    assert data["transformer-text"]["params"]["num_heads"]["default"] == 4
    assert data["transformer-text-dp"]["params"]["implementation"]["default"] == "fast"
    text = runner.invoke(app, ["templates"])
    assert "lstm-text-dp" in text.output and "l2_norm_clip" in text.output


def test_schema_into_a_directory_writes_the_schema_file(tmp_path):
    result = runner.invoke(app, ["schema", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "keraspec.schema.json").read_text())
    assert written == json.loads((ROOT / "schema" / "keraspec.schema.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["keraspec.schema.json"]


def test_spec_commands_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from compiler.cli import app\n"
        "r = CliRunner()\n"
        "for args in (['validate', 'specs'], ['render', 'specs/lstm-text-dp.yaml'],"
        " ['schema'], ['templates'], ['--help']):\n"
        "    assert r.invoke(app, args).exit_code == 0, args\n"
        "assert not [m for m in sys.modules if m.startswith(('tensorflow', 'tf_keras', 'keras'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_console_script_exit_codes_and_no_traceback():
    ok = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "validate", "specs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "validate", "tests/cases/invalid/non_utf8.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "tests/cases/invalid/non_utf8.yaml:4:10: error:" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_help_text_flags_full_template_types_and_wrapped_diffs():
    runner = CliRunner()
    help_text = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "100"}).output
    valid_only = next(line for line in help_text.splitlines() if "--valid-only" in line)
    assert "<bool>" not in valid_only  # a flag takes no value
    templates = json.loads(runner.invoke(app, ["templates", "--format", "json"]).output)
    params = templates["lstm-text-dp"]["params"]
    assert params["rnn_initializer"]["type"].startswith("one of: glorot_uniform")
    assert params["num_microbatches"]["type"] == "integer (> 0, <= 2147483647) or null"
    assert params["rnn_units"]["description"] == "Units of each of the two LSTMs."
    narrow = runner.invoke(
        app, ["diff", "specs/char-small.yaml", "specs/lstm-text-dp.yaml"], env={"COLUMNS": "60"}
    )
    assert narrow.exit_code == 1 and "…" not in narrow.output
    assert "model.layers" in narrow.output and "changed" in narrow.output

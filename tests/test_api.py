"""The Python API: load_spec from paths and text, overrides, structured errors."""

import pathlib

import pytest

import compiler
from compiler.lang.templates import merge

from conftest import ROOT

SMALL = """\
apiVersion: keraspec/v1
name: small
model:
  template: lstm-text
  params:
    vocab_size: 40
    rnn_units: 16
"""


def test_load_spec_accepts_path_str_and_text():
    by_path = compiler.load_spec(ROOT / "specs" / "char-small.yaml")
    by_str = compiler.load_spec("specs/char-small.yaml")
    by_text = compiler.load_spec((ROOT / "specs" / "char-small.yaml").read_text())
    assert by_path == by_str == by_text
    assert isinstance(by_path, compiler.CheckedSpec) and isinstance(by_path.spec, compiler.Spec)


def test_template_params_flow_into_layers():
    spec = compiler.load_spec(SMALL)
    types = [layer.type for layer in spec.model.layers]
    assert types == ["embedding", "dropout", "lstm", "dropout", "lstm", "dropout", "dense"]
    assert spec.model.layers[0].input_dim == 40
    assert spec.model.layers[2].units == spec.model.layers[4].units == 16
    assert spec.model.layers[6].units == 40
    assert spec.input.batch_size == spec.training.batch_size == 64


def test_overrides_change_template_params_and_explicit_fields():
    spec = compiler.load_spec(SMALL, ["model.params.rnn_units=8", "training.epochs=2"])
    assert spec.model.layers[2].units == 8
    assert spec.training.epochs == 2
    flat = compiler.load_spec(
        "specs/gru-text.yaml", ["model.layers[1].units=64", "training.optimizer={type: sgd}"]
    )
    assert flat.model.layers[1].units == 64
    assert flat.training.optimizer.type == "sgd"
    assert flat.training.optimizer.learning_rate == 0.01  # sgd's default, not adam's value


def test_user_sections_merge_over_template():
    spec = compiler.load_spec(SMALL + "training:\n  optimizer: {learning_rate: 0.5}\n")
    assert spec.training.optimizer.type == "rmsprop"
    assert spec.training.optimizer.learning_rate == 0.5
    assert spec.training.sequence_length == 100  # still the template's


@pytest.mark.parametrize(
    "override, code, column",
    [
        ("model.params.rnn_units=abc", "wrong_type", 24),
        ("model.params.rnn_unit=3", "unknown_key", 1),
        ("name.first=3", "bad_override", 1),
        ("model.layers[9].units=3", "bad_override", 1),
        ("no-equals-sign", "bad_override", 1),
    ],
)
def test_bad_overrides_are_reported_at_the_argument(override, code, column):
    with pytest.raises(compiler.SpecError) as info:
        compiler.load_spec(SMALL, [override])
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.code) == ("--set", 1, code)
    assert d.column == column


def test_merge_replaces_mapping_of_another_type():
    base = {"optimizer": {"type": "rmsprop", "rho": 0.9}, "epochs": 3}
    assert merge(base, {"optimizer": {"type": "adam"}}) == {
        "optimizer": {"type": "adam"},
        "epochs": 3,
    }
    assert merge(base, {"optimizer": {"rho": 0.5}})["optimizer"] == {"type": "rmsprop", "rho": 0.5}


def test_spec_error_for_missing_file(tmp_path: pathlib.Path):
    with pytest.raises(compiler.SpecError) as info:
        compiler.load_spec(tmp_path / "nope.yaml")
    assert info.value.diagnostics[0].code == "unreadable"


def test_all_errors_in_a_file_reported_at_once():
    text = SMALL.replace("rnn_units: 16", "rnn_units: 0\n    embedding_dim: -1\n    bogus: 1")
    result = compiler.validate(text)
    assert sorted(d.path for d in result.diagnostics) == [
        "model.params.bogus",
        "model.params.embedding_dim",
        "model.params.rnn_units",
    ]


def test_compile_half_is_lazy():
    import subprocess
    import sys

    code = (
        "import sys, compiler\n"
        "assert 'tensorflow' not in sys.modules\n"
        "assert callable(compiler.privacy.privacy_report)\n"
        "assert 'tensorflow' not in sys.modules\n"
        "assert callable(compiler.compile_spec)\n"
        "assert 'tensorflow' not in sys.modules  # only a call imports it\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_equal_checked_specs_hash_alike(tmp_path):
    copy = tmp_path / "copy.yaml"
    copy.write_text((ROOT / "specs" / "char-small.yaml").read_text())
    a, b = compiler.load_spec(ROOT / "specs" / "char-small.yaml"), compiler.load_spec(copy)
    other = compiler.load_spec(ROOT / "specs" / "char-small.yaml", ["model.params.rnn_units=64"])
    assert a == b and hash(a) == hash(b) and a == b.spec
    assert a != other and len({a, b, other}) == 2

"""keraspec inside a Keras 3 program: tf-keras is its own package, `tf.keras` stays the user's.

Each case is a fresh interpreter running tests/keras3_program.py, a user's program that
imports Keras 3 and calls keraspec's Python API before or after its own Keras 3 model.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PROGRAM = ROOT / "tests" / "keras3_program.py"


def _run(order: str, work, legacy: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if legacy:  # the user's own choice, which keraspec must keep
        env["TF_USE_LEGACY_KERAS"] = "1"
    done = subprocess.run(
        [sys.executable, str(PROGRAM), order, str(work)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> dict:
    """The program's runs, once per order (the DP test reuses the Keras 3 one)."""
    return {}


def _program(programs: dict, order: str, tmp_path_factory) -> tuple[dict, object]:
    if order not in programs:
        work = tmp_path_factory.mktemp(order)
        programs[order] = (_run(order, work), work)
    return programs[order]


@pytest.mark.parametrize("order", ["keras3-first", "keraspec-first"])
def test_keraspec_trains_exports_and_generates_inside_a_keras3_program(
    order, programs, tmp_path_factory
):
    seen, tmp_path = _program(programs, order, tmp_path_factory)
    # keraspec built, trained, exported and sampled with tf-keras ...
    assert seen["compiled_model_module"].startswith("tf_keras.")
    assert seen["steps"] == 3 and seen["records"] == 2
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").is_file()
    # ... and the user's Keras is Keras 3 afterwards, as tf.keras and as keras.
    assert seen["after_keras_version"].startswith("3.")
    assert seen["after_tf_keras_is_keras"] is True
    assert seen["after_users_model_module"].startswith("keras.src.")
    losses = seen["after_users_loss"]
    assert all(v == v for v in losses) and losses[-1] < losses[0]  # the Keras 3 model trains
    if order == "keras3-first":
        assert seen["before_tf_keras_is_keras"] is True
        assert seen["before_users_loss"][-1] < seen["before_users_loss"][0]
    if order == "keras3-first":
        # keras.layers.TFSMLayer serves keraspec's export as tf.saved_model.load does.
        assert seen["tfsm_layer_matches"] is True
    assert seen["legacy_variable"] is None and seen["legacy_variable_after"] is None


def test_tensorflow_privacy_steps_the_same_under_keras3_and_under_tf_keras(
    programs, tmp_path_factory, tmp_path
):
    if importlib.util.find_spec("tensorflow_privacy") is None:
        pytest.skip("tensorflow-privacy is installed on Python 3.11 only")
    keras3, _ = _program(programs, "keras3-first", tmp_path_factory)
    legacy = _run("dp-only", tmp_path, legacy=True)
    assert keras3["after_tf_keras_is_keras"] is True  # tf.keras was Keras 3 throughout
    assert legacy["after_tf_keras_is_keras"] is False  # the user's TF_USE_LEGACY_KERAS kept
    assert legacy["legacy_variable_after"] == "1"
    assert keras3["dp_weights"] != keras3["dp_weights_before"]  # the step moved the weights
    assert keras3["dp_weights"] == pytest.approx(legacy["dp_weights"], rel=1e-6)


def _string_constants(path) -> list[str]:
    """Every string literal in a module that is not a docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_module_of_keraspec_names_tf_use_legacy_keras_in_code(tmp_path):
    modules = sorted((ROOT / "compiler").rglob("*.py"))
    assert len(modules) > 40
    named = [
        str(p.relative_to(ROOT))
        for p in modules
        if any("TF_USE_LEGACY_KERAS" in s for s in _string_constants(p))
    ]
    assert named == []
    # The scan sees a write in code, and not a docstring that explains the variable.
    writer = tmp_path / "writer.py"
    writer.write_text(
        '"""Never sets TF_USE_LEGACY_KERAS."""\nimport os\n\n'
        'os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")\n'
    )
    assert _string_constants(writer) == ["TF_USE_LEGACY_KERAS", "1"]

"""Run directories without TensorFlow: usability checks, checkpoint pointers, clean-up."""

import json
import os

import pytest

import compiler
from compiler.training.rundir import RunDir
from compiler.training.runfiles import CheckpointState, RunIdentity

from conftest import ROOT


def test_an_interrupted_start_is_not_foreign_but_other_files_are(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.path)
    for name in ("tokenizer.json", "spec.resolved.yaml"):
        (tmp_path / "run" / name).write_text("{}")
    run.check_usable()  # what train writes before run.json is its own
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(compiler.RunError) as e:
        run.check_usable()
    assert e.value.diagnostics[0].code == "run_dir_foreign"
    assert "notes.txt" in e.value.diagnostics[0].message


def test_a_checkpoint_appears_only_when_complete_and_pointers_name_it(tmp_path):
    run = RunDir(str(tmp_path))
    with pytest.raises(RuntimeError):
        with run.new_checkpoint(5, CheckpointState(step=5)) as prefix:
            open(prefix + ".index", "w").write("partial")
            raise RuntimeError("killed while writing")
    assert os.listdir(run.checkpoints) == []  # nothing half-written is left
    with run.new_checkpoint(7, CheckpointState(step=7, epoch=1)) as prefix:
        open(prefix + ".index", "w").write("whole")
    run.point("latest", 7)
    latest = run.pointer("latest")
    assert latest.step == 7 and latest.state.epoch == 1
    assert open(latest.prefix + ".index").read() == "whole"
    assert run.pointer("best") is None


def test_garbage_collection_keeps_what_pointers_name(tmp_path):
    run = RunDir(str(tmp_path))
    for step in (1, 2, 3):
        with run.new_checkpoint(step, CheckpointState(step=step, epoch=0)) as prefix:
            open(prefix + ".index", "w").write(str(step))
    run.point("best", 1)
    run.point("latest", 3)
    os.makedirs(os.path.join(run.checkpoints, ".tmp-left-by-a-kill"))
    run.collect_garbage()
    kept = sorted(n for n in os.listdir(run.checkpoints) if not n.endswith(".json"))
    assert kept == ["step-00000001", "step-00000003"]
    assert json.load(open(os.path.join(run.checkpoints, "best.json")))["step"] == 1


def test_a_pointer_to_a_missing_checkpoint_is_a_clear_error(tmp_path):
    run = RunDir(str(tmp_path))
    os.makedirs(run.checkpoints)
    run.point("latest", 9)
    with pytest.raises(compiler.RunError) as e:
        run.pointer("latest")
    assert e.value.diagnostics[0].code == "checkpoint_missing"


def test_links_out_of_the_run_directory_are_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").symlink_to(outside, target_is_directory=True)
    with pytest.raises(compiler.RunError) as e:
        RunDir(str(run_dir)).check_usable()
    assert e.value.diagnostics[0].code == "run_dir_link"
    assert "checkpoints" in e.value.diagnostics[0].message
    assert list(outside.iterdir()) == []


def test_export_refuses_a_model_directory_that_links_out(tmp_path):
    from compiler.export.savedmodel import export_saved_model

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    base = tmp_path / "models"
    base.mkdir()
    (base / "char-small").symlink_to(outside, target_is_directory=True)
    spec = compiler.load_spec("specs/char-small.yaml")
    with pytest.raises(compiler.ExportError) as e:
        export_saved_model(spec, base, weights=str(tmp_path / "weights.h5"))
    assert e.value.diagnostics[0].code == "base_link"
    assert list(outside.iterdir()) == []


def test_a_damaged_run_file_is_one_error_at_its_line_and_field(tmp_path):
    run = RunDir(str(tmp_path))
    spec = compiler.load_spec(ROOT / "specs" / "lstm-text.yaml")
    identity = RunIdentity(name="x", data="/d", data_sha256="ab", seed=3, spec={})
    run.start(spec.spec, identity, {"tokenizer.json": b"{}"})
    assert run.read_run().seed == 3 and run.read_run().files  # the digests were added
    text = (tmp_path / "run.json").read_text()
    (tmp_path / "run.json").write_text(text.replace('"seed": 3', '"seed": "3"'))
    with pytest.raises(compiler.RunError) as e:
        run.read_run()
    (found,) = e.value.diagnostics
    line = 1 + text[: text.index('"seed"')].count("\n")
    assert (found.file, found.line, found.path) == (str(tmp_path / "run.json"), line, "seed")
    assert 'expected a valid integer, received str "3"' in found.message
    (tmp_path / "run.json").write_text(text[:-5])  # cut short
    with pytest.raises(compiler.RunError) as e:
        run.read_run()
    assert "expected the JSON keraspec wrote" in e.value.diagnostics[0].message

"""Faults: races, corrupted files, full disks, hostile corpora and git revisions.

Every case ends in an ordinary error (exit 1 or 2, never the internal error's 3) that names
the file, and nothing the user had is lost or mixed: the test compares every file of the run
directory or export before and after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from compiler.cli import app
from compiler.export.savedmodel import export_saved_model
from compiler.export.serving import base_lock, update_models_config
from compiler.training import train
from compiler.training.rundir import RunDir

from conftest import ROOT
from training_fixtures import load, write_corpus, write_spec


def _snapshot(directory) -> dict[str, str]:
    """Every file under `directory` (locks aside) and its digest."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name in (".lock", ".keraspec.lock"):
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code != 3 and "internal error" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with a best and a latest checkpoint at different steps, and its export."""
    root = tmp_path_factory.mktemp("faults")
    corpus = write_corpus(root / "corpus.txt")
    spec_path = write_spec(root / "s.yaml", epochs=2, validation_split=0.1)
    train(load(spec_path), corpus, root / "run")
    export_saved_model(root / "run", root / "models")
    return root, corpus, spec_path


@pytest.fixture
def run_copy(trained, tmp_path):
    root, corpus, spec_path = trained
    shutil.copytree(root / "run", tmp_path / "run")
    return tmp_path / "run", corpus, spec_path


# ---------------------------------------------------------------------------- races


def _start_train(spec, corpus, run_dir, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "compiler.cli",
            "train",
            str(spec),
            "--data",
            str(corpus),
            "-o",
            str(run_dir),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_a_second_training_of_one_run_directory_fails_at_once(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", records=4000)
    other = write_corpus(tmp_path / "other.txt", records=4000, seed=1)
    spec = write_spec(tmp_path / "s.yaml", epochs=3, validation_split=0.0)
    run_dir = tmp_path / "run"
    first = _start_train(spec, corpus, run_dir, "--checkpoint-every", "5")
    try:
        _wait_for(run_dir / "checkpoints" / "latest.json")
        # The same corpus, and another one, at once.
        seconds = {data: _start_train(spec, data, run_dir) for data in (corpus, other)}
        for data, second in seconds.items():
            _, err = second.communicate(timeout=120)
            assert second.returncode == 1, err.decode()
            assert b"Traceback" not in err
            if data == corpus:
                assert f"process {first.pid} on".encode() in err and b"is training" in err
            else:
                assert b"different file" in err or b"is training" in err
        # Killed, the first run's lock goes with it: a new process resumes at once.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    identity = json.loads((run_dir / "run.json").read_text())
    assert identity["data_sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    step = RunDir(str(run_dir)).pointer("latest").step
    resumed = train(load(spec), corpus, run_dir, max_steps=step + 1)
    assert resumed.steps == step + 1


def test_the_lock_names_its_holder_and_frees_the_directory_after(tmp_path, trained):
    root, corpus, spec_path = trained
    shutil.copytree(root / "run", tmp_path / "run")
    run = RunDir(str(tmp_path / "run"))
    with run.writer():
        result = _cli("train", spec_path, "--data", corpus, "-o", tmp_path / "run")
        assert result.exit_code == 1 and f"process {os.getpid()}" in result.output
    # Readers are never refused: they hold only the checkpoint they read.
    with run.writer():
        assert (
            _cli(
                "generate", tmp_path / "run", "-n", "2", "--max-new-tokens", "3", "--seed", "0"
            ).exit_code
            == 0
        )


def test_cleanup_leaves_a_checkpoint_that_a_reader_holds(run_copy):
    run_dir, _, _ = run_copy
    run = RunDir(str(run_dir))
    with run.reading("latest") as held:
        directory = held.directory
        os.remove(run_dir / "checkpoints" / "latest.json")
        os.remove(run_dir / "checkpoints" / "best.json")
        run.collect_garbage()
        assert os.path.isdir(directory)  # held: left for the next cleanup
    run.collect_garbage()
    assert not os.path.isdir(directory)


def _register(name):
    with base_lock(_register.base):
        update_models_config(_register.base, name, "/models")


def test_concurrent_exports_all_end_up_in_models_config(tmp_path):
    base = str(tmp_path / "models")
    _register.base = base
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        pool.map(_register, [f"m{i}" for i in range(16)])
    text = (tmp_path / "models" / "models.config").read_text()
    assert all(f'name: "m{i}"' in text for i in range(16))


# ----------------------------------------------------------------------- corruption


RUN_FILE_DAMAGE = {
    "run.json as []": ("run.json", b"[]", "run.json"),
    "run.json garbage": ("run.json", b"\x00\x01garbage", "run.json"),
    "run.json wrong types": (
        "run.json",
        b'{"data_sha256": 1, "seed": "x", "spec": {}}',
        "run.json",
    ),
    "latest.json as []": ("checkpoints/latest.json", b"[]", "latest.json"),
    "best.json garbage": ("checkpoints/best.json", b"{not json", "best.json"),
    "best.json escaping": (
        "checkpoints/best.json",
        b'{"directory": "../../x", "step": 1}',
        "best.json",
    ),
    "tokenizer.json shorter": ("tokenizer.json", None, "tokenizer.json"),
    "validators.json edited": ("validators.json", b'{"source": "field_count"}', "validators.json"),
}


@pytest.mark.parametrize("case", list(RUN_FILE_DAMAGE))
def test_a_damaged_run_file_is_an_error_naming_it_and_nothing_is_removed(run_copy, case):
    run_dir, corpus, spec_path = run_copy
    name, content, named = RUN_FILE_DAMAGE[case]
    path = run_dir / name
    if content is None:  # a plausible edit: the vocabulary one character shorter
        config = json.loads(path.read_text())
        config["vocab"] = config["vocab"][:-1]
        content = json.dumps(config).encode()
    path.write_bytes(content)
    before = _snapshot(run_dir)
    which = "latest" if "latest" in name else "best"  # readers read the pointer they ask for
    for args in (
        ["train", spec_path, "--data", corpus, "-o", run_dir, "--max-steps", "999"],
        ["export", run_dir, "-o", run_dir.parent / "models", "--checkpoint", which],
        ["generate", run_dir, "-n", "1", "--max-new-tokens", "2", "--checkpoint", which],
    ):
        result = _cli(*args)
        assert result.exit_code == 1, (args[0], result.output)
        assert named in result.output, (args[0], result.output)
    assert _snapshot(run_dir) == before  # nothing removed, nothing rewritten
    assert not (run_dir.parent / "models").exists()


def _latest_directory(run_dir):
    pointer = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    return run_dir / "checkpoints" / pointer["directory"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "state types"])
def test_a_damaged_checkpoint_is_an_error_naming_it_and_the_way_on(run_copy, damage):
    run_dir, corpus, spec_path = run_copy
    directory = _latest_directory(run_dir)
    if damage == "state types":
        state = json.loads((directory / "state.json").read_text())
        state["history"], state["stopped_early"] = "lots", 3
        (directory / "state.json").write_text(json.dumps(state))
        named = "state.json"
    else:
        data = next(p for p in directory.iterdir() if p.name.startswith("ckpt.data"))
        raw = data.read_bytes()
        data.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"\x00" * len(raw))
        named = data.name
    before = _snapshot(run_dir)
    result = _cli("train", spec_path, "--data", corpus, "-o", run_dir, "--max-steps", "999")
    assert result.exit_code == 1 and named in result.output and "aside" in result.output
    assert _snapshot(run_dir) == before
    reader = _cli("generate", run_dir, "-n", "1", "--checkpoint", "latest")
    assert reader.exit_code == 1 and named in reader.output
    if damage == "state types":  # located: the file, its line and the field
        assert "state.json:1:" in reader.output and "history: expected" in reader.output
    # Moving the damaged pointer aside, as the message says, goes on from the other one.
    if (
        json.loads((run_dir / "checkpoints" / "best.json").read_text())["directory"]
        != directory.name
    ):
        os.rename(run_dir / "checkpoints" / "latest.json", run_dir / "latest.json.bad")
        assert _cli("generate", run_dir, "-n", "1", "--max-new-tokens", "2").exit_code == 0


EXPORT_DAMAGE = ["variables truncated", "tokenizer edited", "saved_model.pb missing"]


@pytest.mark.parametrize("damage", EXPORT_DAMAGE)
def test_a_damaged_export_is_an_error_naming_the_file(trained, tmp_path, damage):
    root, _, _ = trained
    version = tmp_path / "tiny" / "1"
    shutil.copytree(root / "models" / "tiny" / "1", version)
    if damage == "variables truncated":
        target = next((version / "variables").glob("variables.data-*"))
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "tokenizer edited":
        target = version / "assets" / "tokenizer.json"
        target.write_text(target.read_text().replace('"a"', '"b"', 1))
    else:
        target = version / "saved_model.pb"
        target.unlink()
    for command in (["inspect", version], ["generate", version, "-n", "1"]):
        result = _cli(*command)
        if damage == "saved_model.pb missing":  # no longer an export at all
            assert result.exit_code == 1 and "saved_model.pb" in result.output
        else:
            assert result.exit_code == 1 and target.name in result.output, result.output


def test_an_unparseable_models_config_publishes_nothing(trained, tmp_path):
    root, _, _ = trained
    base = tmp_path / "models"
    base.mkdir()
    (base / "models.config").write_text("model_config_list { this is not a proto")
    result = _cli("export", root / "run", "-o", base)
    assert result.exit_code == 1 and "models.config" in result.output
    assert sorted(os.listdir(base)) == ["models.config"]  # no version published
    again = _cli("export", root / "run", "-o", base)
    assert again.exit_code == 1 and sorted(os.listdir(base)) == ["models.config"]


# ------------------------------------------------------------------------ full disk


@contextlib.contextmanager
def _small_disk(path, size):
    os.makedirs(path)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_full_disk_while_training_is_an_error_and_the_run_resumes_with_room(trained, tmp_path):
    root, corpus, spec_path = trained
    with _small_disk(tmp_path / "disk", "160k") as disk:
        run_dir = disk / "run"
        spec = write_spec(tmp_path / "long.yaml", epochs=500, validation_split=0.0)
        result = _cli("train", spec, "--data", corpus, "-o", run_dir, "--checkpoint-every", "1")
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.output and str(run_dir) in result.output
        assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # nothing half-written
        saved = RunDir(str(run_dir)).pointer("latest")
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = _cli(
            "train",
            spec,
            "--data",
            corpus,
            "-o",
            run_dir,
            "--max-steps",
            str(saved.step + 2),
            "--format",
            "json",
        )
        assert resumed.exit_code == 0, resumed.output
        assert json.loads(resumed.stdout)["steps"] == saved.step + 2


def test_a_full_disk_while_exporting_publishes_nothing(trained, tmp_path):
    root, _, _ = trained
    with _small_disk(tmp_path / "disk", "64k") as disk:
        base = disk / "models"
        result = _cli("export", root / "run", "-o", base)
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.output
        left = [p for p in base.rglob("*") if p.is_file() and p.name != ".keraspec.lock"]
        assert left == [] and not list(base.rglob("saved_model.pb"))


# -------------------------------------------------------------------------- corpora


def _train_on(tmp_path, data, trained):
    _, _, spec_path = trained
    return _cli("train", spec_path, "--data", data, "-o", tmp_path / "run")


HOSTILE = {
    "a record over the limit": (
        lambda p: p.write_text("a,b\n" * 10 + "x" * 1_000_001 + "\n"),
        "1,000,000 characters",
        ":11",
    ),
    "a bare carriage return": (
        lambda p: p.write_bytes(b"a,b\nc\rd,e\n"),
        "carriage return",
        ":2:2",
    ),
    "a NUL after 8 KiB": (lambda p: p.write_bytes(b"a,b\n" * 4000 + b"x\x00y\n"), "NUL", ":4001"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_corpora_get_located_errors(tmp_path, trained, case):
    write, expected, where = HOSTILE[case]
    data = tmp_path / "data.csv"
    write(data)
    result = _train_on(tmp_path, data, trained)
    assert result.exit_code == 1 and expected in result.output, result.output
    assert f"{data}{where}" in result.output
    assert not (tmp_path / "run").exists()


def test_a_long_field_is_an_ordinary_record(tmp_path, trained):
    data = tmp_path / "data.csv"
    data.write_text(("a,b," + "y" * 200_000 + "\n") * 20)
    from compiler.data.corpus import read_corpus, record_shape

    assert record_shape(read_corpus(data).records) == {"delimiter": ",", "fields": 3}


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_files_that_are_not_regular_are_refused_unopened(tmp_path, trained, kind):
    if kind == "fifo":
        data = tmp_path / "pipe"
        os.mkfifo(data)  # opening it would block forever
        expected = "a named pipe"
    else:
        data, expected = "/dev/zero", "a device"
    result = _train_on(tmp_path, data, trained)
    assert result.exit_code == 1 and expected in result.output


# ------------------------------------------------------------------------ git, CLI


def test_diff_passes_no_option_to_git(tmp_path):
    target = tmp_path / "written"
    result = _cli("diff", "--", f"--output={target}:specs/char-small.yaml", "specs/char-small.yaml")
    assert result.exit_code == 2 and "expected a git revision" in result.output
    assert not target.exists()
    unknown = _cli("diff", "no-such-branch:specs/char-small.yaml", "specs/char-small.yaml")
    assert unknown.exit_code == 2 and "git does not know" in unknown.output


@pytest.mark.parametrize(
    "args, option",
    [
        (["generate", "x", "--max-new-tokens", "4294967301"], "--max-new-tokens"),
        (["generate", "x", "--count", "100000000"], "--count"),
        (["train", "s.yaml", "--data", "d", "-o", "r", "--max-steps", str(2**31)], "--max-steps"),
        (["privacy", "s.yaml", "--examples", str(10**13)], "--examples"),
        (["export", "r", "-o", "m", "--version", str(2**31)], "--version"),
    ],
)
def test_integer_options_have_ranges(args, option):
    result = _cli(*args)
    assert result.exit_code == 2 and option in result.output

import fcntl
import importlib.util
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def assert_valid_report(path):
    """RUN_DIR/report.json validates against the published schema/report.schema.json."""
    import json

    import jsonschema

    schema = json.loads((ROOT / "schema" / "report.schema.json").read_text())
    report = json.loads(pathlib.Path(path).read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(report)]
    assert errors == []


SPECS = ROOT / "specs"
# tensorflow-privacy 0.9.0 installs on Python 3.11 only: DP's standard and vectorized
# implementations, and the tests that compare against them, need it.
TF_PRIVACY = importlib.util.find_spec("tensorflow_privacy") is not None
needs_tf_privacy = pytest.mark.skipif(
    not TF_PRIVACY, reason="tensorflow-privacy is installed on Python 3.11 only"
)
CASES = ROOT / "tests" / "cases"


# Files that train models or start TensorFlow processes, heaviest first (measured work on 2
# cores: test_export 103 s, test_train 123 s, test_compile 97 s, test_distribution 84 s,
# ...). They are marked `slow` (`pytest -m "not slow"` runs the rest in about a minute) and
# run first: xdist's --dist loadfile hands files to the workers in collection order, so the
# longest start first and the two workers finish together instead of one waiting on the
# last file. test_compile comes second: it needs no fruit run, so the second worker starts
# working while the first trains it.
SLOW_FILES = [
    "test_export.py",
    "test_compile.py",
    "test_train.py",
    "test_distribution.py",
    "test_audit_white_box.py",
    "test_keras3.py",
    "test_faults.py",
    "test_audit.py",
    "test_import.py",
    "test_fast_dp.py",
    "test_registry.py",
    "test_evaluate.py",
    "test_transformer.py",
    "test_sampling.py",
    "test_privacy.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    for item in items:
        if item.path.name in rank:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def spec_files() -> list[pathlib.Path]:
    return sorted(p for p in SPECS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    # Diagnostics name files relative to where keraspec runs: run from the repo root.
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def fruit_run(tmp_path_factory, worker_id):
    """A tiny char model trained to convergence on the fruit corpus (16 epochs), for the
    tests that only read a trained run. It is trained once per session, by the first worker
    that asks (the other waits on a lock); each user copies it (`copy_fruit_run`).

    Returns the directory holding corpus.txt, s.yaml and run/.
    """
    from compiler.training import train

    from training_fixtures import load, write_corpus, write_spec

    base = tmp_path_factory.getbasetemp()
    shared = (base if worker_id == "master" else base.parent) / "fruit-run"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            corpus = write_corpus(shared / "corpus.txt")
            spec = write_spec(shared / "s.yaml", epochs=16, dropout=0.0, learning_rate=0.03)
            train(load(spec), corpus, shared / "run")
            (shared / "done").touch()
    return shared


def copy_fruit_run(shared: pathlib.Path, root: pathlib.Path, run: str = "run") -> None:
    """The shared fruit run's corpus, spec and run directory (as `run`), copied into root."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("corpus.txt", "s.yaml"):
        shutil.copy(shared / name, root / name)
    shutil.copytree(shared / "run", root / run)

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
CASES = ROOT / "tests" / "cases"


# Files that train models or start TensorFlow processes, heaviest first (measured work on 2
# cores: test_train 190 s, test_export 110 s, test_distribution 93 s, ...). They are marked
# `slow` (`pytest -m "not slow"` runs the rest in about a minute) and run first: xdist's
# --dist loadfile hands files to the workers in collection order, so the longest start
# first and the two workers finish together instead of one waiting on the last file.
SLOW_FILES = [
    "test_train.py",
    "test_export.py",
    "test_distribution.py",
    "test_compile.py",
    "test_faults.py",
    "test_evaluate.py",
    "test_fast_dp.py",
    "test_audit.py",
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

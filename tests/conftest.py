import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
CASES = ROOT / "tests" / "cases"


def spec_files() -> list[pathlib.Path]:
    return sorted(p for p in SPECS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    # Diagnostics name files relative to where keraspec runs: run from the repo root.
    monkeypatch.chdir(ROOT)

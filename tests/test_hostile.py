"""Hostile spec files: each gives its diagnostic, exit 1, in bounded time and memory."""

import json
import os
import resource
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import compiler
from compiler.cli import app

from conftest import ROOT

HEADER = "apiVersion: keraspec/v1\nname: hostile\n"


def _alias_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join(["*" + prev] * 9) + "]")
    return HEADER + "\n".join(lines) + "\n"


def _huge_units() -> str:
    return HEADER + (
        "input: {vocab_size: 10}\nmodel:\n  layers:\n"
        "    - {type: embedding, output_dim: 4}\n"
        "    - {type: lstm, units: 1000000000000000000000000000000, return_sequences: true}\n"
        "    - {type: dense, units: 10}\n"
    )


# name: (content, expected code, expected line)
CASES = {
    "alias_bomb": (_alias_bomb, "too_many_values", None),
    "many_aliases": (
        lambda: HEADER + "a: &a 1\nb: [" + ", ".join(["*a"] * 500) + "]\n",
        "too_many_aliases",
        4,
    ),
    "deep_flow": (lambda: HEADER + "model: " + "[" * 5000 + "]" * 5000 + "\n", "too_deep", 3),
    "deep_block": (
        lambda: HEADER + "".join("  " * i + f"k{i}:\n" for i in range(200)),
        "too_deep",
        None,
    ),
    "python_tag": (
        lambda: HEADER.replace(
            "name: hostile", "name: !!python/object/apply:" "os.system ['echo pwned']"
        ),
        "tag",
        2,
    ),
    "custom_tag": (lambda: HEADER + "input: !Ref other\n", "tag", 3),
    "comments_20mb": (
        lambda: HEADER
        + (
            "# padding padding padding padding padding padding padding padding padding pad\n"
            * 260_000
        ),
        "too_large",
        1,
    ),
    "huge_units": (_huge_units, "out_of_range", 7),
    "memory_budget": (
        lambda: HEADER
        + (
            "input: {vocab_size: 2000000, batch_size: 4096, sequence_length: 4096}\n"
            "model:\n  layers:\n    - {type: embedding, output_dim: 1024}\n"
            "    - {type: dense, units: 2000000}\n"
        ),
        "memory_budget",
        5,
    ),
}


def _limits():
    # 1 GiB of address space and 20 s of CPU: loading must stay far below both.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_spec_is_an_ordinary_diagnostic(tmp_path, name):
    make, code, line = CASES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(make())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "validate", "--format", "json", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=_limits,
        env={**os.environ, "KERASPEC_MEMORY_LIMIT": "8GiB"},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time, not wall time: another process on the machine cannot make it fail.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    (entry,) = json.loads(run.stdout)["files"]
    codes = {d["code"]: d for d in entry["diagnostics"]}
    assert code in codes, entry["diagnostics"]
    if line is not None:
        assert codes[code]["line"] == line
    assert codes[code]["file"] == str(path)
    assert cpu < 10, f"took {cpu:.1f} s of CPU"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("!!python/name:os.system", "tagged !!python/name:os.system"),
        ("&a [*a]", "YAML aliases"),
        ("[" * 100 + "]" * 100, "nested at most 64 deep"),
    ],
)
def test_hostile_set_values_are_refused_at_the_argument(value, fragment):
    result = CliRunner().invoke(
        app, ["validate", "specs/char-small.yaml", "--set", f"model.params.rnn_units={value}"]
    )
    assert result.exit_code == 1
    assert "--set:1:" in result.output and fragment in result.output
    assert "Traceback" not in result.output


def test_memory_limit_option_sets_the_budget(monkeypatch):
    # The option sets the variable for the process: monkeypatch restores it afterwards.
    monkeypatch.setenv("KERASPEC_MEMORY_LIMIT", "64GiB")
    ok = CliRunner().invoke(app, ["validate", "specs/lstm-text.yaml"])
    assert ok.exit_code == 0
    tight = CliRunner().invoke(app, ["--memory-limit", "1GiB", "validate", "specs/lstm-text.yaml"])
    assert tight.exit_code == 1
    assert "memory limit of 1 GiB, received an estimated 1.25 GiB" in tight.output
    bad = CliRunner().invoke(app, ["--memory-limit", "lots", "validate", "specs/"])
    assert bad.exit_code == 2


def test_spec_size_limit_is_an_argument_the_cli_takes_as_an_option_or_variable(
    tmp_path, monkeypatch
):
    spec = ROOT / "specs" / "char-small.yaml"
    size = spec.stat().st_size
    with pytest.raises(compiler.SpecError) as e:
        compiler.load_spec(spec, max_bytes=size - 1)
    assert [d.code for d in e.value.diagnostics] == ["too_large"]
    assert f"at most {size - 1:,} bytes, received {size:,}" in e.value.diagnostics[0].message
    assert compiler.load_spec(spec, max_bytes=size).name == "char-small"
    # A --set value is held to the same limit.
    with pytest.raises(compiler.SpecError) as e:
        compiler.load_spec(spec, ["name=" + "x" * (size + 1)], max_bytes=size)
    assert "expected at most" in e.value.diagnostics[0].message
    small = CliRunner().invoke(app, ["--max-spec-bytes", "100", "validate", str(spec)])
    assert small.exit_code == 1 and "at most 100 bytes" in small.output
    monkeypatch.setenv("KERASPEC_MAX_SPEC_BYTES", "200")
    from_env = CliRunner().invoke(app, ["validate", str(spec)])
    assert from_env.exit_code == 1 and "at most 200 bytes" in from_env.output
    monkeypatch.setenv("KERASPEC_MAX_SPEC_BYTES", "4MiB")
    assert CliRunner().invoke(app, ["validate", str(spec)]).exit_code == 0
    # The library reads no variable: its default stays 1 MiB whatever the environment says.
    monkeypatch.setenv("KERASPEC_MAX_SPEC_BYTES", "100")
    assert compiler.load_spec(spec).name == "char-small"


def test_a_thousand_and_one_layers_is_over_the_bound(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(
        HEADER
        + "input: {vocab_size: 4}\nmodel:\n  layers:\n"
        + ("    - {type: dropout, rate: 0.1}\n" * 1001)
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}:6:5: error: model.layers: expected at most 1000 item(s), received 1001" in (
        result.output
    )

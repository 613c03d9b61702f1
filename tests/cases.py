"""Golden cases: each file under tests/cases holds a spec and the diagnostics it must give.

Header comments (or a `NAME.expect` sidecar for JSON, which has no comments):
    # expect: SEVERITY LINE:COL PATH CODE     (PATH "-" for the document itself)
    # schema: accept | reject | skip           (what the published JSON Schema must say)
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

from conftest import CASES

_EXPECT = re.compile(rb"^# expect: (error|warning) (\d+):(\d+) (\S+) (\S+)\s*$")
_SCHEMA = re.compile(rb"^# schema: (accept|reject|skip)\s*$")


@dataclasses.dataclass(frozen=True)
class Case:
    path: pathlib.Path
    expected: frozenset[tuple[str, int, int, str, str]]
    schema: str

    @property
    def id(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def load_case(path: pathlib.Path) -> Case:
    sidecar = path.with_name(path.name + ".expect")
    header = (sidecar if sidecar.exists() else path).read_bytes().splitlines()
    expected = set()
    schema = "skip"
    for line in header:
        if m := _EXPECT.match(line):
            sev, ln, col, p, code = (g.decode() for g in m.groups())
            expected.add((sev, int(ln), int(col), "" if p == "-" else p, code))
        elif m := _SCHEMA.match(line):
            schema = m.group(1).decode()
    return Case(path, frozenset(expected), schema)


def cases(folder: str) -> list[Case]:
    return [
        load_case(p) for p in sorted((CASES / folder).iterdir()) if p.suffix in (".yaml", ".json")
    ]

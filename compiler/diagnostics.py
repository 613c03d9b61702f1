"""Diagnostics and the error hierarchy.

Every problem keraspec finds is a `Diagnostic` that points at a file, a line, a column and a
dotted field path. Library functions raise a `KeraspecError` subclass carrying them; the CLI
renders them and picks the exit code. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Literal

Severity = Literal["error", "warning"]


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec.

    Attributes:
        severity: "error" fails validation; "warning" fails it only under `--strict`.
        code: A stable, machine-readable name for the rule (e.g. "unknown_key").
        message: What was expected and what was received.
        path: The dotted field path inside the spec, e.g. "model.layers[3].units";
            empty for the document itself.
        file: The source the spec came from (a path, "<string>" or "<--set>").
        line: 1-based line, or None when the position is unknown.
        column: 1-based column, or None when the position is unknown.
    """

    severity: Severity
    code: str
    message: str
    path: str = ""
    file: str = "<string>"
    line: int | None = None
    column: int | None = None

    def format(self) -> str:
        """Render as `FILE:LINE:COL: severity: path: message` (compiler style)."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {self.severity}: {field}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def errors_of(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "error"]


def warnings_of(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity == "warning"]


class KeraspecError(Exception):
    """Base class of every error keraspec raises on purpose.

    Attributes:
        diagnostics: The structured problems; the message is their formatted lines.
    """

    exit_code = 1

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class SpecError(KeraspecError):
    """The spec is malformed, violates the schema or a semantic rule."""


class CompileError(KeraspecError):
    """The spec is valid but TensorFlow refused to build or compile it."""


class ExportError(KeraspecError):
    """Writing an artifact failed."""


class DataError(KeraspecError):
    """The training data cannot be used: unreadable, not text, or too small for the spec."""


class RunError(KeraspecError):
    """A run directory cannot be used: not writable, or it holds a different run."""

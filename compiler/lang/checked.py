"""A checked spec: what `load_spec` returns, and what every later stage takes.

A spec is checked once per command. The result carries the resolved spec, the analysis of
its graph, where it was written and the checks' warnings, so compiling, training, export,
`diff`, the tokenizer and privacy accounting read what they need from it and never check
again; errors they find later (TensorFlow's, the corpus's) still point at a file, line and
field. A `Spec` built in Python is checked when a stage first receives it (`checked`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Union

from compiler.diagnostics import Diagnostic, SpecError, errors_of, warnings_of
from compiler.lang.checks import Analysis, analyse, check
from compiler.lang.source import Path, Source
from compiler.lang.spec import Spec


@dataclasses.dataclass(frozen=True, eq=False)
class CheckedSpec:
    """A spec that passed every check.

    Attributes:
        spec: The resolved spec (template expanded, defaults filled).
        analysis: Its graph's static analysis: layer order, shapes, parameter counts.
        source: Where it was written (positionless for a spec built in Python).
        warnings: The warnings the checks gave.
    """

    spec: Spec
    analysis: Analysis
    source: Source
    warnings: tuple[Diagnostic, ...] = ()

    # The resolved spec's sections, read-only.
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> Optional[str]:
        return self.spec.description

    @property
    def input(self) -> Any:
        return self.spec.input

    @property
    def model(self) -> Any:
        return self.spec.model

    @property
    def training(self) -> Any:
        return self.spec.training

    @property
    def export(self) -> Any:
        return self.spec.export

    @property
    def data(self) -> Any:
        return self.spec.data

    def __eq__(self, other: object) -> bool:
        # Equal when the specs are, wherever they were written (a `Spec` compares with the
        # checked form of itself).
        if isinstance(other, CheckedSpec):
            return self.spec == other.spec
        if isinstance(other, Spec):
            return self.spec == other
        return NotImplemented

    def __hash__(self) -> int:
        # Equal checked specs hash alike (a `Spec` itself is unhashable: its layers are a list).
        return hash(self._canonical)

    @functools.cached_property
    def _canonical(self) -> str:
        return self.spec.model_dump_json()

    def diagnostic(
        self, path: Path, code: str, message: str, severity: str = "error"
    ) -> Diagnostic:
        """A diagnostic at `path` of the spec, located in its file."""
        return self.source.diagnostic(path, code, message, severity=severity)

    def error(self, path: Path, code: str, message: str) -> SpecError:
        return SpecError([self.diagnostic(path, code, message)])

    def variant(self, spec: Spec) -> "CheckedSpec":
        """A variant of this spec (another batch, stateful setting, epochs, ...), with its
        own graph analysis and this spec's source; the rules are not checked again."""
        resolved, analysis, diagnostics = analyse(spec, self.source)
        if analysis is None:  # a variant of a valid graph is one: a bug if not
            raise SpecError(errors_of(diagnostics))
        return CheckedSpec(resolved, analysis, self.source, self.warnings)


def positionless(spec: Spec) -> Source:
    """A source for a spec built in Python: diagnostics name its fields, not lines."""
    return Source("<spec>", spec.model_dump(mode="json", exclude_none=True))


def checked(
    spec: Union[Spec, CheckedSpec],
    *,
    memory_limit: Optional[int] = None,
    source: Optional[Source] = None,
) -> CheckedSpec:
    """`spec` checked: as it is when it already was, else checked now.

    Args:
        spec: A checked spec, or a `Spec` built in Python.
        memory_limit: Bytes training may plan to use (None: no budget rule).
        source: Where `spec` was written, when it was.

    Raises:
        SpecError: carrying every diagnostic, when a rule fails.
    """
    if isinstance(spec, CheckedSpec):
        return spec
    source = source or positionless(spec)
    resolved, analysis, diagnostics = check(spec, source, memory_limit=memory_limit)
    if errors_of(diagnostics) or analysis is None:
        raise SpecError(diagnostics)
    return CheckedSpec(resolved, analysis, source, tuple(warnings_of(diagnostics)))


def spec_of(spec: Union[Spec, CheckedSpec]) -> Spec:
    """The resolved (or as given) `Spec` of either form."""
    return spec.spec if isinstance(spec, CheckedSpec) else spec


def derived(original: Union[Spec, CheckedSpec], spec: Spec) -> Union[Spec, CheckedSpec]:
    """`spec`, a variant of `original`, in the same form: checked when `original` was."""
    return original.variant(spec) if isinstance(original, CheckedSpec) else spec

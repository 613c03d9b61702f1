"""Parsing: raw data to a checked, resolved spec, with every problem as a `Diagnostic`.

The pipeline is load (compiler.lang.source) -> apply `--set` overrides -> validate the
document's structure (compiler.lang.spec) -> expand a template (compiler.lang.templates) ->
semantic checks (compiler.lang.checks). Errors of one stage are all reported at once; a later
stage runs only when the earlier ones passed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any, Optional, Sequence, Union

from compiler.diagnostics import Diagnostic, SpecError, errors_of, warnings_of
from compiler.lang.checked import CheckedSpec
from compiler.lang.checks import Analysis, check
from compiler.lang.source import (
    MAX_SPEC_BYTES,
    Location,
    Path,
    Source,
    format_path,
    load_file,
    load_text,
    prescan,
)
from compiler.lang.spec import DOCUMENT, Spec, SpecDocument, TemplateDocument
from compiler.lang.templates import TEMPLATES, merge

OVERRIDE_FILE = "--set"


@dataclasses.dataclass
class Validation:
    """The outcome of validating one document.

    Attributes:
        source: The loaded document, or None when it could not be read or parsed.
        spec: The resolved spec, or None when structure errors stopped the pipeline.
        analysis: The static graph analysis, or None when the graph is broken.
        diagnostics: Every error and warning found.
    """

    name: str
    source: Optional[Source]
    spec: Optional[Spec]
    analysis: Optional[Analysis]
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return not errors_of(self.diagnostics)

    @property
    def checked(self) -> Optional[CheckedSpec]:
        """The checked spec, or None when an error was found."""
        if not self.ok or self.spec is None or self.analysis is None or self.source is None:
            return None
        return CheckedSpec(
            self.spec, self.analysis, self.source, tuple(warnings_of(self.diagnostics))
        )


# ------------------------------------------------------------------------------ overrides


def _parse_dotted(text: str) -> Optional[Path]:
    parts: list[Union[str, int]] = []
    for chunk in text.split("."):
        name, _, rest = chunk.partition("[")
        if name:
            parts.append(int(name) if name.isdigit() and parts else name)
        elif not rest:
            return None
        while rest:
            index, sep, rest = rest.partition("]")
            if not sep or not index.isdigit() or (rest and not rest.startswith("[")):
                return None
            parts.append(int(index))
            rest = rest[1:]
    return tuple(parts) if parts else None


def apply_overrides(
    source: Source, overrides: Sequence[str], *, max_bytes: int = MAX_SPEC_BYTES
) -> list[Diagnostic]:
    """Apply `dotted.path=value` assignments to `source.data` in place.

    Values are read as YAML scalars or flow collections (`64`, `0.2`, `true`, `null`,
    `[a, b]`, `{type: adam}`). A mapping key that does not exist yet is created, so a
    misspelt one is then reported by the schema as an unknown key.

    Returns:
        Diagnostics for malformed assignments; each points at the `--set` argument.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    problems = []
    for n, text in enumerate(overrides, start=1):
        dotted, eq, raw_value = text.partition("=")
        at = Location(OVERRIDE_FILE, n, len(dotted) + 2)

        def fail(message: str, column: int = 1, path: str = dotted.strip(), line: int = n) -> None:
            problems.append(
                Diagnostic("error", "bad_override", message, path, OVERRIDE_FILE, line, column)
            )

        path = _parse_dotted(dotted.strip()) if eq else None
        if path is None:
            fail(f"expected dotted.path=value (e.g. model.params.rnn_units=64), received {text!r}")
            continue
        try:
            # The same limits as files, and no aliases: a value has no use for them.
            prescan(raw_value, OVERRIDE_FILE, max_aliases=0)
            if len(raw_value) > max_bytes:
                raise SpecError(
                    [
                        Diagnostic(
                            "error", "too_large", f"expected at most " f"{max_bytes:,} characters"
                        )
                    ]
                )
        except SpecError as e:
            fail(
                f"expected a plain YAML value after '=', received one that is not: "
                f"{e.diagnostics[0].message}",
                at.column,
            )
            continue
        try:
            value = YAML(typ="safe", pure=True).load(raw_value) if raw_value.strip() else None
        except YAMLError as e:
            fail(f"expected a YAML value after '=', received {raw_value!r} ({e})", at.column)
            continue
        node: Any = source.data
        for depth, part in enumerate(path[:-1]):
            child = _child(node, part)
            if child is _MISSING and isinstance(node, dict) and isinstance(part, str):
                node[part] = child = {}
            if child is _MISSING or not isinstance(child, (dict, list)):
                where = format_path(path[: depth + 1])
                fail(f"expected {where} to be a mapping or list, received {_describe(child)}")
                break
            node = child
        else:
            last = path[-1]
            if isinstance(node, dict) and isinstance(last, str):
                node[last] = value
            elif isinstance(node, list) and isinstance(last, int) and last < len(node):
                node[last] = value
            else:
                fail(
                    f"expected an existing index or key under {format_path(path[:-1])}, "
                    f"received {last!r} ({_describe(node)})"
                )
                continue
            _forget_positions(source, path)
            source.values[path] = at
            source.keys[path] = Location(OVERRIDE_FILE, n, 1)
    return problems


_MISSING = object()


def _child(node: Any, part: Union[str, int]) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part, _MISSING)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return _MISSING


def _forget_positions(source: Source, path: Path) -> None:
    for table in (source.keys, source.values):
        for p in [p for p in table if p[: len(path)] == path]:
            del table[p]


# ------------------------------------------------------------------- pydantic errors


def _describe(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return repr(value)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _tag_of(member: Any) -> Optional[str]:
    from pydantic import Tag

    if typing.get_origin(member) is typing.Annotated:
        for meta in typing.get_args(member)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    return None


def _walk_type(tp: Any, loc: Sequence[Union[str, int]]) -> Any:
    """Follow a pydantic error location through the type annotations."""
    from pydantic import BaseModel

    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
            continue
        if origin is list:
            tp = typing.get_args(tp)[0]
            continue
        if origin is Union:
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            if len(members) == 1:
                tp = _walk_type(members[0], [part])
                continue
            chosen = None
            for m in members:
                if _tag_of(m) == part:
                    chosen = m
                    break
                inner = _unwrap(m)
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    for f in inner.model_fields.values():
                        if typing.get_origin(
                            f.annotation
                        ) is typing.Literal and part in typing.get_args(f.annotation):
                            chosen = m
                if chosen is not None:
                    break
            if chosen is None:
                return None
            tp = chosen
            continue
        return None
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Union:
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:
            tp = _unwrap(members[0])
    return tp


def _data_path(data: Any, loc: Sequence[Union[str, int]], missing: bool) -> Path:
    """Map a pydantic location (which includes union tags) to a path into the data."""
    path: list[Union[str, int]] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(part, str):
            if part in node:
                path.append(part)
                node = node[part]
            elif last and missing:
                path.append(part)
            # otherwise: a union tag, which names no key
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
        elif not isinstance(node, (dict, list)):
            break
    return tuple(path)


def _message(error: dict[str, Any], loc: tuple, tp_root: Any) -> tuple[str, str]:
    """A (code, message) pair saying what was expected and what was received."""
    from pydantic import BaseModel

    kind = error["type"]
    ctx = error.get("ctx", {})
    received = _describe(error.get("input", _MISSING))
    if kind == "missing":
        return "missing", f"expected field {loc[-1]!r} (required), received nothing"
    if kind == "extra_forbidden":
        parent = _walk_type(tp_root, loc[:-1])
        allowed = (
            list(parent.model_fields)
            if isinstance(parent, type) and issubclass(parent, BaseModel)
            else []
        )
        hint = _suggest(str(loc[-1]), allowed)
        expected = f"expected one of: {', '.join(allowed)}; " if allowed else ""
        return "unknown_key", f"{expected}received unknown key {loc[-1]!r}{hint}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "type")).strip("'")
        expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        expected = [t for t in expected if t]
        if kind == "union_tag_not_found":
            return "missing", (
                f"expected field {field!r} (one of: {', '.join(expected)}), received nothing"
            )
        tag = str(ctx.get("tag", ""))
        return "unknown_type", (
            f"expected {field} to be one of: {', '.join(expected)}, received {tag!r}"
            + _suggest(tag, expected)
        )
    if kind == "literal_error":
        expected_text = str(ctx.get("expected", ""))
        choices = [c.strip().strip("'") for c in expected_text.replace(" or ", ",").split(",")]
        value = error.get("input")
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        return (
            "invalid_choice",
            f"expected one of: {', '.join(c for c in choices if c)}, received {received}{hint}",
        )
    is_int = _walk_type(tp_root, loc) is int
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        limit = ctx.get(key)
        if kind == "greater_than" and limit == 0 and is_int:
            return "out_of_range", f"expected a positive integer, received {received}"
        noun = "an integer" if is_int else "a number"
        return "out_of_range", f"expected {noun} {words} {limit}, received {received}"
    simple = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "dict_type": "a mapping",
        "model_type": "a mapping",
        "model_attributes_type": "a mapping",
    }
    if kind in simple:
        return "wrong_type", f"expected {simple[kind]}, received {received}"
    if kind == "string_pattern_mismatch":
        return "invalid_name", (
            f"expected a name matching {ctx.get('pattern')} (letters, digits, _), "
            f"received {received}"
        )
    if kind == "too_short":
        return "too_short", (
            f"expected at least {ctx.get('min_length')} item(s), "
            f"received {ctx.get('actual_length')}"
        )
    if kind == "too_long":
        if isinstance(error.get("input"), list):
            return "too_long", (
                f"expected at most {ctx.get('max_length')} item(s), received "
                f"{ctx.get('actual_length', len(error['input']))}"
            )
        return (
            "too_long",
            f"expected at most {ctx.get('max_length')} characters, received {received}",
        )
    return kind, f"{error['msg']}, received {received}"


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?"


def _structure_diagnostics(exc: Any, source: Source, root: type) -> list[Diagnostic]:
    out = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        missing = error["type"] in ("missing",)
        path = _data_path(source.data, loc, missing)
        if error["type"] in ("union_tag_invalid",):
            path = path + (str(error.get("ctx", {}).get("discriminator", "type")).strip("'"),)
        code, message = _message(error, loc, root)
        out.append(source.diagnostic(path, code, message, key=error["type"] == "extra_forbidden"))
    # One error per place: a bad value can fail several constraints of one field.
    unique = {(d.path, d.code): d for d in out}
    return sorted(unique.values(), key=lambda d: (d.line or 0, d.column or 0))


# ------------------------------------------------------------------------------ pipeline


def validate_source(
    source: Source,
    overrides: Sequence[str] = (),
    *,
    memory_limit: Optional[int] = None,
    max_bytes: int = MAX_SPEC_BYTES,
) -> Validation:
    """Run the pipeline on a loaded document. Never raises for bad input."""
    from pydantic import ValidationError

    problems = apply_overrides(source, overrides, max_bytes=max_bytes)
    if problems:
        return Validation(source.name, source, None, None, problems)
    try:
        document = DOCUMENT.validate_python(source.data)
    except ValidationError as e:
        return Validation(
            source.name, source, None, None, _structure_diagnostics(e, source, SpecDocument)
        )
    if isinstance(document, TemplateDocument):
        template = TEMPLATES[document.model.template]
        expanded = template.expand(document.model.params)
        user = {k: v for k, v in source.data.items() if k != "model"}
        data = merge(expanded, user)
        data["model"] = expanded["model"]
        # Generated fields point at the param they came from, else at the template's name.
        anchor = source.locate(("model", "template"))
        for generated in (("input",), ("training",), ("model", "layers")):
            source.values.setdefault(generated, anchor)
            source.keys.setdefault(generated, anchor)
        for generated, param in template.origins(expanded).items():
            if ("model", "params", param) in source.values:
                source.values.setdefault(generated, source.values[("model", "params", param)])
        try:
            spec = Spec.model_validate(data)
        except ValidationError as e:
            shadow = Source(source.name, data, source.keys, source.values)
            return Validation(
                source.name, source, None, None, _structure_diagnostics(e, shadow, Spec)
            )
    else:
        spec = document
    resolved, analysis, diagnostics = check(spec, source, memory_limit=memory_limit)
    if errors_of(diagnostics):
        analysis = None
    return Validation(source.name, source, resolved, analysis, diagnostics)


def validate(
    spec: Union[str, bytes, os.PathLike[str]],
    overrides: Sequence[str] = (),
    *,
    name: Optional[str] = None,
    memory_limit: Optional[int] = None,
    max_bytes: int = MAX_SPEC_BYTES,
) -> Validation:
    """Load and validate a spec file or text, collecting every diagnostic.

    Args:
        spec: A path (`os.PathLike`, or a `str` without a newline), or the spec's text
            (`bytes`, or a `str` containing a newline).
        overrides: `dotted.path=value` assignments applied before validation.
        name: What diagnostics call the document (defaults to the path or "<string>").
        memory_limit: Bytes training may plan to use; a spec estimated above it is an
            error (`memory_budget`). None: no budget rule.
        max_bytes: The largest spec (and `--set` value) read, in bytes; a larger one is an
            error (`too_large`) before it is read. Default 1 MiB.
    """
    try:
        if isinstance(spec, bytes) or (isinstance(spec, str) and "\n" in spec):
            source = load_text(spec, name or "<string>", max_bytes=max_bytes)
        else:
            source = load_file(spec, max_bytes=max_bytes)
            if name:
                source.name = name
    except SpecError as e:
        label = name or (os.fspath(spec) if not isinstance(spec, bytes) else "<string>")
        return Validation(label, None, None, None, e.diagnostics)
    return validate_source(source, overrides, memory_limit=memory_limit, max_bytes=max_bytes)


def load_spec(
    spec: Union[str, bytes, os.PathLike[str]],
    overrides: Sequence[str] = (),
    *,
    name: Optional[str] = None,
    memory_limit: Optional[int] = None,
    max_bytes: int = MAX_SPEC_BYTES,
) -> CheckedSpec:
    """Load, validate and resolve a spec.

    Args:
        spec: A path, or the spec's text; see `validate`.
        overrides: `dotted.path=value` assignments, as `keraspec render --set`.
        name: What diagnostics call the document.
        memory_limit: See `validate`.
        max_bytes: See `validate`.

    Returns:
        The checked spec: the resolved `Spec` (template expanded, defaults filled), its
        analysis, its source positions and its warnings.

    Raises:
        SpecError: carrying every diagnostic (errors first, then warnings) when any error
            was found.
    """
    result = validate(spec, overrides, name=name, memory_limit=memory_limit, max_bytes=max_bytes)
    checked = result.checked
    if checked is None:
        raise SpecError(result.diagnostics)
    return checked

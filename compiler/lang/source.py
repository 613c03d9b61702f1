"""Loading: spec text to plain data plus the source position of every key and value.

YAML and JSON are read by ruamel.yaml's round-trip loader, which records where each node
stands, rejects duplicate keys (ordinary loaders keep the last one silently, losing an edit)
and reads JSON as the YAML subset it is. The result holds only plain Python types.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Union

from compiler.diagnostics import Diagnostic, SpecError

PathPart = Union[str, int]
Path = tuple[PathPart, ...]


@dataclasses.dataclass(frozen=True)
class Location:
    file: str
    line: int
    column: int


def format_path(path: Path) -> str:
    """Render a path tuple as the spec's dotted form: ("model", "layers", 3) -> model.layers[3]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclasses.dataclass
class Source:
    """A loaded document: its data and where each part of it was written.

    Attributes:
        name: The file name used in diagnostics.
        data: The document as plain dicts, lists and scalars.
        keys: Location of each mapping key, by the path of its value.
        values: Location of each value (mapping value or sequence item), by path.
    """

    name: str
    data: Any
    keys: dict[Path, Location] = dataclasses.field(default_factory=dict)
    values: dict[Path, Location] = dataclasses.field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> Location:
        """Where `path` was written, or its nearest written ancestor.

        Args:
            path: A path into `data`; it need not exist (a missing field, a template's
                generated layer), in which case the closest ancestor answers.
            key: Prefer the key's position over the value's (for unknown keys).
        """
        for end in range(len(path), 0, -1):
            prefix = path[:end]
            table = (self.keys, self.values) if key or end < len(path) else (self.values, self.keys)
            for positions in table:
                if prefix in positions:
                    return positions[prefix]
        return Location(self.name, 1, 1)

    def diagnostic(
        self, path: Path, code: str, message: str, *, severity: str = "error", key: bool = False
    ) -> Diagnostic:
        where = self.locate(path, key=key)
        return Diagnostic(
            severity=severity,  # type: ignore[arg-type]
            code=code,
            message=message,
            path=format_path(path),
            file=where.file,
            line=where.line,
            column=where.column,
        )


def _fail(name: str, code: str, message: str, line: int = 1, column: int = 1) -> SpecError:
    return SpecError([Diagnostic("error", code, message, "", name, line, column)])


def byte_position(raw: bytes, offset: int) -> tuple[int, int]:
    """The 1-based line and column (in bytes) of a byte offset."""
    return raw.count(b"\n", 0, offset) + 1, offset - (raw.rfind(b"\n", 0, offset) + 1) + 1


def _decode(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _fail(
            name,
            "not_utf8",
            f"expected UTF-8 text, received byte 0x{raw[e.start]:02x} at byte offset "
            f"{e.start} that is not valid UTF-8",
            *byte_position(raw, e.start),
        ) from e


# Limits that keep loading bounded in time and memory whatever a file holds. Spec files are
# a few kilobytes; these leave room for generous ones.
MAX_SPEC_BYTES = 1 << 20  # the default of every `max_bytes`
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_VALUES = 100_000
_PLAIN_TAGS = {"str", "int", "float", "bool", "null", "seq", "map"}


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise _fail(
            name,
            "too_large",
            f"expected a spec file of at most {max_bytes:,} bytes, received {size:,} bytes "
            "(keraspec --max-spec-bytes or KERASPEC_MAX_SPEC_BYTES, or max_bytes= in Python, "
            "allows more)",
        )


def prescan(text: str, name: str, *, max_aliases: int = MAX_ALIASES) -> None:
    """Reject what would make loading slow or unsafe, from the token stream (no recursion).

    Nesting deeper than MAX_DEPTH, more than `max_aliases` aliases, and tags other than
    YAML's plain-data ones (`!!python/...` and the like) are errors at their position.

    Raises:
        SpecError: naming the line and column of the offending token.
    """
    from ruamel.yaml import YAML, tokens
    from ruamel.yaml.error import YAMLError

    opening = (
        tokens.FlowSequenceStartToken,
        tokens.FlowMappingStartToken,
        tokens.BlockMappingStartToken,
        tokens.BlockSequenceStartToken,
    )
    closing = (tokens.FlowSequenceEndToken, tokens.FlowMappingEndToken, tokens.BlockEndToken)
    depth = aliases = 0
    try:
        for token in YAML(typ="rt", pure=True).scan(text):
            mark = token.start_mark
            at = (mark.line + 1, mark.column + 1)
            if isinstance(token, opening):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _fail(
                        name,
                        "too_deep",
                        f"expected collections nested at most "
                        f"{MAX_DEPTH} deep, received deeper nesting",
                        *at,
                    )
            elif isinstance(token, closing):
                depth -= 1
            elif isinstance(token, tokens.AliasToken):
                aliases += 1
                if aliases > max_aliases:
                    allowed = f"at most {max_aliases}" if max_aliases else "no"
                    raise _fail(
                        name,
                        "too_many_aliases",
                        f"expected {allowed} YAML aliases " f"(*{token.value}), received more",
                        *at,
                    )
            elif isinstance(token, tokens.TagToken):
                handle, suffix = token.value
                if handle != "!!" or suffix not in _PLAIN_TAGS:
                    raise _fail(
                        name,
                        "tag",
                        f"expected plain data (strings, numbers, "
                        f"booleans, lists, mappings), received a value tagged "
                        f"{handle or ''}{suffix}; remove the tag",
                        *at,
                    )
    except YAMLError as e:
        raise _yaml_error(e, name) from e


def _yaml_error(e: Exception, name: str) -> SpecError:
    from ruamel.yaml.constructor import DuplicateKeyError

    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    if isinstance(e, DuplicateKeyError):
        # problem reads: found duplicate key "a" with value "2" (original value: "1")
        first = getattr(e, "context_mark", None)
        seen = f" (first defined on line {first.line + 1})" if first is not None else ""
        key = str(getattr(e, "problem", "")).split('"')[1:2]
        key_text = f" {key[0]!r}" if key else ""
        return _fail(
            name,
            "duplicate_key",
            f"duplicate key{key_text}{seen}: expected each key once per mapping, "
            "received it again; delete one of the two",
            line,
            column,
        )
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    text = f"{context}: {problem}" if context else str(problem)
    return _fail(name, "syntax_error", f"invalid YAML/JSON: {text}", line, column)


def _plain(node: Any, path: Path, source: Source, name: str, budget: list[int]) -> Any:
    """Copy a ruamel node into plain types, recording positions as it goes.

    `budget` holds the number of values still allowed: aliases share nodes, so a small
    file can describe an exponentially large document ("billion laughs").
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    budget[0] -= 1
    if budget[0] < 0:
        where = source.values.get(path) or Location(name, 1, 1)
        raise _fail(
            name,
            "too_many_values",
            f"expected at most {MAX_VALUES:,} values once "
            "YAML aliases are expanded, received more",
            where.line,
            where.column,
        )

    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for k, v in node.items():
            kl, kc = node.lc.key(k)
            if not isinstance(k, str):
                raise _fail(
                    name,
                    "non_string_key",
                    f"{format_path(path) or 'document'}: expected string keys, "
                    f"received {type(k).__name__} key {k!r}",
                    kl + 1,
                    kc + 1,
                )
            child = path + (str(k),)
            source.keys[child] = Location(name, kl + 1, kc + 1)
            vl, vc = node.lc.value(k)
            source.values[child] = Location(name, vl + 1, vc + 1)
            out[str(k)] = _plain(v, child, source, name, budget)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, v in enumerate(node):
            il, ic = node.lc.item(i)
            source.values[path + (i,)] = Location(name, il + 1, ic + 1)
            items.append(_plain(v, path + (i,), source, name, budget))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    # Timestamps, binary and other YAML tags have no meaning in a spec.
    return str(node)


def load_text(
    text: str | bytes, name: str = "<string>", *, max_bytes: int = MAX_SPEC_BYTES
) -> Source:
    """Parse YAML or JSON text into a `Source`.

    Args:
        text: The document; bytes are decoded as UTF-8 (a BOM is allowed).
        name: What diagnostics call the document.
        max_bytes: A longer document is an error (`too_large`).

    Raises:
        SpecError: on undecodable bytes, a syntax error, a duplicate key, an empty
            document, several documents, or a document that is not a mapping.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    _check_size(len(text), name, max_bytes)
    if isinstance(text, bytes):
        text = _decode(text, name)
    prescan(text, name)
    yaml = YAML(typ="rt", pure=True)
    try:
        documents = list(yaml.load_all(text))
    except YAMLError as e:
        raise _yaml_error(e, name) from e
    if not documents or (len(documents) == 1 and documents[0] is None):
        raise _fail(
            name,
            "empty_document",
            "expected a spec mapping (apiVersion, name, input, model, ...), received an "
            "empty document",
        )
    if len(documents) > 1:
        raise _fail(
            name,
            "multiple_documents",
            f"expected one spec per file, received {len(documents)} YAML documents",
        )
    source = Source(name=name, data=None)
    document = documents[0]
    if not isinstance(document, dict):
        kind = "a list" if isinstance(document, list) else f"the scalar {document!r}"
        raise _fail(
            name,
            "not_a_mapping",
            f"expected a spec mapping (apiVersion, name, input, model, ...), received {kind}",
        )
    source.data = _plain(document, (), source, name, [MAX_VALUES])
    return source


def load_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_SPEC_BYTES) -> Source:
    """Read and parse a spec file; see `load_text`."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            _check_size(os.fstat(f.fileno()).st_size, name, max_bytes)  # before reading it
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise _fail(name, "unreadable", f"cannot read the file: {e.strerror}") from e
    return load_text(raw, name, max_bytes=max_bytes)

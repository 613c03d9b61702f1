"""Reading a training corpus: a UTF-8 text file, one record per line.

A record is a line without its line ending (LF or CRLF). Blank lines hold no record and
are skipped (and counted). Everything that makes a file unusable as text is reported
before any training starts, with the file and the byte offset or line of the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Optional, Union

from compiler.diagnostics import DataError, Diagnostic
from compiler.lang.source import byte_position

# How many bytes are inspected to tell a binary file from text: a NUL byte in text is
# almost always a sign of a binary format (or UTF-16), which would decode "successfully".
_SNIFF = 8192


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The records of a corpus file.

    Attributes:
        path: The file the records came from.
        records: One string per non-blank line, in file order.
        lines: Lines in the file, blank ones included.
        blank_lines: Blank lines skipped.
        sha256: Digest of the file's bytes, so a resumed run can tell it is the same data.
        size: Size of the file in bytes.
        header: The first line, when it was read as a header (not a record).
    """

    path: str
    records: list[str]
    lines: int
    blank_lines: int
    sha256: str
    size: int
    header: Optional[str] = None


def _error(path: str, code: str, message: str, line: int | None = None, column: int | None = None):
    return DataError([Diagnostic("error", code, message, "data", path, line, column)])


def read_corpus(path: Union[str, os.PathLike[str]], *, header: bool = False) -> Corpus:
    """Read a corpus file into records.

    Args:
        path: The file.
        header: The first non-blank line is a header (the spec's `data.header: true`): it
            is kept apart, not returned as a record.

    Raises:
        DataError: the file is missing, not a regular file, empty, binary, not UTF-8, or
            holds no record; the diagnostic names the file and, where it applies, the
            line, column and byte offset.
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise _error(name, "data_missing", "expected a text file of records, received no such file")
    if not os.path.isfile(name):
        raise _error(
            name, "data_not_file", "expected a text file of records, received a directory"
        )
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _error(name, "data_unreadable", f"expected a readable file, received: {e.strerror}")
    if not raw.strip():
        received = f"{len(raw)} bytes of whitespace only" if raw else "an empty file"
        raise _error(
            name, "data_empty", f"expected at least one record (a non-blank line), received {received}"
        )
    nul = raw.find(b"\0", 0, _SNIFF)
    if nul >= 0:
        raise _error(
            name,
            "data_binary",
            f"expected UTF-8 text, received binary data (a NUL byte at byte offset {nul})",
            *byte_position(raw, nul),
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(
            name,
            "data_encoding",
            f"expected UTF-8 text, received the byte 0x{raw[e.start]:02x} at byte offset "
            f"{e.start} that is not valid UTF-8 ({e.reason}); re-encode the file as UTF-8",
            *byte_position(raw, e.start),
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark is not part of the first record
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    records = []
    blank = 0
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip():
            records.append(line)
        else:
            blank += 1
    first = records.pop(0) if header and records else None
    if header and not records:
        raise _error(name, "data_empty", "expected at least one record after the header line "
                     "(data.header: true), received the header only")
    return Corpus(
        path=name,
        records=records,
        lines=len(lines),
        blank_lines=blank,
        sha256=hashlib.sha256(raw).hexdigest(),
        size=len(raw),
        header=first,
    )


DELIMITERS = (",", "\t", ";", "|")
# Share of records that must agree on a field count for the corpus to count as delimited.
_AGREEMENT = 0.9


def record_shape(records: list[str], sample: int = 2000) -> Optional[dict[str, object]]:
    """The delimiter and field count that most records share, if the corpus is delimited.

    Records are parsed as CSV (quotes respected) with each candidate delimiter; the corpus is
    delimited when at least 90% of the sampled records have the same number (>= 2) of
    fields. Returns {"delimiter": ",", "fields": 6} or None.
    """
    import collections
    import csv

    head = records[:sample]
    if not head:
        return None
    best: Optional[tuple[float, str, int]] = None
    for delimiter in DELIMITERS:
        counts = collections.Counter(len(row) for row in csv.reader(head, delimiter=delimiter))
        fields, hits = counts.most_common(1)[0]
        share = hits / len(head)
        if fields >= 2 and share >= _AGREEMENT and (best is None or share > best[0]):
            best = (share, delimiter, fields)
    return None if best is None else {"delimiter": best[1], "fields": best[2]}

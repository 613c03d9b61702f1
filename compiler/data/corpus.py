"""Reading a training corpus: a UTF-8 text file, one record per line.

A record is a line without its line ending (LF or CRLF). Blank lines hold no record and
are skipped (and counted). Everything that makes a file unusable as text is reported
before any training starts, with the file and the byte offset or line of the problem.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import stat
from typing import Optional, Union

from compiler.diagnostics import DataError, Diagnostic
from compiler.lang.source import byte_position

# The corpus limits: a file is read whole, and a record is one model example at most.
MAX_CORPUS_BYTES = 2**32  # 4 GiB
MAX_RECORD_CHARS = 1_000_000
# csv's own limit on a field (131,072 characters) is below a record's.
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_CHARS + 1))


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
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise _error(
            name, "data_missing", "expected a text file of records, received no such file"
        ) from None
    except OSError as e:
        raise _error(
            name, "data_unreadable", f"expected a readable file, received: {e.strerror}"
        ) from e
    if not stat.S_ISREG(mode):
        # Never opened: a named pipe would block, a device would never end.
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else (
                "a named pipe"
                if stat.S_ISFIFO(mode)
                else (
                    "a device"
                    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
                )
            )
        )
        raise _error(name, "data_not_file", f"expected a text file of records, received {kind}")
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_CORPUS_BYTES + 1)
    except OSError as e:
        raise _error(
            name, "data_unreadable", f"expected a readable file, received: {e.strerror}"
        ) from e
    except MemoryError:
        raise _error(
            name,
            "data_too_large",
            "expected a corpus that fits in memory, received " f"{os.path.getsize(name):,} bytes",
        ) from None
    if len(raw) > MAX_CORPUS_BYTES:
        raise _error(
            name,
            "data_too_large",
            f"expected at most {MAX_CORPUS_BYTES:,} bytes (4 "
            "GiB), received a larger file; split it or sample it",
        )
    if not raw.strip():
        received = f"{len(raw)} bytes of whitespace only" if raw else "an empty file"
        raise _error(
            name,
            "data_empty",
            f"expected at least one record (a non-blank line), received {received}",
        )
    nul = raw.find(b"\0")  # anywhere: one rule for the whole file
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
    for number, line in enumerate(lines, start=1):
        if line.endswith("\r"):
            line = line[:-1]
        cr = line.find("\r")
        if cr >= 0:
            raise _error(
                name,
                "data_bare_cr",
                "expected records that end at a line feed, "
                "received a carriage return (\\r) inside a line (a file from an old Mac, "
                "or a field holding one); replace it",
                number,
                cr + 1,
            )
        if len(line) > MAX_RECORD_CHARS:
            raise _error(
                name,
                "data_record_too_long",
                f"expected records of at most "
                f"{MAX_RECORD_CHARS:,} characters, received {len(line):,}",
                number,
            )
        if line.strip():
            records.append(line)
        else:
            blank += 1
    first = records.pop(0) if header and records else None
    if header and not records:
        raise _error(
            name,
            "data_empty",
            "expected at least one record after the header line "
            "(data.header: true), received the header only",
        )
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

    head = records[:sample]
    if not head:
        return None
    best: Optional[tuple[float, str, int]] = None
    for delimiter in DELIMITERS:
        counts = collections.Counter(_fields(record, delimiter) for record in head)
        fields, hits = counts.most_common(1)[0]
        share = hits / len(head)
        if fields >= 2 and share >= _AGREEMENT and (best is None or share > best[0]):
            best = (share, delimiter, fields)
    return None if best is None else {"delimiter": best[1], "fields": best[2]}


def _fields(record: str, delimiter: str) -> int:
    """A record's field count as CSV (0 when it does not parse: never an exception)."""
    try:
        rows = list(csv.reader([record], delimiter=delimiter))
    except csv.Error:
        return 0
    return len(rows[0]) if len(rows) == 1 else 0

"""Writing files so that a failure never leaves a half-written one behind, and reading
keraspec's own JSON files back, typed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Optional, Union

from compiler.diagnostics import Diagnostic, KeraspecError


def write_atomic(path: Union[str, os.PathLike[str]], data: Union[str, bytes]) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".keraspec-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_directory(path: Union[str, os.PathLike[str]]) -> None:
    """Make a rename or a new entry in `path` durable (a no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Union[str, os.PathLike[str]]) -> None:
    """fsync every file and directory under `path`, so a later rename exposes whole files."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_directory(root)


@contextlib.contextmanager
def atomic_directory(path: Union[str, os.PathLike[str]]) -> Iterator[str]:
    """Yield a temporary directory that replaces `path` only if the block succeeds.

    An existing `path` is swapped out and removed after the new one is in place.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".keraspec-", dir=parent)
    try:
        yield tmp
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=".keraspec-old-", dir=parent)
            os.replace(path, os.path.join(old, "x"))
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# What a write can run out of, by errno and as TensorFlow words it in its own errors.
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_RESOURCE_WORDS = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "File too large",
)


def resource_problem(error: BaseException) -> Optional[str]:
    """What a failed operation ran out of (space, a writable file system, permission,
    memory), in the system's words; None for any other error."""
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, OSError) and error.errno in _RESOURCE_ERRNOS:
        return os.strerror(error.errno)
    text = str(error)
    return next((words for words in _RESOURCE_WORDS if words in text), None)


@contextlib.contextmanager
def resource_errors(
    where: str, doing: str, advice: str, error: Callable[[list], Exception]
) -> Iterator[None]:
    """Turn running out of a resource inside the block into an ordinary error.

    Args:
        where: The directory being written (named in the message).
        doing: What was being written, e.g. "checkpoint step 120".
        advice: What to do, e.g. "free space and run the same command again to resume".
        error: The KeraspecError class to raise, called with the diagnostics.
    """
    from compiler.diagnostics import Diagnostic

    try:
        yield
    except Exception as e:  # noqa: BLE001 - classified, and re-raised unless a resource
        problem = resource_problem(e)
        if problem is None:
            raise
        raise error(
            [
                Diagnostic(
                    "error",
                    "resource",
                    f"expected to write {doing}, received: " f"{problem}; {advice}",
                    "",
                    where,
                )
            ]
        ) from e


def file_sha256(path: str) -> str:
    """The sha256 of a file's content, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digest_mismatch(root: str, digests: dict[str, str]) -> Optional[tuple[str, bool]]:
    """The first file under `root` that is not what `digests` (relative path -> sha256)
    recorded, with whether it is missing (else its content differs); None when all match."""
    for relative, digest in digests.items():
        path = os.path.join(root, str(relative))
        if not os.path.isfile(path):
            return path, True
        if file_sha256(path) != digest:
            return path, False
    return None


def read_json_as(
    path: str,
    kind: Any,
    *,
    error: type[KeraspecError],
    code: str,
    advice: str,
) -> Any:
    """A JSON file keraspec wrote, validated as `kind` (a pydantic model or TypeAdapter).

    The one reader of keraspec's own JSON files (run.json, checkpoint pointers and state,
    report.json, validators.json). Validation is pydantic's strict JSON mode: no string
    stands in for a number, no number for a flag.

    Raises:
        error: the file is missing, unreadable, not JSON, or holds a field of another type
            than keraspec writes; one diagnostic naming the file, the line and the field,
            what was expected and received, and `advice`.
    """
    import pydantic

    adapter = kind if isinstance(kind, pydantic.TypeAdapter) else pydantic.TypeAdapter(kind)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _file_error(
            error, path, code, f"expected {path}, received no such file; {advice}"
        ) from None
    except OSError as e:
        raise _file_error(
            error, path, code, f"expected {path} to read, received {e.strerror}; {advice}"
        ) from None
    try:
        return adapter.validate_json(raw, strict=True)
    except pydantic.ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        schema = adapter.core_schema
        if schema.get("type") == "tagged-union" and loc and loc[0] in schema["choices"]:
            loc = loc[1:]  # a union's tag (which kind of file), not a field
        if first["type"] == "json_invalid":
            message = f"expected the JSON keraspec wrote, received {first['msg']}"
            loc = ()
        elif first["type"] == "missing":
            message = "expected a value for this field, received nothing"
        else:
            expected = first["msg"].removeprefix("Input should be ")
            received = f"{type(first['input']).__name__} {json.dumps(first['input'])[:40]}"
            message = f"expected {expected}, received {received}"
        raise _file_error(error, path, code, f"{message}; {advice}", raw, loc) from None


def _file_error(
    error: type[KeraspecError],
    path: str,
    code: str,
    message: str,
    raw: bytes = b"",
    loc: tuple[Union[str, int], ...] = (),
) -> KeraspecError:
    """One diagnostic at the field `loc` of the JSON file `path` (its line when it parses)."""
    from compiler.lang.source import format_path, load_text

    line = column = None
    if raw:
        with contextlib.suppress(Exception):  # the message matters more than the line
            where = load_text(raw, path, max_bytes=1 << 30).locate(loc)
            line, column = where.line, where.column
    return error([Diagnostic("error", code, message, format_path(loc), path, line, column)])

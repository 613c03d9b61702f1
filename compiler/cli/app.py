"""The `keraspec` application: global options, shared option types and helpers, the entry point.

Commands register on `app` from `spec_commands` (no TensorFlow) and `run_commands`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, List, Optional

import typer

if TYPE_CHECKING:
    from compiler.diagnostics import Diagnostic

from compiler.cli.output import _console, _print_diagnostics
from compiler.lang.source import MAX_SPEC_BYTES

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


app = typer.Typer(
    name="keraspec",
    help="Declarative architecture specs for Keras: validate, diff, compile, train, export, "
    "generate.",
    epilog="Only compile, privacy, train, audit, export, inspect (of an export), generate "
    "and evaluate (unless given --synthetic) load TensorFlow or dp_accounting, and need the "
    "tensorflow extra; the others never do. An internal error (a bug, never bad input) "
    "prints one line and exits 3; --debug shows its traceback. --set takes the spec's own "
    "dotted paths (model.params.rnn_units=64, model.layers[3].units=128, "
    "training.optimizer={type: adam}); values are YAML.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# Boolean options are flags: no value after them, and none shown in --help.
FLAG = ""


class TextOrJson(str, enum.Enum):
    text = "text"
    json = "json"


class ValidateFormat(str, enum.Enum):
    text = "text"
    json = "json"
    github = "github"


class DiffFormat(str, enum.Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


class YamlOrJson(str, enum.Enum):
    yaml = "yaml"
    json = "json"


_EXTRA_HINT = "the tensorflow extra: pip install 'keraspec[tensorflow]'"


# What each command that goes beyond the spec half imports (the tensorflow extra).
_NEEDS = {
    "compile": ("tensorflow", "tf_keras"),
    "privacy": ("dp_accounting",),
    "train": ("tensorflow", "tf_keras", "dp_accounting", "sentencepiece", "tensorboard"),
    "export": ("tensorflow", "tf_keras", "tensorflow_serving"),
    "inspect": ("tensorflow",),
    "generate": ("tensorflow", "tf_keras"),
    "evaluate": ("sdmetrics", "pandas", "plotly"),
    "import --run-dir": ("tensorflow", "tf_keras", "h5py", "sentencepiece"),
}


# The first Python TensorFlow 2.21 has no wheel for.
_FIRST_PYTHON_WITHOUT_TENSORFLOW = (3, 14)

_EVALUATE_HINT = "pip install 'keraspec[evaluate]'"


# The extra that provides a module, when it is not the tensorflow extra.
_EXTRA_OF = {"sdmetrics": "evaluate", "pandas": "evaluate", "plotly": "evaluate"}


def _require(command: str, *, tensorflow: bool = False) -> None:
    """Exit 1 with what to install when a command's packages are missing (core install).

    `tensorflow` adds what `generate` needs, for a command that generates records too.
    """
    import importlib.util

    needed = _NEEDS[command] + (_NEEDS["generate"] if tensorflow else ())
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    extras = {_EXTRA_OF.get(m, "tensorflow") for m in missing}
    if extras == {"evaluate"}:
        from rich.markup import escape

        _console(stderr=True).print(
            f"[bold red]error:[/bold red] keraspec {command} needs the evaluate extra: "
            f"{escape(_EVALUATE_HINT)} (missing: {', '.join(missing)})"
        )
        raise typer.Exit(1)
    missing = [m for m in missing if m not in _EXTRA_OF]
    if missing and sys.version_info >= _FIRST_PYTHON_WITHOUT_TENSORFLOW:
        from rich.markup import escape

        version = ".".join(map(str, sys.version_info[:3]))
        _console(stderr=True).print(
            f"[bold red]error:[/bold red] keraspec {command} needs Python 3.11 to 3.13, "
            f"received Python {version}: TensorFlow 2.21 publishes no build for a later "
            "Python. The spec commands (validate, render, schema, templates, diff, explain) "
            f"run on this one; install {escape('keraspec[tensorflow]')} under Python 3.11 "
            "to 3.13 for the rest."
        )
        raise typer.Exit(1)
    if missing:
        from rich.markup import escape

        _console(stderr=True).print(
            f"[bold red]error:[/bold red] keraspec {command} needs {escape(_EXTRA_HINT)} "
            f"(missing: {', '.join(missing)})"
        )
        raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        from compiler import __version__

        typer.echo(f"keraspec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        metavar=FLAG,
        help="Print the version and exit.",
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        metavar=FLAG,
        envvar="KERASPEC_DEBUG",
        help="Show a traceback for internal errors (for bug reports).",
    ),
    memory_limit: Optional[str] = typer.Option(
        None,
        "--memory-limit",
        metavar="SIZE",
        envvar="KERASPEC_MEMORY_LIMIT",
        help="Training memory a spec may plan to use, e.g. 64GiB (default: 80% of RAM).",
    ),
    max_spec_bytes: Optional[str] = typer.Option(
        None,
        "--max-spec-bytes",
        metavar="SIZE",
        envvar="KERASPEC_MAX_SPEC_BYTES",
        help="The largest spec file (and --set value) read, e.g. 4MiB (default: 1MiB).",
    ),
) -> None:
    """Declarative architecture specs for Keras: validate, diff, compile, train, export."""
    _quiet_tensorflow()
    settings = ctx.ensure_object(Settings)  # main() passes its own, to read `debug` back
    settings.debug = debug
    settings.memory_limit = _size_option(memory_limit, "--memory-limit")
    settings.max_spec_bytes = _size_option(max_spec_bytes, "--max-spec-bytes") or MAX_SPEC_BYTES


def _size_option(text: Optional[str], name: str) -> Optional[int]:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError:
        raise typer.BadParameter(
            f"expected a size such as 512MiB or 64GiB, received {text!r}", param_hint=name
        ) from None


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's logs out of the terminal: the CLI prints its own diagnostics.

    The command line owns its process, so it may set what the library never does. Level 3
    also hides the "failed call to cuInit" error every CPU-only machine logs. Nothing is
    imported: commands that need no TensorFlow stay fast.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


@dataclasses.dataclass
class Settings:
    """The global options, on the root typer context's `obj` (filled by `_options`)."""

    debug: bool = False
    memory_limit: Optional[int] = None  # bytes; None: 80% of the machine's RAM
    max_spec_bytes: int = MAX_SPEC_BYTES


def _settings(ctx: typer.Context) -> Settings:
    return ctx.ensure_object(Settings)  # the one `_options` filled


def _spec_limits(ctx: typer.Context) -> dict[str, int]:
    """The limits every spec a command loads is held to, as `load_spec` takes them."""
    settings = _settings(ctx)
    return {"memory_limit": _memory_limit(settings), "max_bytes": settings.max_spec_bytes}


def parse_size(text: str) -> int:
    """Bytes in a size such as 64GiB, 512MB, 2g or 1048576.

    Raises:
        ValueError: the text is not a positive size.
    """
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    core = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(core[-1:], 1)
    value = float(core[:-1] if core[-1:] in units else core) * scale
    if not value > 0:
        raise ValueError(text)
    return int(value)


def _memory_limit(settings: Settings) -> int:
    """Bytes training may plan to use: --memory-limit, else 80% of the machine's RAM."""
    if settings.memory_limit is not None:
        return settings.memory_limit
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30


# Every integer option has a range (typer reports a value outside it as a usage error, exit 2,
# naming the option): sizes TensorFlow indexes with int32, counts a machine can hold.
INT32 = 2**31 - 1


MAX_EXAMPLES = 10**12


MAX_RECORDS = 10**6


EpochsOption = typer.Option(None, "--epochs", min=1, max=INT32, help="Override training.epochs.")


# generate --valid-only's default budget (compiler.generation.DEFAULT_MAX_INVALID, which
# imports numpy: the CLI module imports nothing heavy).
MAX_INVALID = 1000


DataOption = typer.Option(..., "--data", "-d", help="UTF-8 text file, one record per line.")


SetOption = typer.Option(
    None,
    "--set",
    "-s",
    metavar="PATH=VALUE",
    help="Override a field by its dotted path, e.g. model.params.rnn_units=64 "
    "(repeatable; values are YAML).",
)


def _load_or_exit(ctx: typer.Context, spec: Path, overrides: Optional[List[str]]) -> Any:
    from compiler.diagnostics import SpecError
    from compiler.lang.parse import load_spec

    if not spec.is_file():
        raise typer.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    try:
        return load_spec(spec, overrides or (), **_spec_limits(ctx))
    except SpecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(1) from e


def _fail(diagnostics: Iterable["Diagnostic"]) -> "typer.Exit":
    _print_diagnostics(_console(stderr=True), diagnostics)
    return typer.Exit(1)


def main() -> None:
    """Console entry point: no traceback reaches the user unless --debug is given."""
    settings = Settings()
    try:
        app(obj=settings)
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if settings.debug:
            raise
        print(
            f"keraspec: internal error: {type(e).__name__}: {e}\n"
            "(rerun with --debug, e.g. keraspec --debug validate ..., for a traceback, and "
            "please report it)",
            file=sys.stderr,
        )
        sys.exit(3)

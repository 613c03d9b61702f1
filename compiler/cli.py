"""The `keraspec` command line: parse arguments, call one library function, render.

Commands of the spec half (validate, schema, templates, render) never import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, List, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from compiler.diagnostics import Diagnostic
    from compiler.lang.parse import Validation

SPEC_SUFFIXES = (".yaml", ".yml", ".json")

app = typer.Typer(
    name="keraspec",
    help="Declarative architecture specs for Keras: validate, diff, compile, train, export, "
    "generate.",
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
}
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
    if missing and sys.version_info >= (3, 13):
        from rich.markup import escape

        version = ".".join(map(str, sys.version_info[:3]))
        _console(stderr=True).print(
            f"[bold red]error:[/bold red] keraspec {command} needs Python 3.11 or 3.12, "
            f"received Python {version}: its pinned TensorFlow stack (numpy 1.26) has no "
            "build for a later Python. The spec commands (validate, render, schema, "
            "templates, diff) run on this one; install "
            f"{escape('keraspec[tensorflow]')} under Python 3.11 or 3.12 for the rest."
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
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, metavar=FLAG,
        help="Print the version and exit.",
    ),
    debug: bool = typer.Option(
        False, "--debug", metavar=FLAG, envvar="KERASPEC_DEBUG",
        help="Show a traceback for internal errors (for bug reports).",
    ),
    memory_limit: Optional[str] = typer.Option(
        None,
        "--memory-limit",
        metavar="SIZE",
        envvar="KERASPEC_MEMORY_LIMIT",
        help="Training memory a spec may plan to use, e.g. 64GiB (default: 80% of RAM; "
        "also KERASPEC_MEMORY_LIMIT).",
    ),
) -> None:
    """Declarative architecture specs for Keras: validate, diff, compile, train, export."""
    _SETTINGS.debug = debug
    _SETTINGS.memory_limit = None
    if memory_limit is not None:
        try:
            _SETTINGS.memory_limit = parse_size(memory_limit)
        except ValueError:
            raise typer.BadParameter(
                f"expected a size such as 512MiB or 64GiB, received {memory_limit!r}",
                param_hint="--memory-limit",
            )


@dataclasses.dataclass
class _Settings:
    """The global options, for the commands (set by `_options`)."""

    debug: bool = False
    memory_limit: Optional[int] = None  # bytes; None: 80% of the machine's RAM


_SETTINGS = _Settings()


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


def _memory_limit() -> int:
    """Bytes training may plan to use: --memory-limit, else 80% of the machine's RAM."""
    if _SETTINGS.memory_limit is not None:
        return _SETTINGS.memory_limit
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


def _console(stderr: bool = False) -> "Console":
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print_diagnostics(console: "Console", diagnostics: Iterable["Diagnostic"]) -> None:
    from rich.text import Text

    for d in diagnostics:
        where = d.file
        if d.line is not None:
            where += f":{d.line}" + (f":{d.column}" if d.column is not None else "")
        line = Text()
        line.append(where + ": ", style="bold")
        line.append(d.severity + ": ", style="bold red" if d.severity == "error" else "bold yellow")
        if d.path:
            line.append(d.path + ": ", style="cyan")
        line.append(d.message)
        console.print(line)


def _spec_files(paths: List[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in SPEC_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise typer.BadParameter(f"no such file or directory: {path}", param_hint="PATH")
    return files


def _failed(result: "Validation", strict: bool) -> bool:
    return not result.ok or (strict and bool(result.diagnostics))


@app.command()
def validate(
    paths: List[Path] = typer.Argument(..., help="Spec files or directories to search."),
    strict: bool = typer.Option(False, "--strict", metavar=FLAG, help="Fail on warnings too."),
    fmt: ValidateFormat = typer.Option(
        ValidateFormat.text,
        "--format",
        "-f",
        help="Output format; github prints GitHub Actions annotations (::error file=...).",
    ),
    overrides: Optional[List[str]] = SetOption,
    examples: Optional[int] = typer.Option(
        None, "--examples", min=1, max=MAX_EXAMPLES,
        help="Training records, to check a DP spec's delta against 1 / records.",
    ),
) -> None:
    """Check spec files against the schema and the semantic rules.

    Exits 0 when every file is valid, 1 when any is not, 2 on usage errors.
    """
    from compiler.lang.parse import validate as validate_spec

    files = _spec_files(paths)
    if not files:
        raise typer.BadParameter("no .yaml, .yml or .json files found", param_hint="PATH")
    results = [validate_spec(f, overrides or (), memory_limit=_memory_limit()) for f in files]
    if examples is not None:
        from compiler.privacy import delta_diagnostic

        for r in results:
            found = (None if r.spec is None
                     else delta_diagnostic(r.spec, examples, source=r.source))
            if found is not None:
                r.diagnostics.append(found)
    failed = [r for r in results if _failed(r, strict)]
    if fmt is ValidateFormat.github:
        for r in results:
            for d in r.diagnostics:
                typer.echo(github_annotation(d))
    elif fmt is ValidateFormat.json:
        payload = {
            "valid": not failed,
            "files": [
                {
                    "file": r.name,
                    "valid": not _failed(r, strict),
                    "name": r.spec.name if r.spec else None,
                    "params": r.analysis.total_params if r.analysis else None,
                    "diagnostics": [d.to_dict() for d in r.diagnostics],
                }
                for r in results
            ],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        _report(results, strict)
    raise typer.Exit(1 if failed else 0)


def github_annotation(d: "Diagnostic") -> str:
    """A diagnostic as a GitHub Actions workflow command (an annotation on the file's line)."""

    def escape(text: str, *, prop: bool = False) -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        return text.replace(":", "%3A").replace(",", "%2C") if prop else text

    props = [f"file={escape(d.file, prop=True)}"]
    if d.line is not None:
        props.append(f"line={d.line}")
        if d.column is not None:
            props.append(f"col={d.column}")
    title = f"keraspec {d.code}" + (f" at {d.path}" if d.path else "")
    props.append(f"title={escape(title, prop=True)}")
    message = (f"{d.path}: " if d.path else "") + d.message
    return f"::{d.severity} {','.join(props)}::{escape(message)}"


def _report(results: list["Validation"], strict: bool) -> None:
    from rich.text import Text

    console = _console()
    warnings = 0
    for r in results:
        line = Text()
        if _failed(r, strict):
            line.append("✗ ", style="bold red")
        else:
            line.append("✓ ", style="bold green")
        line.append(r.name)
        if r.spec is not None:
            line.append(f"  {r.spec.name}", style="cyan")
        if r.analysis is not None:
            line.append(f"  {r.analysis.total_params:,} params", style="dim")
        console.print(line)
        _print_diagnostics(console, r.diagnostics)
        warnings += sum(d.severity == "warning" for d in r.diagnostics)
    bad = sum(_failed(r, strict) for r in results)
    summary = (
        f"{len(results)} file(s): {len(results) - bad} valid, {bad} invalid, {warnings} warning(s)"
    )
    console.print(Text(summary, style="bold red" if bad else "bold green"))


@app.command()
def schema(
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write to this file instead of standard output."
    ),
) -> None:
    """Print the JSON Schema of spec files."""
    from compiler.files import write_atomic
    from compiler.lang.schema import schema_text

    text = schema_text()
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text)
        _console(stderr=True).print(f"wrote {output}")


@app.command()
def explain(
    path: str = typer.Argument(
        "", help="A field's dotted path, e.g. training.privacy.noise_multiplier."
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Document a spec field: its description, type, default and fields, from the schema."""
    from compiler.diagnostics import KeraspecError
    from compiler.lang.explain import explain as explain_path

    try:
        found = explain_path(path)
    except KeraspecError as e:
        raise _fail(e.diagnostics)
    if fmt is TextOrJson.json:
        typer.echo(json.dumps([dataclasses.asdict(f) for f in found], indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    for i, field in enumerate(found):
        if i:
            console.print()
        owner = f"  [dim](in {escape(field.owner)})[/dim]" if len(found) > 1 else ""
        console.print(f"[bold]{escape(field.path)}[/bold]{owner}")
        console.print(f"  type: {escape(field.type)}")
        if field.default is not None:
            console.print(f"  default: {escape(field.default)}")
        elif field.required and field.path != "spec":
            console.print("  required")
        if field.description:
            console.print(f"  {escape(field.description)}", soft_wrap=False)
        if field.fields:
            table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
            for column in ("field", "type", "description"):
                table.add_column(column, overflow="fold")
            for name, kind, text in field.fields:
                table.add_row(escape(name), escape(kind), escape(text))
            console.print(table)


@app.command()
def templates(
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """List the templates with their parameters and defaults."""
    from compiler.lang.explain import model_fields
    from compiler.lang.templates import TEMPLATES

    rows = {
        name: {
            "description": t.description,
            "params": {
                p: {"type": kind, "default": default, "description": text}
                for p, kind, default, text in model_fields(t.params)
            },
        }
        for name, t in TEMPLATES.items()
    }
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    console = _console()
    for name, row in rows.items():
        table = Table(title=f"[bold]{name}[/bold]: {row['description']}", title_justify="left")
        table.add_column("param", style="cyan", no_wrap=True)
        table.add_column("type", overflow="fold")
        table.add_column("default", justify="right")
        table.add_column("description", overflow="fold")
        for p, info in row["params"].items():
            table.add_row(p, info["type"], json.dumps(info["default"]), info["description"])
        console.print(table)


@app.command()
def render(
    spec: Path = typer.Argument(..., help="The spec file."),
    overrides: Optional[List[str]] = SetOption,
    fmt: YamlOrJson = typer.Option(YamlOrJson.yaml, "--format", "-f", help="Output format."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write to this file (atomically) instead of stdout."
    ),
    schema_path: Path = typer.Option(
        Path("schema/keraspec.schema.json"),
        "--schema",
        help="With -o and YAML: the schema the file's yaml-language-server line points at.",
    ),
) -> None:
    """Print the fully expanded spec: template applied, defaults filled."""
    from compiler.lang.render import render as render_spec

    resolved = _load_or_exit(spec, overrides)
    text = render_spec(resolved, fmt.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    from compiler.files import write_atomic

    if fmt is YamlOrJson.yaml:
        # Editors with the YAML language server validate the file against this schema.
        relative = os.path.relpath(schema_path.resolve(), output.resolve().parent)
        text = f"# yaml-language-server: $schema={Path(relative).as_posix()}\n" + text
    write_atomic(output, text)
    _console(stderr=True).print(f"wrote {output}")


def _load_or_exit(spec: Path, overrides: Optional[List[str]]) -> Any:
    from compiler.diagnostics import SpecError
    from compiler.lang.parse import load_spec

    if not spec.is_file():
        raise typer.BadParameter(f"no such file: {spec}", param_hint="SPEC")
    try:
        return load_spec(spec, overrides or (), memory_limit=_memory_limit())
    except SpecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(1)


@app.command("compile")
def compile_command(
    spec: Path = typer.Argument(..., help="The spec file."),
    overrides: Optional[List[str]] = SetOption,
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Write model.json, optimizer.json, spec.resolved.yaml and summary.txt here.",
    ),
    examples: Optional[int] = typer.Option(
        None, "--examples", min=1, max=MAX_EXAMPLES,
        help="Training examples, for a DP spec's privacy guarantee.",
    ),
) -> None:
    """Build and compile the Keras model; print its summary."""
    _require("compile")
    from compiler.diagnostics import KeraspecError

    resolved = _load_or_exit(spec, overrides)
    from compiler.build import compile_spec  # imports TensorFlow

    try:
        compiled = compile_spec(resolved, examples=examples)
        if output is not None:
            from compiler.artifacts import write_compiled

            write_compiled(compiled, output)
    except KeraspecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(1)
    _print_diagnostics(_console(stderr=True), compiled.warnings)
    typer.echo(compiled.summary_text(), nl=False)
    if output is not None:
        _console(stderr=True).print(f"wrote {output}/")


@app.command()
def privacy(
    spec: Path = typer.Argument(..., help="The spec file (with a training.privacy block)."),
    examples: int = typer.Option(..., "--examples", min=1, max=MAX_EXAMPLES,
                                 help="Number of training examples."),
    epochs: Optional[float] = typer.Option(None, "--epochs", min=0, max=INT32,
                                           help="Default: training.epochs."),
    delta: Optional[float] = typer.Option(
        None, "--delta", help="Default: privacy.delta, else examples^-1.1."
    ),
    target_epsilon: Optional[float] = typer.Option(
        None, "--target-epsilon", help="Solve for the noise multiplier reaching this epsilon."
    ),
    overrides: Optional[List[str]] = SetOption,
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Compute the (epsilon, delta) guarantee of a DP spec's training run."""
    _require("privacy")
    from compiler.diagnostics import SpecError
    from compiler.privacy import (
        ACCOUNTANT_NAMES,
        delta_diagnostic,
        delta_warning,
        epsilon_warning,
        privacy_report,
        weak_privacy_warning,
    )

    resolved = _load_or_exit(spec, overrides)
    try:
        report = privacy_report(
            resolved, examples, epochs=epochs, delta=delta, target_epsilon=target_epsilon,
            compare=True,
        )
    except SpecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(1)
    warning = epsilon_warning(report)
    delta_problem = delta_warning(report.delta, examples)
    if fmt is TextOrJson.json:
        payload = {**report.to_dict(), "warning": warning, "delta_warning": delta_problem}
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.markup import escape

    console = _console()

    def shown(value: Optional[float]) -> str:
        return "inf (no noise)" if value is None or value == float("inf") else f"{value:.4f}"

    if target_epsilon is not None or (resolved.training.privacy.noise_multiplier is None):
        console.print(f"noise_multiplier: {report.noise_multiplier:.4f}")
    console.print(f"epsilon: {shown(report.epsilon)} at delta {report.delta:.3g} "
                  f"({report.accountant}, the spec's accountant)")
    for name, value in report.epsilons.items():
        console.print(f"  {ACCOUNTANT_NAMES[name]}: {shown(value)}")
    console.print(f"sampling: {report.sampling}, {report.steps} steps")
    console.print("assumptions:")
    for a in report.assumptions:
        console.print(escape(f"  - {a}"))
    problems = [d for d in (weak_privacy_warning(resolved, report),
                            delta_diagnostic(resolved, examples, delta)) if d is not None]
    if problems:
        _print_diagnostics(_console(stderr=True), problems)


@app.command("diff")
def diff_command(
    old: str = typer.Argument(..., help="The old spec: a file, or REV:PATH from git."),
    new: str = typer.Argument(..., help="The new spec: a file, or REV:PATH from git."),
    examples: Optional[int] = typer.Option(
        None, "--examples", min=1, max=MAX_EXAMPLES,
        help="Training examples, for the epsilon of DP specs.",
    ),
    fmt: DiffFormat = typer.Option(DiffFormat.text, "--format", "-f", help="Output format."),
) -> None:
    """Compare two specs: fields, layers and parameters, checkpoint and serving compatibility.

    Exits 0 when the specs are equivalent, 1 when they differ, 2 on errors (like diff).
    """
    from compiler.diagnostics import SpecError
    from compiler.diff import diff_specs, load_revision, render_markdown

    try:
        result = diff_specs(
            load_revision(old), load_revision(new), old_name=old, new_name=new,
            examples=examples,
        )
    except SpecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(2)
    except ImportError as e:
        from rich.markup import escape

        _console(stderr=True).print(escape(f"keraspec diff --examples needs {_EXTRA_HINT} ({e})"))
        raise typer.Exit(2)
    if fmt is DiffFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif fmt is DiffFormat.markdown:
        typer.echo(render_markdown(result), nl=False)
    else:
        _print_markdown(render_markdown(result))
    raise typer.Exit(0 if result.equivalent else 1)


def _print_markdown(text: str) -> None:
    """Markdown on the terminal, its tables wrapping long cells instead of cutting them."""
    from rich.markdown import Markdown
    from rich.table import Table

    console = _console()
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            if prose:
                console.print(Markdown("\n".join(prose)))
                prose = []
            table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
            for header in _cells(lines[i]):
                table.add_column(header, overflow="fold")
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                table.add_row(*_cells(lines[i]))
                i += 1
            console.print(table)
            console.print()
            continue
        prose.append(lines[i])
        i += 1
    if prose:
        console.print(Markdown("\n".join(prose)))


def _cells(line: str) -> list[str]:
    from rich.markup import escape

    return [escape(c.strip().replace("\\|", "|").strip("`")) for c in
            line.strip().strip("|").split(" | ")]


def _fail(diagnostics: Iterable["Diagnostic"]) -> "typer.Exit":
    _print_diagnostics(_console(stderr=True), diagnostics)
    return typer.Exit(1)


@app.command()
def train(
    spec: Path = typer.Argument(..., help="The spec file."),
    data: Path = DataOption,
    output: Path = typer.Option(
        ..., "--output", "-o", help="Run directory (resumed when it holds this run)."
    ),
    epochs: Optional[int] = EpochsOption,
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", min=1, max=INT32,
        help="Stop after this many steps in total (across resumes).",
    ),
    checkpoint_every: Optional[int] = typer.Option(
        None, "--checkpoint-every", min=1, max=INT32,
        help="Also save the latest checkpoint every N steps.",
    ),
    overrides: Optional[List[str]] = SetOption,
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Report format."),
    cluster: Optional[str] = typer.Option(
        None, "--cluster", help="multi_worker: the workers' host:port addresses, comma-separated "
        "(written to TF_CONFIG; the chief first).",
    ),
    task: Optional[int] = typer.Option(
        None, "--task", min=0, max=4096, help="multi_worker: this worker's index in --cluster.",
    ),
) -> None:
    """Train a spec on a corpus of records into a run directory (resumes an existing run).

    Exits 0 when training ran, 1 on bad input (nothing written), 130 when interrupted
    (the latest checkpoint is saved; rerun the same command to resume). Under
    multi_worker, run it once per worker, with the same spec, data and run directory.
    """
    _require("train")
    from compiler.diagnostics import Diagnostic, KeraspecError

    if (cluster is None) != (task is None):
        given = "--task" if cluster is None else "--cluster"
        raise _fail([Diagnostic("error", "cluster_task", f"expected --cluster and --task "
                                f"together, received only {given}", "", "<arguments>")])

    resolved = _load_or_exit(spec, overrides)
    distribution = resolved.training.distribution
    if cluster is not None and (distribution is None or distribution.strategy != "multi_worker"):
        strategy = "none" if distribution is None else distribution.strategy
        raise _fail([Diagnostic("error", "cluster_task", "expected training.distribution."
                                f"strategy multi_worker with --cluster, received {strategy}",
                                "training.distribution", str(spec))])
    config = None
    if cluster is not None:
        from compiler.distribution import cluster_config

        try:
            config = cluster_config([a.strip() for a in cluster.split(",") if a.strip()], task)
        except KeraspecError as e:
            raise _fail(e.diagnostics)
    _print_diagnostics(_console(stderr=True), list(resolved.warnings))
    from compiler.training import train as train_spec

    with _TrainProgress(enabled=fmt is TextOrJson.text) as progress:
        try:
            report = train_spec(
                resolved,
                data,
                output,
                epochs=epochs,
                max_steps=max_steps,
                checkpoint_every=checkpoint_every,
                callback=progress.update,
                cluster=config,
            )
        except KeraspecError as e:
            progress.stop()
            raise _fail(e.diagnostics)
        except KeyboardInterrupt:
            progress.stop()
            _console(stderr=True).print(
                f"aborted by a second Ctrl-C without saving; {output} resumes from its latest "
                "checkpoint: run the same command again"
            )
            raise typer.Exit(130)
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    for warning in report.warnings:
        _console(stderr=True).print(f"[bold yellow]warning:[/bold yellow] {warning}")
    if report.stopped_by == "interrupted":
        _console(stderr=True).print(
            f"interrupted at step {report.steps}; the latest checkpoint is saved in "
            f"{report.run_dir}: run the same command again to resume"
        )
        raise typer.Exit(130)


@app.command()
def audit(
    spec: Path = typer.Argument(..., help="The spec file (DP or not)."),
    data: Path = DataOption,
    output: Path = typer.Option(
        ..., "--output", "-o", help="Audit directory: audit corpus, run/ and audit.json."
    ),
    canaries: int = typer.Option(
        1000, "--canaries", min=2, max=10**6,
        help="Canaries to make (each trained on with probability 1/2).",
    ),
    epochs: Optional[int] = EpochsOption,
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", min=1, max=INT32, help="Stop training after this many steps."
    ),
    confidence: float = typer.Option(
        0.95, "--confidence", min=0.5, max=0.9999, help="Confidence of the lower bound."
    ),
    overrides: Optional[List[str]] = SetOption,
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Report format."),
) -> None:
    """Audit a spec's privacy empirically: canaries, one training run, an epsilon lower bound.

    Exits 0 when the lower bound is within the claimed epsilon (or the spec claims none),
    1 on bad input or when the lower bound exceeds the claimed epsilon (the guarantee is
    broken).
    """
    _require("train")
    from compiler.audit import audit as audit_spec
    from compiler.diagnostics import KeraspecError

    resolved = _load_or_exit(spec, overrides)
    with _TrainProgress(enabled=fmt is TextOrJson.text) as progress:
        try:
            report = audit_spec(resolved, data, output, canaries=canaries, epochs=epochs,
                                max_steps=max_steps, confidence=confidence,
                                callback=progress.update)
        except KeraspecError as e:
            progress.stop()
            raise _fail(e.diagnostics)
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console = _console()
        claimed = "none (no DP)" if report.claimed_epsilon is None else (
            f"{report.claimed_epsilon:.4g}")
        exposure = report.exposure
        for label, value in [
            ("claimed epsilon", claimed),
            (f"epsilon lower bound ({report.confidence:.0%} confidence, delta "
             f"{report.delta:.3g})", f"{report.epsilon_lower_bound:.4g}"),
            ("canaries (trained on)", f"{report.canaries} ({report.included})"),
            ("guesses (correct)", f"{report.guesses} ({report.correct})"),
            ("exposure, bits: mean / max of possible",
             f"{exposure['mean']:.2f} / {exposure['max']:.2f} of {exposure['possible']:.2f}"),
            ("audit", f"{output}/audit.json"),
        ]:
            console.print(f"{label}: {value}")
    if report.broken:
        _console(stderr=True).print(
            f"[bold red]error:[/bold red] the privacy guarantee is broken: the audit's lower "
            f"bound {report.epsilon_lower_bound:.4g} exceeds the claimed epsilon "
            f"{report.claimed_epsilon:.4g} at {report.confidence:.0%} confidence; clipping, "
            "noise, sampling or accounting does not do what the report says"
        )
        raise typer.Exit(1)


class _TrainProgress:
    """A rich progress bar fed by the training loop's callback (on standard error)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> "_TrainProgress":
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=_console(stderr=True),
                transient=False,
            )
            self.bar.start()
        return self

    def update(self, p: Any) -> None:
        if p.event == "start" and p.step > 0 and self.enabled:
            console = _console(stderr=True)
            if p.step >= p.total_steps:
                console.print(f"already complete at step {p.step} (epoch {p.epoch}/"
                              f"{p.epochs}); nothing to do")
            else:
                console.print(f"resuming from step {p.step} (epoch {p.epoch}/{p.epochs})")
        metrics = "  ".join(
            f"{k} {v:.4f}" for k, v in p.logs.items() if isinstance(v, float)
        )
        if p.epsilon is not None:
            metrics += f"  ε {p.epsilon:.3g}"
        if self.bar is None:
            return
        if not self.bar.console.is_terminal and p.event == "epoch":
            # A pipe or a log file keeps no redrawn bar: one line per epoch instead.
            self.bar.console.print(f"epoch {p.epoch}/{p.epochs}  step {p.step}/"
                                   f"{p.total_steps}  {metrics}")
        fields = {"epoch": f"{p.epoch}/{p.epochs}", "metrics": metrics}
        if self.task is None:
            self.task = self.bar.add_task("train", total=p.total_steps, completed=p.step, **fields)
        else:
            self.bar.update(self.task, total=p.total_steps, completed=p.step, **fields)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _print_report(report: Any) -> None:
    from rich.table import Table

    table = Table(
        title=f"[bold]{report.name}[/bold] → {report.run_dir}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("", style="cyan")
    table.add_column("", justify="right")

    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:,.4f}" if isinstance(value, float) else f"{value:,}"

    last = report.history[-1] if report.history else {}
    rows = [
        ("stopped by", report.stopped_by),
        ("epochs", fmt(report.epochs)),
        ("steps", fmt(report.steps)),
        (f"examples ({report.unit}s per epoch)", fmt(report.examples)),
        ("training / validation records", f"{report.records:,} / {report.validation_records:,}"),
        ("loss", fmt(report.loss)),
        ("accuracy", fmt(last.get("accuracy"))),
        ("best validation loss", fmt(report.best_val_loss)),
        ("validation accuracy", fmt(last.get("val_accuracy"))),
        ("wall time (s)", f"{report.wall_time:,.1f}"),
        ("tokens per second", f"{report.tokens_per_second:,.0f}"),
        ("tokenizer", f"{report.tokenizer} ({report.vocabulary} ids)"),
    ]
    if report.privacy is not None:
        p = report.privacy
        eps = "inf (no noise)" if p["epsilon"] is None else f"{p['epsilon']:.4g}"
        rows += [
            ("epsilon", eps),
            ("delta", f"{p['delta']:.3g}"),
            ("noise multiplier", f"{p['noise_multiplier']:.4g}"),
            ("privacy unit", p["privacy_unit"]),
            ("truncated records", fmt(report.truncated_records)),
        ]
    for row in rows:
        table.add_row(*row)
    _console().print(table)


@app.command()
def generate(
    path: Path = typer.Argument(
        ..., help="An export (BASE/NAME or BASE/NAME/VERSION) or a run directory."
    ),
    count: int = typer.Option(5, "--count", "-n", min=1, max=MAX_RECORDS,
                              help="Records to generate."),
    prompt: str = typer.Option("", "--prompt", help="Text each record starts with."),
    max_new_tokens: Optional[int] = typer.Option(
        None, "--max-new-tokens", min=1, max=INT32,
        help="Default: twice the training sequence length.",
    ),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 is greedy."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same records."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Run directory: best or latest."),
    valid_only: bool = typer.Option(
        False, "--valid-only", metavar=FLAG,
        help="Keep sampling until COUNT records pass the validators.",
    ),
    max_invalid: int = typer.Option(
        MAX_INVALID, "--max-invalid", min=0, max=10**9,
        help="With --valid-only: give up after this many invalid records.",
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Generate records from an export (in-graph generate signature) or a run directory."""
    _require("generate")
    from compiler.diagnostics import KeraspecError

    if checkpoint not in ("best", "latest"):
        raise typer.BadParameter("expected best or latest", param_hint="--checkpoint")
    if not math.isfinite(temperature):
        raise typer.BadParameter(f"expected a finite number >= 0, received {temperature}",
                                 param_hint="--temperature")
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise typer.BadParameter(f"expected a 64-bit integer, received {seed}",
                                 param_hint="--seed")
    from compiler.generation import ValidRecordsExhausted, generate as generate_records

    exhausted = None
    try:
        result = generate_records(
            path,
            count=count,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            checkpoint=checkpoint,
            valid_only=valid_only,
            max_invalid=max_invalid,
        )
    except ValidRecordsExhausted as e:
        result, exhausted = e.generated, e  # print what was found, then the error
    except KeraspecError as e:
        raise _fail(e.diagnostics)
    if fmt is TextOrJson.json:
        payload = {**dataclasses.asdict(result), "valid_share": result.valid_share,
                   "acceptance_rate": result.acceptance_rate}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        for record in result.records:
            typer.echo(record)
        _print_generation_summary(result, valid_only)
    if exhausted is not None:
        raise _fail(exhausted.diagnostics)


def _print_generation_summary(result: Any, valid_only: bool) -> None:
    err = _console(stderr=True)
    unfinished = result.complete.count(False)
    if unfinished:
        err.print(
            f"[yellow]{unfinished} record(s) reached --max-new-tokens before the model ended "
            "them[/yellow]"
        )
    if result.valid is None:
        return
    if valid_only:
        err.print(
            f"{len(result.records)} valid records of {result.sampled} sampled (acceptance "
            f"rate {result.acceptance_rate:.1%}); validators: {result.validators}"
        )
        return
    err.print(
        f"{sum(result.valid)} of {len(result.valid)} records ({result.valid_share:.0%}) pass "
        f"the validators ({result.validators}); --valid-only keeps only those"
    )


@app.command()
def evaluate(
    path: Path = typer.Argument(
        ..., help="A run directory or an export (BASE/NAME or BASE/NAME/VERSION)."
    ),
    data: Path = typer.Option(
        ..., "--data", "-d", help="The real records: the run's training file for a held-out "
        "baseline.",
    ),
    synthetic: Optional[Path] = typer.Option(
        None, "--synthetic", help="Evaluate these records (one per line) instead of generating."
    ),
    count: int = typer.Option(1000, "--count", "-n", min=1, max=MAX_RECORDS,
                              help="Records to generate."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**62, help="Seed of generation."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 is greedy."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Run directory: best or latest."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write a self-contained HTML report here."
    ),
    min_quality: Optional[float] = typer.Option(
        None, "--min-quality", min=0, max=100, help="Exit 1 when quality_score is lower."
    ),
    min_valid: Optional[float] = typer.Option(
        None, "--min-valid", min=0, max=1, help="Exit 1 when valid_share is lower."
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Score generated records: validity, fidelity (quality_score), memorisation."""
    _require("evaluate", tensorflow=synthetic is None)
    from compiler.diagnostics import Diagnostic, KeraspecError

    if checkpoint not in ("best", "latest"):
        raise typer.BadParameter("expected best or latest", param_hint="--checkpoint")
    if not math.isfinite(temperature):
        raise typer.BadParameter(f"expected a finite number >= 0, received {temperature}",
                                 param_hint="--temperature")
    if output is not None and not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise _fail([Diagnostic("error", "report_dir", "expected an existing directory for "
                                "the report, received one that does not exist", "--output",
                                str(output))])
    if output is not None and output.is_dir():
        raise _fail([Diagnostic("error", "report_path", "expected a file path for the HTML "
                                "report, received a directory", "--output", str(output))])
    from compiler.evaluate import evaluate as evaluate_records, write_html

    try:
        result = evaluate_records(path, data, synthetic=synthetic, count=count, seed=seed,
                                  temperature=temperature, checkpoint=checkpoint)
    except KeraspecError as e:
        raise _fail(e.diagnostics)
    if output is not None:
        write_html(result, str(output))
    if fmt is TextOrJson.json:
        typer.echo(json.dumps({**result.to_dict(), "report": None if output is None
                               else str(output)}, indent=2, ensure_ascii=False))
    else:
        _print_evaluation(result, output)
    low = []
    if min_quality is not None and result.quality_score < min_quality:
        low.append(("--min-quality", f"quality_score >= {min_quality:g}",
                    f"{result.quality_score:.1f}"))
    if min_valid is not None and (result.valid_share or 0.0) < min_valid:
        low.append(("--min-valid", f"valid_share >= {min_valid:g}",
                    f"{result.valid_share}"))
    if low:
        raise _fail([Diagnostic("error", "below_threshold", f"expected {want}, received {got}",
                                flag, str(path)) for flag, want, got in low])


def _print_evaluation(result: Any, output: Optional[Path]) -> None:
    from rich.table import Table

    console = _console()

    def pct(value: Optional[float]) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def num(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=f"[bold]{result.name}[/bold] ← {result.source}"
                  + (f" (step {result.step})" if result.step is not None else ""),
                  title_justify="left")
    table.add_column("")
    table.add_column("synthetic", justify="right")
    if result.baseline is not None:
        table.add_column("held-out real", justify="right")
    sets = [result.synthetic_scores] + ([result.baseline] if result.baseline else [])
    measures = [
        ("records", lambda s: f"{s.records:,}"),
        ("with the field count", lambda s: f"{s.well_formed:,}"),
        ("valid_share", lambda s: pct(s.valid_share)),
        ("quality_score (0-100)", lambda s: f"{s.quality_score:.1f}"),
        ("  column shapes", lambda s: num(s.column_shapes)),
        ("  column pair trends", lambda s: num(s.column_pair_trends)),
        ("memorized_share", lambda s: pct(s.memorized_share)),
        ("distance to closest record, median", lambda s: num((s.dcr or {}).get("median"))),
    ]
    for label, show in measures:
        table.add_row(label, *(show(s) for s in sets))
    console.print(table)
    columns = Table(show_header=True, header_style="bold")
    for column in ("column", "rule", "failures", "shape", "held-out"):
        columns.add_column(column)
    for c in result.columns:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(c.failures.items())) or "0"
        columns.add_row(c.name, c.rule or f"{c.kind} (field count only)", failures,
                        num(c.score), num(c.baseline_score))
    console.print(columns)
    if result.validators:
        console.print(f"validators: {result.validators}")
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if output is not None:
        console.print(f"report: {output}")


@app.command()
def export(
    source: Path = typer.Argument(..., help="A run directory, or a spec with --weights."),
    output: Path = typer.Option(..., "--output", "-o", help="The model base directory (BASE)."),
    version: Optional[int] = typer.Option(
        None, "--version", min=1, max=INT32,
        help="Version to write (default: the next free one).",
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default: the spec's)."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="With a spec: a TensorFlow checkpoint prefix or Keras .h5 file."
    ),
    tokenizer: Optional[Path] = typer.Option(
        None, "--tokenizer", help="With --weights: a directory holding tokenizer.json."
    ),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Run directory: best or latest."),
    serving_root: str = typer.Option(
        "/models", "--serving-root", help="Where BASE is mounted in TF Serving (models.config)."
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Export a trained model as BASE/NAME/VERSION, a SavedModel TF Serving loads and serves."""
    _require("export")
    from compiler.diagnostics import KeraspecError

    if checkpoint not in ("best", "latest"):
        raise typer.BadParameter("expected best or latest", param_hint="--checkpoint")
    if weights is None and not source.is_dir():
        raise typer.BadParameter(
            f"expected a run directory (or a spec with --weights), received {source}",
            param_hint="SOURCE",
        )
    spec_source: Any = source
    if weights is not None:
        spec_source = _load_or_exit(source, None)
    from compiler.export import export_saved_model

    try:
        report = export_saved_model(
            spec_source,
            output,
            version=version,
            name=name,
            weights=weights,
            tokenizer_dir=None if tokenizer is None else str(tokenizer),
            checkpoint=checkpoint,
            serving_root=serving_root,
        )
    except KeraspecError as e:
        raise _fail(e.diagnostics)
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    console = _console()
    console.print(
        f"exported [bold]{report.name}[/bold] version {report.version} to {report.path} "
        f"({report.size_bytes / 1e6:.1f} MB; logits verified, max difference "
        f"{report.max_logit_difference:.2g})"
    )
    if report.checkpoint is not None:
        console.print(f"from the run's {report.checkpoint} checkpoint, step {report.step}")
    _print_signatures(console, report.signatures)
    console.print(f"listed in {report.models_config}")
    console.print(f"server-side batching: --enable_batching --batching_parameters_file="
                  f"{report.batching_parameters}")


def _print_signatures(console: "Console", signatures: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for column in ("signature", "", "name", "dtype", "shape"):
        table.add_column(column)
    for signature, info in signatures.items():
        first = True
        for side in ("inputs", "outputs"):
            for tensor, (dtype, shape) in info[side].items():
                shown = "?" if shape is None else str(tuple(shape))
                table.add_row(signature if first else "", side[:-1], tensor, dtype, shown)
                first = False
    console.print(table)


@app.command()
def inspect(
    path: Path = typer.Argument(
        ..., help="An export (BASE/NAME or BASE/NAME/VERSION) or a run directory."
    ),
    spec: bool = typer.Option(False, "--spec", metavar=FLAG, help="Also print the resolved spec."),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Show an export (signatures, version, size) or a run (step, checkpoints, report)."""
    from compiler.diagnostics import Diagnostic, KeraspecError
    from compiler.rundir import RunDir, inspect_run

    if RunDir(str(path)).exists():  # a run directory: no TensorFlow needed
        try:
            run = inspect_run(RunDir(str(path)))
        except KeraspecError as e:
            raise _fail(e.diagnostics)
        if fmt is TextOrJson.json:
            typer.echo(json.dumps(run, indent=2))
        else:
            _print_run(run, spec)
        return
    _require("inspect")
    from compiler.export import inspect_export

    try:
        info = inspect_export(path)
    except KeraspecError as e:
        raise _fail(e.diagnostics)
    if info is None:
        raise _fail(
            [Diagnostic("error", "not_an_export", "expected BASE/NAME or BASE/NAME/VERSION "
                        "holding saved_model.pb, received neither", "", str(path))]
        )
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(info, indent=2))
        return
    console = _console()
    console.print(
        f"[bold]{info['name']}[/bold] version {info['version']}  {info['path']}  "
        f"{info['size_bytes'] / 1e6:.1f} MB"
        + (f"  trained {info['step']} steps" if info.get("step") is not None else "")
    )
    _print_signatures(console, info["signatures"])
    if spec and info.get("spec"):
        console.print("spec:")
        typer.echo(info["spec"], nl=False)


def _print_run(run: dict[str, Any], spec: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(title=f"[bold]{escape(str(run['name']))}[/bold] run {escape(run['path'])}",
                  title_justify="left", show_header=False)
    table.add_column("", style="cyan")
    table.add_column("")
    rows = [
        ("corpus", f"{run['data']} (sha256 {str(run['data_sha256'])[:12]}…)"),
        ("seed, unit", f"{run['seed']}, {run['unit']}"),
        ("validators", str(run["validators"] or "none")),
    ]
    for which, c in run["checkpoints"].items():
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in (c.get("metrics") or {}).items()
                            if isinstance(v, (int, float)))
        rows.append((f"{which} checkpoint", f"step {c['step']} (epoch {c['epoch']})"
                     + (f": {metrics}" if metrics else "")))
    if not run["checkpoints"]:
        rows.append(("checkpoints", "none yet"))
    report = run["report"]
    if report:
        rows.append(("last report", f"stopped by {report['stopped_by']} after {report['epochs']} "
                     f"epochs, {report['steps']} steps, {report['wall_time'] or 0:.0f} s"))
        if report.get("epsilon") is not None:
            rows.append(("privacy", f"epsilon {report['epsilon']:.4g}, delta "
                         f"{report['delta']:.3g}"))
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row))
    console.print(table)
    if spec:
        console.print("spec:")
        typer.echo(run["spec"], nl=False)


def main() -> None:
    """Console entry point: no traceback reaches the user unless --debug is given."""
    try:
        app()
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if _SETTINGS.debug:
            raise
        print(
            f"keraspec: internal error: {type(e).__name__}: {e}\n"
            "(rerun with --debug, e.g. keraspec --debug validate ..., for a traceback, and "
            "please report it)",
            file=sys.stderr,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()

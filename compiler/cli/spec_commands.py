"""Commands of the spec half: validate, schema, explain, templates, render, compile,
privacy, diff. validate, schema, explain, templates and render never import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from compiler.cli.app import (
    _EXTRA_HINT,
    FLAG,
    INT32,
    MAX_EXAMPLES,
    SPEC_SUFFIXES,
    DiffFormat,
    SetOption,
    TextOrJson,
    ValidateFormat,
    YamlOrJson,
    _fail,
    _load_or_exit,
    _require,
    _spec_limits,
    app,
)
from compiler.cli.output import (
    _console,
    _failed,
    _print_diagnostics,
    _print_markdown,
    _report,
    github_annotation,
)


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


@app.command()
def validate(
    ctx: typer.Context,
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
        None,
        "--examples",
        min=1,
        max=MAX_EXAMPLES,
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
    limits = _spec_limits(ctx)
    results = [validate_spec(f, overrides or (), **limits) for f in files]
    if examples is not None:
        from compiler.privacy.accounting import delta_diagnostic

        for r in results:
            found = None if r.spec is None else delta_diagnostic(r.spec, examples, source=r.source)
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


@app.command()
def schema(
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Write to this file (into keraspec.schema.json, or report.schema.json, for a "
        "directory) instead of standard output.",
    ),
    report: bool = typer.Option(
        False, "--report", help="The schema of a run's report.json instead of a spec's."
    ),
) -> None:
    """Print the JSON Schema of spec files (or, with --report, of a run's report.json)."""
    from compiler.files import write_atomic
    from compiler.lang.schema import SCHEMA_FILE, schema_text

    if report:
        from compiler.training.report import REPORT_SCHEMA_FILE, report_schema_text

        text, name = report_schema_text(), REPORT_SCHEMA_FILE
    else:
        text, name = schema_text(), SCHEMA_FILE
    if output is None:
        typer.echo(text, nl=False)
    else:
        if output.is_dir():
            output = output / name
        write_atomic(output, text)
        _console(stderr=True).print(f"wrote {output}")


@app.command()
def explain(
    path: str = typer.Argument(
        "", help="A field's dotted path, e.g. training.privacy.noise_multiplier."
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Document a spec field: its description, type, default and fields, from the schema.

    Like kubectl explain: the type with its ranges or allowed values, the default, the
    description and, for a block, its fields (training.privacy.noise_multiplier,
    model.layers.units, model.params.rnn_units). No TensorFlow.
    """
    from compiler.diagnostics import KeraspecError
    from compiler.lang.explain import explain as explain_path

    try:
        found = explain_path(path)
    except KeraspecError as e:
        raise _fail(e.diagnostics) from e
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
    """List the templates with their parameters and defaults.

    Each param with its full type (ranges, allowed values), default and description.
    """
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
    ctx: typer.Context,
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
    """Print the fully expanded spec: template applied, defaults filled.

    The output validates to the same spec. With -o, writes the file atomically; YAML gets a
    `# yaml-language-server: $schema=...` line pointing at the schema relative to FILE.
    """
    from compiler.lang.render import render as render_spec

    resolved = _load_or_exit(ctx, spec, overrides)
    text = render_spec(resolved, fmt.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    from compiler.files import write_atomic

    if fmt is YamlOrJson.yaml:
        text = _schema_line(schema_path, output) + "\n" + text
    write_atomic(output, text)
    _console(stderr=True).print(f"wrote {output}")


def _schema_line(schema_path: Path, output: Path) -> str:
    """The first line of a YAML spec written to `output`: editors with the YAML language
    server validate the file against the schema it points at, relative to the file."""
    relative = os.path.relpath(schema_path.resolve(), output.resolve().parent)
    return f"# yaml-language-server: $schema={Path(relative).as_posix()}"


@app.command("compile")
def compile_command(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="The spec file."),
    overrides: Optional[List[str]] = SetOption,
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="Write model.json, optimizer.json, spec.resolved.yaml and summary.txt here.",
    ),
    examples: Optional[int] = typer.Option(
        None,
        "--examples",
        min=1,
        max=MAX_EXAMPLES,
        help="Training examples, for a DP spec's privacy guarantee.",
    ),
) -> None:
    """Build and compile the Keras model; print its summary.

    The summary: layers, output shapes, parameters, optimizer, loss, privacy. With -o,
    writes model.json (Keras to_json), optimizer.json, spec.resolved.yaml and summary.txt,
    all or nothing. With --examples, a DP spec's epsilon is computed and a weak guarantee
    is warned about.
    """
    _require("compile")
    from compiler.diagnostics import KeraspecError

    resolved = _load_or_exit(ctx, spec, overrides)
    from compiler.build import compile_spec  # imports TensorFlow

    try:
        compiled = compile_spec(resolved, examples=examples)
        if output is not None:
            from compiler.artifacts import write_compiled

            write_compiled(compiled, output)
    except KeraspecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(1) from e
    _print_diagnostics(_console(stderr=True), compiled.warnings)
    typer.echo(compiled.summary_text(), nl=False)
    if output is not None:
        _console(stderr=True).print(f"wrote {output}/")


@app.command()
def privacy(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="The spec file (with a training.privacy block)."),
    examples: int = typer.Option(
        ..., "--examples", min=1, max=MAX_EXAMPLES, help="Number of training examples."
    ),
    epochs: Optional[float] = typer.Option(
        None, "--epochs", min=0, max=INT32, help="Default: training.epochs."
    ),
    delta: Optional[float] = typer.Option(
        None, "--delta", help="Default: privacy.delta, else examples^-1.1."
    ),
    target_epsilon: Optional[float] = typer.Option(
        None, "--target-epsilon", help="Solve for the noise multiplier reaching this epsilon."
    ),
    overrides: Optional[List[str]] = SetOption,
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Compute the (epsilon, delta) guarantee of a DP spec's training run.

    Under both accountants (PLD and RDP; the spec's is the one that counts), or the noise
    multiplier that reaches --target-epsilon, with the sampling, the delta rule and the
    assumptions. Warns when delta is at least 1 / examples.
    """
    _require("privacy")
    from compiler.diagnostics import SpecError
    from compiler.privacy.accounting import (
        ACCOUNTANT_NAMES,
        delta_diagnostic,
        delta_warning,
        epsilon_warning,
        privacy_report,
        weak_privacy_warning,
    )

    resolved = _load_or_exit(ctx, spec, overrides)
    try:
        report = privacy_report(
            resolved,
            examples,
            epochs=epochs,
            delta=delta,
            target_epsilon=target_epsilon,
            compare=True,
        )
    except SpecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(1) from e
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
    console.print(
        f"epsilon: {shown(report.epsilon)} at delta {report.delta:.3g} "
        f"({report.accountant}, the spec's accountant)"
    )
    for name, value in report.epsilons.items():
        console.print(f"  {ACCOUNTANT_NAMES[name]}: {shown(value)}")
    console.print(f"sampling: {report.sampling}, {report.steps} steps")
    console.print("assumptions:")
    for a in report.assumptions:
        console.print(escape(f"  - {a}"))
    problems = [
        d
        for d in (
            weak_privacy_warning(resolved, report),
            delta_diagnostic(resolved, examples, delta),
        )
        if d is not None
    ]
    if problems:
        _print_diagnostics(_console(stderr=True), problems)


@app.command("diff")
def diff_command(
    old: str = typer.Argument(..., help="The old spec: a file, or REV:PATH from git."),
    new: str = typer.Argument(..., help="The new spec: a file, or REV:PATH from git."),
    examples: Optional[int] = typer.Option(
        None,
        "--examples",
        min=1,
        max=MAX_EXAMPLES,
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
            load_revision(old),
            load_revision(new),
            old_name=old,
            new_name=new,
            examples=examples,
        )
    except SpecError as e:
        _print_diagnostics(_console(stderr=True), e.diagnostics)
        raise typer.Exit(2) from e
    except ImportError as e:
        from rich.markup import escape

        _console(stderr=True).print(escape(f"keraspec diff --examples needs {_EXTRA_HINT} ({e})"))
        raise typer.Exit(2) from e
    if fmt is DiffFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif fmt is DiffFormat.markdown:
        typer.echo(render_markdown(result), nl=False)
    else:
        _print_markdown(render_markdown(result))
    raise typer.Exit(0 if result.equivalent else 1)


@app.command("import")
def import_command(
    model: Path = typer.Argument(
        ...,
        help="A Keras model: its JSON (to_json), a .keras archive, a tf-keras .h5 file or a "
        "SavedModel directory written by Keras.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The spec file to write."),
    name: Optional[str] = typer.Option(None, "--name", help="The spec's name."),
    no_templates: bool = typer.Option(
        False, "--no-templates", help="The explicit layer list, even for a template instance."
    ),
    schema_path: Path = typer.Option(
        Path("schema/keraspec.schema.json"),
        "--schema",
        help="The schema the file's yaml-language-server line points at.",
    ),
    run_dir: Optional[Path] = typer.Option(
        None,
        "--run-dir",
        help="Also write the model's weights as a run directory (export, generate, "
        "evaluate and inspect take it).",
    ),
    tokenizer: Optional[Path] = typer.Option(
        None, "--tokenizer", help="With --run-dir: keraspec's tokenizer.json for the model."
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="With --run-dir: a corpus to build the tokenizer from."
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Report format."),
) -> None:
    """Write the spec of an existing Keras model, read from its config only.

    Nothing in the file runs: no unpickling, no Lambda bytecode, no module it names is
    imported. A layer or setting the spec language cannot express is an error at its
    place in the file, and nothing is written. JSON and .keras need no TensorFlow.
    """
    from compiler.diagnostics import KeraspecError
    from compiler.files import write_atomic
    from compiler.importing import import_document
    from compiler.lang.parse import validate as validate_spec
    from compiler.lang.render import dump_yaml

    try:
        document = import_document(model, name=name, templates=not no_templates)
    except KeraspecError as e:
        raise _fail(e.diagnostics) from e
    text = dump_yaml(document, _schema_line(schema_path, output))
    result = validate_spec(text, name=str(output))
    if not result.ok:  # a bug if it happens: the import must produce a valid spec
        raise _fail(result.diagnostics)
    imported = None
    if run_dir is not None:
        _require("import --run-dir")
        from compiler.importing.weights import import_run

        try:
            imported = import_run(
                model,
                run_dir,
                tokenizer=tokenizer,
                data=data,
                name=name,
                templates=not no_templates,
            )
        except KeraspecError as e:
            raise _fail(e.diagnostics) from e
    write_atomic(output, text)
    template = document["model"].get("template")
    summary = {
        "spec": str(output),
        "template": template,
        "params": document["model"].get("params", {}) if template else None,
        "layers": len(result.spec.model.layers) if result.spec is not None else None,
        "run_dir": imported.run_dir if imported is not None else None,
        "parameters": imported.parameters if imported is not None else None,
    }
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        what = f"template {template}" if template else f"{summary['layers']} layers"
        _console(stderr=True).print(f"wrote {output} ({what})")
        if imported is not None:
            _console(stderr=True).print(
                f"wrote {imported.run_dir}: {imported.parameters:,} parameters, no training "
                "(and so no DP) in keraspec"
            )

"""What the commands print: diagnostics, tables and reports, with rich (on a terminal) or
plain text.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from compiler.diagnostics import Diagnostic
    from compiler.lang.parse import Validation


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


def _failed(result: "Validation", strict: bool) -> bool:
    return not result.ok or (strict and bool(result.diagnostics))


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

    return [
        escape(c.strip().replace("\\|", "|").strip("`"))
        for c in line.strip().strip("|").split(" | ")
    ]


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
                console.print(
                    f"already complete at step {p.step} (epoch {p.epoch}/"
                    f"{p.epochs}); nothing to do"
                )
            else:
                console.print(f"resuming from step {p.step} (epoch {p.epoch}/{p.epochs})")
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in p.logs.items() if isinstance(v, float))
        if p.epsilon is not None:
            metrics += f"  ε {p.epsilon:.3g}"
        if self.bar is None:
            return
        if not self.bar.console.is_terminal and p.event == "epoch":
            # A pipe or a log file keeps no redrawn bar: one line per epoch instead.
            self.bar.console.print(
                f"epoch {p.epoch}/{p.epochs}  step {p.step}/" f"{p.total_steps}  {metrics}"
            )
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
    if result.constrained:
        masked = sum(result.masked_mass) / max(len(result.masked_mass), 1)
        err.print(
            f"{len(result.records)} records, constrained to the validators "
            f"({result.validators}); {result.sampled - len(result.records)} resampled; the "
            f"mask removed {masked:.1%} of a record's probability on average"
            + (" (a weak model needs much masking)" if masked > 0.5 else "")
        )
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


def constrained_summary(generation: dict[str, Any]) -> str:
    """One line on an evaluation's constrained generation: masking and resampling."""
    mean = generation["masked_mass_mean"]
    line = (
        f"generation constrained to the validators: the mask removed {mean:.1%} of a "
        f"record's probability on average (median {generation['masked_mass_median']:.1%}); "
        f"{generation['resampled']} of {generation['sampled']} records resampled"
    )
    if generation.get("resampled_rules"):
        line += f" (not exact: {'; '.join(generation['resampled_rules'])})"
    return line + ("; a model that needs this much masking is weak" if mean > 0.5 else "")


def _print_evaluation(result: Any, output: Optional[Path]) -> None:
    from rich.table import Table

    console = _console()

    def pct(value: Optional[float]) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def num(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(
        title=f"[bold]{result.name}[/bold] ← {result.source}"
        + (f" (step {result.step})" if result.step is not None else ""),
        title_justify="left",
    )
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
        columns.add_row(
            c.name,
            c.rule or f"{c.kind} (field count only)",
            failures,
            num(c.score),
            num(c.baseline_score),
        )
    console.print(columns)
    if result.validators:
        console.print(f"validators: {result.validators}")
    generation = result.generation or {}
    if generation.get("constrained"):
        console.print(constrained_summary(generation))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if output is not None:
        console.print(f"report: {output}")


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


def _print_run(run: dict[str, Any], spec: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(
        title=f"[bold]{escape(str(run['name']))}[/bold] run {escape(run['path'])}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("", style="cyan")
    table.add_column("")
    rows = [
        ("corpus", f"{run['data']} (sha256 {str(run['data_sha256'])[:12]}…)"),
        ("seed, unit", f"{run['seed']}, {run['unit']}"),
        ("validators", str(run["validators"] or "none")),
    ]
    for which, c in run["checkpoints"].items():
        metrics = ", ".join(
            f"{k} {v:.4g}"
            for k, v in (c.get("metrics") or {}).items()
            if isinstance(v, (int, float))
        )
        rows.append(
            (
                f"{which} checkpoint",
                f"step {c['step']} (epoch {c['epoch']})" + (f": {metrics}" if metrics else ""),
            )
        )
    if not run["checkpoints"]:
        rows.append(("checkpoints", "none yet"))
    report = run["report"]
    if report:
        rows.append(
            (
                "last report",
                f"stopped by {report['stopped_by']} after {report['epochs']} "
                f"epochs, {report['steps']} steps, {report['wall_time'] or 0:.0f} s",
            )
        )
        if report.get("epsilon") is not None:
            rows.append(
                ("privacy", f"epsilon {report['epsilon']:.4g}, delta " f"{report['delta']:.3g}")
            )
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row))
    console.print(table)
    if spec:
        console.print("spec:")
        typer.echo(run["spec"], nl=False)

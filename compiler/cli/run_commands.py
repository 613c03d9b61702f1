"""Commands that train and use models: train, audit, generate, evaluate, export, inspect."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, List, Optional

import typer

from compiler.cli.app import (
    FLAG,
    INT32,
    MAX_INVALID,
    MAX_RECORDS,
    DataOption,
    EpochsOption,
    SetOption,
    TextOrJson,
    _fail,
    _load_or_exit,
    _require,
    app,
)
from compiler.cli.output import (
    _console,
    _print_diagnostics,
    _print_evaluation,
    _print_generation_summary,
    _print_report,
    _print_run,
    _print_signatures,
    _TrainProgress,
)


@app.command()
def train(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="The spec file."),
    data: Path = DataOption,
    output: Path = typer.Option(
        ..., "--output", "-o", help="Run directory (resumed when it holds this run)."
    ),
    epochs: Optional[int] = EpochsOption,
    max_steps: Optional[int] = typer.Option(
        None,
        "--max-steps",
        min=1,
        max=INT32,
        help="Stop after this many steps in total (across resumes).",
    ),
    checkpoint_every: Optional[int] = typer.Option(
        None,
        "--checkpoint-every",
        min=1,
        max=INT32,
        help="Also save the latest checkpoint every N steps.",
    ),
    overrides: Optional[List[str]] = SetOption,
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Report format."),
    cluster: Optional[str] = typer.Option(
        None,
        "--cluster",
        help="multi_worker: the workers' host:port addresses, comma-separated "
        "(the chief first); instead of TF_CONFIG.",
    ),
    task: Optional[int] = typer.Option(
        None,
        "--task",
        min=0,
        max=4096,
        help="multi_worker: this worker's index in --cluster.",
    ),
    tf_config: Optional[str] = typer.Option(
        None,
        "--tf-config",
        envvar="TF_CONFIG",
        metavar="JSON",
        help="multi_worker: the cluster and this worker's task as TensorFlow's TF_CONFIG "
        "(read from that variable when not given).",
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
        raise _fail(
            [
                Diagnostic(
                    "error",
                    "cluster_task",
                    f"expected --cluster and --task " f"together, received only {given}",
                    "",
                    "<arguments>",
                )
            ]
        )

    resolved = _load_or_exit(ctx, spec, overrides)
    distribution = resolved.training.distribution
    if cluster is not None and (distribution is None or distribution.strategy != "multi_worker"):
        strategy = "none" if distribution is None else distribution.strategy
        raise _fail(
            [
                Diagnostic(
                    "error",
                    "cluster_task",
                    "expected training.distribution."
                    f"strategy multi_worker with --cluster, received {strategy}",
                    "training.distribution",
                    str(spec),
                )
            ]
        )
    config = None
    multi_worker = distribution is not None and distribution.strategy == "multi_worker"
    if cluster is not None or (tf_config and multi_worker):
        from compiler.training.distribution import cluster_config, parse_tf_config

        try:
            if cluster is not None:
                addresses = [a.strip() for a in cluster.split(",") if a.strip()]
                config = cluster_config(addresses, task)
            else:
                config = parse_tf_config(tf_config)
        except KeraspecError as e:
            raise _fail(e.diagnostics) from e
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
            raise _fail(e.diagnostics) from e
        except KeyboardInterrupt:
            progress.stop()
            _console(stderr=True).print(
                f"aborted by a second Ctrl-C without saving; {output} resumes from its latest "
                "checkpoint: run the same command again"
            )
            raise typer.Exit(130) from None
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
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="The spec file (DP or not)."),
    data: Path = DataOption,
    output: Path = typer.Option(
        ..., "--output", "-o", help="Audit directory: audit corpus, run/ and audit.json."
    ),
    canaries: int = typer.Option(
        1000,
        "--canaries",
        min=2,
        max=10**6,
        help="Canaries to make (each trained on with probability 1/2).",
    ),
    epochs: Optional[int] = EpochsOption,
    max_steps: Optional[int] = typer.Option(
        None, "--max-steps", min=1, max=INT32, help="Stop training after this many steps."
    ),
    confidence: float = typer.Option(
        0.95, "--confidence", min=0.5, max=0.9999, help="Confidence of the lower bound."
    ),
    white_box: bool = typer.Option(
        False,
        "--white-box",
        help="Gradient canaries through the DP step itself (DP specs, fast implementation).",
    ),
    overrides: Optional[List[str]] = SetOption,
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Report format."),
) -> None:
    """Audit a spec's privacy empirically: canaries, one training run, an epsilon lower bound.

    Black-box (default): record canaries in the corpus, scored by the trained model's loss.
    White-box: gradient canaries sampled, clipped and noised by the run's own DP step,
    scored by the noisy sums it released; it catches a step that adds too little noise,
    skips clipping or does not sample as the accountant assumes.

    Exits 0 when the lower bound is within the claimed epsilon (or the spec claims none),
    1 on bad input or when the lower bound exceeds the claimed epsilon (the guarantee is
    broken).
    """
    _require("train")
    from compiler.diagnostics import KeraspecError
    from compiler.evaluate.audit import audit as audit_spec

    resolved = _load_or_exit(ctx, spec, overrides)
    with _TrainProgress(enabled=fmt is TextOrJson.text) as progress:
        try:
            report = audit_spec(
                resolved,
                data,
                output,
                canaries=canaries,
                epochs=epochs,
                max_steps=max_steps,
                confidence=confidence,
                white_box=white_box,
                callback=progress.update,
            )
        except KeraspecError as e:
            progress.stop()
            raise _fail(e.diagnostics) from e
    if fmt is TextOrJson.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console = _console()
        claimed = (
            "none (no DP)" if report.claimed_epsilon is None else (f"{report.claimed_epsilon:.4g}")
        )
        exposure = report.exposure
        lines = [
            ("mode", report.mode),
            ("claimed epsilon", claimed),
            (
                f"epsilon lower bound ({report.confidence:.0%} confidence, delta "
                f"{report.delta:.3g})",
                f"{report.epsilon_lower_bound:.4g} ({report.analysis} analysis, score "
                f"{report.score})",
            ),
            ("canaries (trained on)", f"{report.canaries} ({report.included})"),
            ("guesses (correct)", f"{report.guesses} ({report.correct})"),
            ("the most the guessing analysis could show", f"{report.most_provable:.4g}"),
        ]
        if exposure:
            lines.append(
                (
                    "exposure, bits: mean / max of possible",
                    f"{exposure['mean']:.2f} / {exposure['max']:.2f} of "
                    f"{exposure['possible']:.2f}",
                )
            )
        lines.append(("audit", f"{output}/audit.json, {output}/audit.html"))
        for label, value in lines:
            console.print(f"{label}: {value}", highlight=False)
        for note in report.notes:
            console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if report.broken:
        _console(stderr=True).print(
            f"[bold red]error:[/bold red] the privacy guarantee is broken: the audit's lower "
            f"bound {report.epsilon_lower_bound:.4g} exceeds the claimed epsilon "
            f"{report.claimed_epsilon:.4g} at {report.confidence:.0%} confidence; clipping, "
            "noise, sampling or accounting does not do what the report says"
        )
        raise typer.Exit(1)


@app.command()
def generate(
    path: Path = typer.Argument(
        ..., help="An export (BASE/NAME or BASE/NAME/VERSION) or a run directory."
    ),
    count: int = typer.Option(
        5, "--count", "-n", min=1, max=MAX_RECORDS, help="Records to generate."
    ),
    prompt: str = typer.Option("", "--prompt", help="Text each record starts with."),
    max_new_tokens: Optional[int] = typer.Option(
        None,
        "--max-new-tokens",
        min=1,
        max=INT32,
        help="Default: the longest training record's tokens and a quarter more.",
    ),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 is greedy."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, same records."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Run directory: best or latest."),
    valid_only: bool = typer.Option(
        False,
        "--valid-only",
        metavar=FLAG,
        help="Keep sampling until COUNT records pass the validators.",
    ),
    max_invalid: int = typer.Option(
        MAX_INVALID,
        "--max-invalid",
        min=0,
        max=10**9,
        help="Give up after this many invalid records (--valid-only, or records "
        "constrained generation resamples).",
    ),
    unconstrained: bool = typer.Option(
        False,
        "--unconstrained",
        metavar=FLAG,
        help="The raw model: no mask from the validators.",
    ),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Generate records from an export (in-graph generate signature) or a run directory.

    Where the run has validators, every record passes them by construction: the tokens
    that would break a rule are masked before each sample."""
    _require("generate")
    from compiler.diagnostics import KeraspecError

    if checkpoint not in ("best", "latest"):
        raise typer.BadParameter("expected best or latest", param_hint="--checkpoint")
    if not math.isfinite(temperature):
        raise typer.BadParameter(
            f"expected a finite number >= 0, received {temperature}", param_hint="--temperature"
        )
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise typer.BadParameter(f"expected a 64-bit integer, received {seed}", param_hint="--seed")
    from compiler.generation import ValidRecordsExhausted
    from compiler.generation import generate as generate_records

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
            constrained=not unconstrained,
        )
    except ValidRecordsExhausted as e:
        result, exhausted = e.generated, e  # print what was found, then the error
    except KeraspecError as e:
        raise _fail(e.diagnostics) from e
    if fmt is TextOrJson.json:
        payload = {
            **dataclasses.asdict(result),
            "valid_share": result.valid_share,
            "acceptance_rate": result.acceptance_rate,
            "constrained": result.constrained,
        }
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        for record in result.records:
            typer.echo(record)
        _print_generation_summary(result, valid_only)
    if exhausted is not None:
        raise _fail(exhausted.diagnostics)


@app.command()
def evaluate(
    path: Path = typer.Argument(
        ..., help="A run directory or an export (BASE/NAME or BASE/NAME/VERSION)."
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        help="The real records: the run's training file for a held-out " "baseline.",
    ),
    synthetic: Optional[Path] = typer.Option(
        None, "--synthetic", help="Evaluate these records (one per line) instead of generating."
    ),
    count: int = typer.Option(
        1000, "--count", "-n", min=1, max=MAX_RECORDS, help="Records to generate."
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=2**62, help="Seed of generation."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="0 is greedy."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="Run directory: best or latest."),
    unconstrained: bool = typer.Option(
        False,
        "--unconstrained",
        metavar=FLAG,
        help="Evaluate the raw model: generate with no mask from the validators.",
    ),
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
    """Score generated records: validity, fidelity (quality_score), memorisation.

    Generates --count records (constrained as generate's are, unless --unconstrained), or
    reads them from --synthetic, and scores them against the real records of --data and the
    run's held-out records: valid_share, quality_score (SDMetrics, 0-100),
    memorized_share, the distance to the closest record, per-column rules and failures.
    -o writes a self-contained HTML report. Exits 1 below --min-quality or --min-valid
    (for CI). Needs the evaluate extra.
    """
    _require("evaluate", tensorflow=synthetic is None)
    from compiler.diagnostics import Diagnostic, KeraspecError

    if checkpoint not in ("best", "latest"):
        raise typer.BadParameter("expected best or latest", param_hint="--checkpoint")
    if not math.isfinite(temperature):
        raise typer.BadParameter(
            f"expected a finite number >= 0, received {temperature}", param_hint="--temperature"
        )
    if output is not None and not (output.parent if str(output.parent) else Path(".")).is_dir():
        raise _fail(
            [
                Diagnostic(
                    "error",
                    "report_dir",
                    "expected an existing directory for "
                    "the report, received one that does not exist",
                    "--output",
                    str(output),
                )
            ]
        )
    if output is not None and output.is_dir():
        raise _fail(
            [
                Diagnostic(
                    "error",
                    "report_path",
                    "expected a file path for the HTML " "report, received a directory",
                    "--output",
                    str(output),
                )
            ]
        )
    from compiler.evaluate import evaluate as evaluate_records
    from compiler.evaluate import write_html

    try:
        result = evaluate_records(
            path,
            data,
            synthetic=synthetic,
            count=count,
            seed=seed,
            temperature=temperature,
            checkpoint=checkpoint,
            constrained=not unconstrained,
        )
    except KeraspecError as e:
        raise _fail(e.diagnostics) from e
    if output is not None:
        write_html(result, str(output))
    if fmt is TextOrJson.json:
        typer.echo(
            json.dumps(
                {**result.to_dict(), "report": None if output is None else str(output)},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        _print_evaluation(result, output)
    low = []
    if min_quality is not None and result.quality_score < min_quality:
        low.append(
            ("--min-quality", f"quality_score >= {min_quality:g}", f"{result.quality_score:.1f}")
        )
    if min_valid is not None and (result.valid_share or 0.0) < min_valid:
        low.append(("--min-valid", f"valid_share >= {min_valid:g}", f"{result.valid_share}"))
    if low:
        raise _fail(
            [
                Diagnostic(
                    "error", "below_threshold", f"expected {want}, received {got}", flag, str(path)
                )
                for flag, want, got in low
            ]
        )


@app.command()
def export(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="A run directory, or a spec with --weights."),
    output: Path = typer.Option(..., "--output", "-o", help="The model base directory (BASE)."),
    version: Optional[int] = typer.Option(
        None,
        "--version",
        min=1,
        max=INT32,
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
    """Export a trained model as BASE/NAME/VERSION, a SavedModel TF Serving loads and serves.

    The next free version (an existing one is never overwritten), listed in
    BASE/models.config and BASE/batching_parameters.txt; it says which checkpoint (best or
    latest) and step it exported. `keraspec export SPEC --weights CHECKPOINT -o BASE`
    exports weights trained elsewhere (a TensorFlow checkpoint prefix or a Keras .h5).
    """
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
        spec_source = _load_or_exit(ctx, source, None)
    from compiler.export.savedmodel import export_saved_model

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
        raise _fail(e.diagnostics) from e
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
    console.print(
        f"server-side batching: --enable_batching --batching_parameters_file="
        f"{report.batching_parameters}"
    )


@app.command()
def inspect(
    path: Path = typer.Argument(
        ..., help="An export (BASE/NAME or BASE/NAME/VERSION) or a run directory."
    ),
    spec: bool = typer.Option(False, "--spec", metavar=FLAG, help="Also print the resolved spec."),
    fmt: TextOrJson = typer.Option(TextOrJson.text, "--format", "-f", help="Output format."),
) -> None:
    """Show an export (signatures, version, size) or a run (step, checkpoints, report).

    An export: its signatures with their inputs and outputs (names, dtypes, shapes), version,
    size on disk and training step, its files checked against their digests. A run
    directory (no TensorFlow needed): the corpus and its digest, seed, validators, latest
    and best checkpoints with step, epoch and metrics, the last report and privacy.
    """
    from compiler.diagnostics import Diagnostic, KeraspecError
    from compiler.training.rundir import RunDir, inspect_run

    if RunDir(str(path)).exists():  # a run directory: no TensorFlow needed
        try:
            run = inspect_run(RunDir(str(path)))
        except KeraspecError as e:
            raise _fail(e.diagnostics) from e
        if fmt is TextOrJson.json:
            typer.echo(json.dumps(run, indent=2))
        else:
            _print_run(run, spec)
        return
    _require("inspect")
    from compiler.export.opened import inspect_export

    try:
        info = inspect_export(path)
    except KeraspecError as e:
        raise _fail(e.diagnostics) from e
    if info is None:
        raise _fail(
            [
                Diagnostic(
                    "error",
                    "not_an_export",
                    "expected BASE/NAME or BASE/NAME/VERSION "
                    "holding saved_model.pb, received neither",
                    "",
                    str(path),
                )
            ]
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

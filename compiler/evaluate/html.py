"""The evaluation as one self-contained HTML file.

The page works offline: its plots are SDMetrics' plotly figures (synthetic against real, one
per column), drawn by plotly.js embedded in the page; there is no external script, style
sheet, font or image. Errors in the page's scripts are recorded on `<body data-errors>`, so
a headless browser can check the page drew without one.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from typing import Any, Optional

from compiler.evaluate.evaluation import NOT_A_GUARANTEE, Evaluation, Scores
from compiler.files import write_atomic

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1d2330; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; }
.sub { color: #5b6475; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; margin: 1em 0; }
.card { border: 1px solid #d8dce5; border-radius: 8px; padding: .8em 1.2em; min-width: 180px; }
.card .value { font-size: 1.9em; font-weight: 600; }
.card .label { color: #5b6475; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border-bottom: 1px solid #e3e6ec; padding: .35em .7em; text-align: left;
         vertical-align: top; }
th { background: #f5f6f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; }
pre { background: #f5f6f9; padding: 1em; overflow: auto; max-height: 30em; }
.note { background: #fff8e6; border-left: 4px solid #f0b429; padding: .6em 1em; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(500px, 1fr));
         gap: 1em; }
.plot { border: 1px solid #e3e6ec; border-radius: 8px; padding: .5em; }
"""

# Records what goes wrong in the page's scripts, for readers and for headless checks.
_ERRORS = """
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(String(e.message));
  document.body && document.body.setAttribute("data-errors", window.__errors.join(" | "));
});
"""


def write_html(evaluation: Evaluation, path: str) -> None:
    """Write the report to `path` atomically (a temporary file renamed into place)."""
    write_atomic(os.fspath(path), render_html(evaluation))


def render_html(evaluation: Evaluation) -> str:
    import plotly.offline

    e = evaluation
    plots = _plots(e)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>keraspec evaluate: {_h(e.name)}</title>",
        f"<style>{_STYLE}</style>",
        f"<script>{_ERRORS}</script>",
        f"<script>{plotly.offline.get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>{_h(e.name)}: synthetic records against real ones</h1>",
        f'<p class="sub">{_h(_provenance(e))}</p>',
        _cards(e),
        _scores_table(e),
        _privacy(e),
    ]
    if e.notes:
        parts.append("".join(f'<p class="note">{_h(n)}</p>' for n in e.notes))
    parts += [
        "<h2>Columns</h2>",
        f"<p>Validators: {_h(e.validators or 'none (the records are not delimited)')}.</p>",
        _columns_table(e),
        "<h2>Distributions</h2>",
        '<p class="sub">Each column, real training records against synthetic records that '
        "have the field count (a text column by its values' lengths).</p>",
        f'<div class="plots">{"".join(plots)}</div>',
        _failing(e),
        "<h2>Spec</h2>",
        f"<details><summary>The run's resolved spec</summary><pre>{_h(e.spec)}</pre>" "</details>",
        f'<p class="sub">{_h(NOT_A_GUARANTEE)}</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _provenance(e: Evaluation) -> str:
    where = f"{e.source}" + (f", step {e.step}" if e.step is not None else "")
    if e.generation:
        g = e.generation
        made = (
            f"{g['count']} records generated (seed {g['seed']}, temperature " f"{g['temperature']})"
        )
        if g.get("constrained"):
            made += (
                f", constrained to the validators (the mask removed "
                f"{100 * g['masked_mass_mean']:.1f}% of a record's probability on average; "
                f"{g['resampled']} of {g['sampled']} resampled)"
            )
        elif "constrained" in g:
            made += ", unconstrained (the raw model)"
    else:
        made = f"records read from {e.synthetic}"
    return f"{made} from {where}; real records from {e.data}."


def _cards(e: Evaluation) -> str:
    cards = [
        (
            "quality score",
            f"{e.quality_score:.1f}",
            "0-100, SDMetrics column shapes and pair " "trends",
        ),
        ("valid", _pct(e.valid_share), "pass the validators"),
        ("memorized", _pct(e.memorized_share), "exact copies of training records"),
    ]
    if e.baseline is not None:
        cards.append(
            (
                "held-out quality",
                f"{e.baseline.quality_score:.1f}",
                "real records the model never saw",
            )
        )
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{_h(v)}</div><div class="label">{_h(k)}</div>'
            f'<div class="sub">{_h(d)}</div></div>'
            for k, v, d in cards
        )
        + "</div>"
    )


def _scores_table(e: Evaluation) -> str:
    rows = [("synthetic", e.synthetic_scores)]
    if e.baseline is not None:
        rows.append(("held-out real (baseline)", e.baseline))
    head = (
        "records",
        "records",
        "with field count",
        "valid",
        "quality",
        "column shapes",
        "pair trends",
        "memorized",
        "DCR p5",
        "DCR median",
    )
    body = []
    for label, s in rows:
        body.append(
            "<tr>"
            + f"<td>{_h(label)}</td>"
            + "".join(f'<td class="num">{_h(v)}</td>' for v in _score_cells(s))
            + "</tr>"
        )
    table = (
        "<table><tr>"
        + "".join(f"<th>{_h(h)}</th>" for h in head)
        + "</tr>"
        + "".join(body)
        + "</table>"
    )
    if e.closer_than_holdout is not None:
        table += (
            f"<p>{_pct(e.closer_than_holdout)} of synthetic records are closer to a "
            "training record than 95% of held-out real records are (about 5% when the "
            "model copies nothing).</p>"
        )
    return "<h2>Scores</h2>" + table


def _score_cells(s: Scores) -> list[str]:
    dcr = s.dcr or {}
    return [
        str(s.records),
        str(s.well_formed),
        _pct(s.valid_share),
        f"{s.quality_score:.1f}",
        _num(s.column_shapes),
        _num(s.column_pair_trends),
        _pct(s.memorized_share),
        _num(dcr.get("p5")),
        _num(dcr.get("median")),
    ]


def _privacy(e: Evaluation) -> str:
    p = e.privacy
    if p and p.get("epsilon") is not None:
        sampling = p.get("sampling")
        method = sampling.get("method", "") if isinstance(sampling, dict) else ""
        text = (
            f"Trained with DP-SGD: ({p['epsilon']:.3g}, {p.get('delta', 0):.3g})-DP per "
            f"{p.get('privacy_unit', 'record')}, {p.get('accountant', '')} accountant, "
            f"{method} sampling."
        )
    else:
        text = "Not trained with DP: the model has no formal privacy guarantee."
    return (
        f'<h2>Privacy</h2><p>{_h(text)}</p><p class="note">This report shows statistics '
        "of the real records (plots, failing values): it is for the data's owner, and "
        "no DP guarantee covers it. Do not publish it.</p>"
    )


def _columns_table(e: Evaluation) -> str:
    head = ("column", "kind", "rule", "failures", "shape metric", "synthetic", "held-out")
    rows = []
    for c in e.columns:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(c.failures.items())) or "0"
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{_h(v)}</td>"
                for v in (c.name, c.kind, c.rule or "field count only", failures, c.metric or "")
            )
            + f'<td class="num">{_num(c.score)}</td><td class="num">{_num(c.baseline_score)}'
            "</td></tr>"
        )
    return (
        "<table><tr>"
        + "".join(f"<th>{_h(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows)
        + "</table>"
    )


def _failing(e: Evaluation) -> str:
    if not e.failing:
        return ""
    rows = "".join(
        f"<tr><td><code>{_h(f['record'])}</code></td><td>{_h(f['problem'])}</td>" "</tr>"
        for f in e.failing
    )
    return "<h2>Failing records</h2><table><tr><th>record</th><th>why</th></tr>" + rows + "</table>"


def _plots(e: Evaluation) -> list[str]:
    """One plotly figure per column, as a div and the script that draws it."""
    import numpy as np
    import plotly.utils
    from sdmetrics.visualization import get_column_plot

    real, synthetic = e.frames["real"], e.frames["synthetic"]
    out = []
    for i, column in enumerate(e.fidelity_columns):
        title = column.name + (" (length)" if column.kind == "text" else "")
        if not len(synthetic) or synthetic[column.name].isna().all():
            out.append(
                f'<div class="plot"><b>{_h(title)}</b><p>No synthetic value parses '
                f"as {_h(column.kind)}.</p></div>"
            )
            continue
        kind = "bar" if column.kind == "categorical" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                figure = get_column_plot(real, synthetic, column.name, plot_type=kind)
            except (ValueError, TypeError, np.linalg.LinAlgError):
                # A density needs spread: a constant or near-constant column gets bars.
                figure = get_column_plot(real, synthetic, column.name, plot_type="bar")
        figure.update_layout(title=title, height=360, margin={"l": 40, "r": 20, "t": 50, "b": 40})
        payload = json.dumps(figure.to_plotly_json(), cls=plotly.utils.PlotlyJSONEncoder)
        payload = payload.replace("</", "<\\/")  # record values cannot close the script
        div = f"plot-{i}"
        out.append(
            f'<div class="plot"><div id="{div}" class="column-plot"></div><script>'
            f"(function(){{var f={payload};Plotly.newPlot({json.dumps(div)},f.data,f.layout,"
            '{"displaylogo":false,"responsive":true});})();</script></div>'
        )
    return out


# ------------------------------------------------------------------------------ audit


def render_audit_html(report: Any) -> str:
    """`keraspec audit`'s page: the bound against the claim, and each score's distributions
    for included and excluded canaries (inline SVG: no script, works offline)."""
    r = report
    claimed = "none (no DP)" if r.claimed_epsilon is None else _num(r.claimed_epsilon)
    verdict = (
        "the guarantee is broken: the lower bound exceeds the claimed epsilon"
        if r.broken
        else "no evidence against the claimed epsilon"
    )
    cards = [
        (_num(r.epsilon_lower_bound), f"epsilon lower bound ({r.confidence:.0%})"),
        (claimed, "claimed epsilon"),
        (f"{r.included} / {r.canaries}", "canaries trained on"),
        (r.mode, f"{r.analysis} analysis, score {r.score}"),
    ]
    rows = "".join(
        f'<tr><td>{_h(name)}</td><td class="num">{_num(value)}</td></tr>'
        for name, value in r.bounds.items()
    )
    plots = "".join(
        _histogram_svg(name, hist) for name, hist in r.distributions.items() if hist.get("edges")
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>keraspec audit: {_h(r.mode)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>Privacy audit ({_h(r.mode)}): {_h(verdict)}</h1>",
        f'<p class="sub">{r.steps} steps; delta {r.delta:.3g}; run {_h(r.run_dir)}</p>',
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="value">{_h(v)}</div><div class="label">{_h(k)}'
            "</div></div>"
            for v, k in cards
        )
        + "</div>",
        "".join(f'<p class="note">{_h(n)}</p>' for n in r.notes),
        "<h2>Bounds</h2>",
        f"<table><tr><th>analysis / score</th><th>lower bound</th></tr>{rows}</table>",
        "<h2>Scores</h2>",
        '<p class="sub">Canaries trained on (blue) against canaries left out (orange): the '
        "further apart, the more the run leaks about each one.</p>",
        f'<div class="plots">{plots}</div>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _histogram_svg(name: str, hist: dict[str, Any]) -> str:
    width, height, pad = 500, 220, 30
    edges = hist["edges"]
    series = [("included", "#2f6fde"), ("excluded", "#f08c2b")]
    totals = {k: max(1, sum(hist[k])) for k, _ in series}
    peak = max(max(c / totals[k] for c in hist[k]) for k, _ in series) or 1.0
    bins = len(edges) - 1
    step = (width - 2 * pad) / bins
    bars = []
    for key, color in series:
        for i, count in enumerate(hist[key]):
            h = (height - 2 * pad) * count / totals[key] / peak
            bars.append(
                f'<rect x="{pad + i * step:.1f}" y="{height - pad - h:.1f}" '
                f'width="{step:.1f}" height="{h:.1f}" fill="{color}" fill-opacity="0.5"/>'
            )
    labels = (
        f'<text x="{pad}" y="{height - 8}" font-size="11">{_num(edges[0])}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">'
        f"{_num(edges[-1])}</text>"
        f'<text x="{pad}" y="16" font-size="12">{_h(name)}: share of canaries per bin</text>'
    )
    return (
        f'<div class="plot"><svg class="audit-histogram" data-score="{_h(name)}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" role="img">'
        f"{''.join(bars)}{labels}</svg></div>"
    )

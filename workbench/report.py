"""A self-contained HTML report of a Study: interactive charts, every variant, the context.

The file works offline and from an e-mail attachment: Vega, Vega-Lite and vega-embed
are inlined (bundled by vl-convert), so the page loads no script from the network.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import altair as alt

from workbench.atomic import write_text_atomic
from workbench.cache import Cache
from workbench.charts import (
    AXIS_TITLES,
    EMBED_OPTIONS,
    default_y,
    operator_chart,
    search_path_chart,
    tradeoff_chart,
)
from workbench.errors import WorkbenchError
from workbench.formatting import format_speedup
from workbench.measure.environment import runtime_text
from workbench.results import NO_LATENCY, delegation_text
from workbench.runtimes import DEFAULT_RUNTIME
from workbench.study import METRICS, Study

__all__ = ["report_html", "write_report"]

# Cost axes charted against accuracy (or agreement, for a model without labels).
REPORT_AXES = ("latency_p50_ms", "size_bytes", "compressed_bytes")
# The frontier the report lists: what a product team trades.
REPORT_OBJECTIVES = {"accuracy": "max", "latency_p50_ms": "min", "size_bytes": "min"}

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.muted { color: #666; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: right; }
th { background: #f4f4f4; } td { white-space: nowrap; }
td.text, th.text { text-align: left; white-space: normal; }
tr.warn-row td { border-top: none; padding-top: 0; background: #fffdf3; }
tr.frontier td:first-child { font-weight: bold; }
tr.baseline { background: #f8f8f8; }
ul.warnings { margin: 0; padding-left: 1.2em; color: #6a4a00; }
ul.speed { margin: 0; padding-left: 1.2em; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; }
dl.kv dt { font-weight: bold; } dl.kv dd { margin: 0; }
"""


@functools.lru_cache(maxsize=1)
def _javascript_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one script (about 900 kB; built once per process)."""
    try:
        import vl_convert
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise WorkbenchError(
            "the HTML report needs vl-convert-python to inline the chart libraries",
            "pip install vl-convert-python",
        ) from exc
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())


def _script_json(value: Any) -> str:
    # "</" inside a <script> would end it early; "<\/" is the same JSON string.
    return json.dumps(value).replace("</", "<\\/")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _kv_list(items: dict[str, Any]) -> str:
    rows = []
    for k, v in items.items():
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(i) for i in v)
        elif isinstance(v, dict):
            v = json.dumps(v)
        rows.append(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>")
    return f'<dl class="kv">{"".join(rows)}</dl>'


def _environments(study: Study) -> list[dict[str, Any]]:
    """The distinct environments the study's numbers were measured in."""
    seen: list[dict[str, Any]] = []
    for r in study.results:
        env = r.metrics.environment
        if env and env not in seen:
            seen.append(env)
    return seen


def _runtime_names(study: Study) -> str:
    """The runtimes the study's variants were measured in, for people: "ONNX Runtime",
    or "onnxruntime and litert"."""
    runtimes = study.runtimes() or [DEFAULT_RUNTIME]
    if runtimes == ["onnxruntime"]:
        return "ONNX Runtime"
    if len(runtimes) == 1:
        return runtimes[0]
    return ", ".join(runtimes[:-1]) + " and " + runtimes[-1]


def _speed_row(result: Any, columns: int) -> str:
    """A full-width row of ``result``'s speed-ups timed interleaved, with their spread,
    worded as the card and the CLI word them; "" when none was timed."""
    speed = "".join(
        f"<li>speed: {_e(format_speedup(c))}</li>" for c in result.metrics.comparisons or ()
    )
    if not speed:
        return ""
    return (
        f'<tr class="warn-row"><td class="text" colspan="{columns}">'
        f'<ul class="speed">{speed}</ul></td></tr>'
    )


def _runtime_row(result: Any, columns: int) -> str:
    """A full-width row of how the runtime ran ``result``'s file (the delegate it applied,
    beside the runtime's version) and how the file agrees with the same recipe's file in
    other runtimes; "" when neither was recorded."""
    m = result.metrics
    items = [
        f'<li title="{_e(p.detail())}">{_e(p.text())} ({_e(p.detail())})</li>'
        for p in m.cross_runtime
    ]
    if m.delegation:
        items.append(
            f"<li>{_e(runtime_text(m.environment) or result.runtime)}: "
            f"{_e(delegation_text(m.delegation))}</li>"
        )
    if not items:
        return ""
    return (
        f'<tr class="warn-row"><td class="text" colspan="{columns}">'
        f'<ul class="speed">{"".join(items)}</ul></td></tr>'
    )


def _separate_runs_note(study: Study) -> str:
    """With several runtimes: their latencies come from separate timing runs."""
    if len(study.runtimes()) < 2:
        return ""
    return (
        " Each runtime's variants were timed interleaved with its own baseline; different "
        "runtimes were timed in separate runs, so compare their latencies with care."
    )


def _variant_table(study: Study, per_runtime: bool = False) -> str:
    objectives = dict(REPORT_OBJECTIVES)
    frontier = {r.key for r in study.frontier(objectives, per_runtime=per_runtime)}
    # The same recipe appears once per runtime: a column says which.
    several = len(study.runtimes()) > 1
    head = (
        '<tr><th class="text">recipe</th>'
        + ('<th class="text">runtime</th>' if several else "")
        + "".join(f"<th>{_e(f.label)}</th>" for f in METRICS)
        + "</tr>"
    )
    body = []
    for r in study.results:
        classes = []
        if r.key in frontier:
            classes.append("frontier")
        if r.recipe.is_baseline:
            classes.append("baseline")
        # Warnings go in a full-width row under their variant: they are sentences.
        warnings = (
            f'<tr class="warn-row"><td class="text" colspan="{len(METRICS) + 1 + several}">'
            '<ul class="warnings">'
            + "".join(f"<li>{_e(w)}</li>" for w in r.warnings)
            + "</ul></td></tr>"
            if r.warnings
            else ""
        )
        mark = " &#9733;" if r.key in frontier else ""
        body.append(
            f'<tr class="{" ".join(classes)}" data-key="{_e(r.key)}">'
            f'<td class="text">{_e(r.name)}{mark}</td>'
            + (f'<td class="text">{_e(r.runtime)}</td>' if several else "")
            + "".join(f"<td>{_e(f.text(f.read(r)))}</td>" for f in METRICS)
            + "</tr>"
            + _speed_row(r, len(METRICS) + 1 + several)
            + _runtime_row(r, len(METRICS) + 1 + several)
            + warnings
        )
    return f"<table>{head}{''.join(body)}</table>"


def _device_sections(study: Study, devices: Sequence[str], cache: Cache | None) -> str:
    """One table per target device: whether each variant fits it (and the figure that
    decided it) and, on a device other than this machine, its latency there."""
    from workbench.study import variant_table

    parts = []
    for device in devices:
        df = variant_table(study, device=device, cache=cache)
        remote = "device_latency" in df.columns
        head = (
            '<tr><th class="text">recipe</th><th class="text">fits</th>'
            + ('<th class="text">latency there</th>' if remote else "")
            + "</tr>"
        )
        rows = "".join(
            f'<tr><td class="text">{_e(row["recipe"])}</td><td class="text">{_e(row["fit"])}</td>'
            + (f'<td class="text">{_e(row["device_latency"])}</td>' if remote else "")
            + "</tr>"
            for row in df.to_dict("records")
        )
        fitting = int(df["fits"].sum())
        parts.append(
            f'<h2>On {_e(device)}</h2><p class="muted">{fitting} of {len(df)} variants fit '
            f"{_e(device)}'s memory budget and storage.</p><table>{head}{rows}</table>"
        )
    return "".join(parts)


def _failures(study: Study) -> str:
    """The variants that could not be built or measured, with their errors ("" if none)."""
    if not study.failures:
        return ""
    several = (
        len({f.get("runtime", DEFAULT_RUNTIME) for f in study.failures} | set(study.runtimes())) > 1
    )
    items = "".join(
        f"<li><b>{_e(f.get('recipe_name', '?'))}</b>"
        + (f" in {_e(f.get('runtime', DEFAULT_RUNTIME))}" if several else "")
        + f": {_e(f['error'])}</li>"
        for f in study.failures
    )
    return f"<h2>Variants that failed</h2><ul>{items}</ul>"


def _untimed_note(untimed: list) -> str:
    """Says which variants have no latency (a runtime that times nothing here)."""
    if not untimed:
        return ""
    runtimes = ", ".join(sorted({r.runtime for r in untimed}))
    return (
        f" {len(untimed)} variant(s) measured in {_e(runtimes)} have {_e(NO_LATENCY)}; "
        "their memory figure is the tensor arena the interpreter needs."
    )


def _search_section(search: Any, df: Any) -> tuple[str, dict | None]:
    """The search path's HTML (the floor, the outcome, one row per candidate with why it
    was tried and its verdict) and its chart's spec, drawn in the target figure against
    test accuracy with the floor's reading on that axis."""
    from workbench.search import TARGETS  # only when the study holds a search

    column = TARGETS[search.target].column
    floor = search.floor
    asked = (
        f"{floor['value']:g} points below the float model"
        if floor["kind"] == "drop"
        else f"{floor['value']:g}%"
    )
    spec = None
    rows = search.path_rows()
    if column in df and df[column].notna().any():
        chart = search_path_chart(
            df,
            rows,
            x=column,
            floor=floor.get("test_reference"),
            floor_title="the floor read on the test split (verdicts: validation images)",
        )
        spec = chart.to_dict()
    figure = next(f for f in METRICS if f.column == column)
    accuracy = next(f for f in METRICS if f.column == "accuracy")
    body = "".join(
        f'<tr class="{"baseline" if r["phase"] == "baseline" else ""}" data-step="{r["step"]}">'
        f"<td>{r['step']}{' &#9733;' if r['chosen'] else ''}</td>"
        f'<td class="text">{_e(r["phase"])}</td><td class="text">{_e(r["recipe"])}</td>'
        f"<td>{_e(accuracy.text(r['validation_accuracy']) if r.get('validation_accuracy') is not None else 'n/a')}</td>"
        f"<td>{_e(accuracy.text(r['accuracy']) if r.get('accuracy') is not None else 'n/a')}</td>"
        f"<td>{_e(figure.text(r[column]) if r.get(column) is not None else 'n/a')}</td>"
        f'<td class="text">{"chosen" if r["chosen"] else "accepted" if r["accepted"] else "rejected"}</td>'
        f'<td class="text">{_e(step.why_tried)}</td><td class="text">{_e(r["reason"])}</td></tr>'
        for r, step in zip(rows, search.steps, strict=True)
    )
    basis = ""
    if "float_validation_accuracy" in floor:
        basis = (
            f" = {floor['accuracy']:.2%} on {floor['validation_images']} validation images "
            f"(the float model: {floor['float_validation_accuracy']:.2%}). Every verdict is "
            f"decided there: {_e(floor.get('basis', ''))}. The test-split figures are "
            "evaluate()'s, shown beside; they decide nothing."
        )
        if floor.get("caveat"):
            basis += f" <b>Warning: {_e(floor['caveat'])}.</b>"
    html_text = f"""<h2>Search path</h2>
<p>Target: {_e(TARGETS[search.target].description)}. Floor: {_e(asked)}{basis}</p>
<p><b>{_e(search.outcome)}</b> <span class="muted">({_e(search.stopped)};
{search.candidates_evaluated} variant(s) measured)</span></p>
{'<div id="search-path"></div>' if spec is not None else ""}
<table><tr><th>#</th><th class="text">phase</th><th class="text">recipe</th>
<th>validation accuracy</th><th>test accuracy</th><th>{_e(figure.label)}</th>
<th class="text">verdict</th><th class="text">why tried</th><th class="text">reason</th></tr>
{body}</table>"""
    return html_text, spec


def report_html(
    study: Study,
    *,
    per_runtime: bool = False,
    search: Any = None,
    devices: Sequence[str] = (),
    cache: Cache | None = None,
) -> str:
    """The report of ``study`` as one HTML document (see :func:`write_report`); with
    ``per_runtime``, the frontiers (charts and table) are taken within each runtime; with
    ``search`` (a ``workbench.search.SearchResult``), its path: chart and table; with
    ``devices``, a section per device saying which variants fit it (``cache``: where
    device-runner measurements were imported)."""
    if not study.results:
        raise WorkbenchError(
            f"the study of {study.model} has no variants", "run a sweep before writing a report"
        )
    device_html = _device_sections(study, devices, cache)  # an unknown name fails first
    df = study.to_dataframe()
    y = default_y(df)
    specs: list[tuple[str, dict]] = []
    untimed = [r for r in study.results if r.metrics.latency is None]
    axes = REPORT_AXES
    if len(untimed) == len(study.results):  # TFLite Micro: memory instead of latency
        axes = tuple("peak_memory_bytes" if a.startswith("latency_") else a for a in axes)
    for i, x in enumerate(axes):
        chart: alt.TopLevelMixin = tradeoff_chart(
            df, x=x, y=y, width=440, height=300, per_runtime_frontier=per_runtime
        )
        specs.append((f"tradeoff-{i}", chart.to_dict()))
    search_html = ""
    if search is not None:
        search_html, search_spec = _search_section(search, df)
        if search_spec is not None:
            specs.append(("search-path", search_spec))
    baseline = study.baseline
    if baseline is not None and baseline.metrics.operator_ms:
        specs.append(("operators", operator_chart(baseline.metrics.operator_ms).to_dict()))

    embeds = "\n".join(
        f"vegaEmbed({_script_json('#' + name)}, {_script_json(spec)}, opts).catch(console.error);"
        for name, spec in specs
    )
    chart_divs = "".join(
        f'<div id="{name}"></div>'
        for name, spec in specs
        if name not in ("operators", "search-path")
    )
    envs = _environments(study)
    env_html = "".join(_kv_list(env) for env in envs) or '<p class="muted">not recorded</p>'
    if len(envs) > 1:
        env_html = (
            f"<p><b>These variants were measured in {len(envs)} different environments: "
            "compare latencies only within one.</b></p>" + env_html
        )
    y_note = (
        ""
        if y == "accuracy"
        else '<p class="muted">This model has no labelled task: agreement with the float '
        "model's predictions stands in for accuracy.</p>"
    )
    operators = (
        '<h2>Where the baseline spends its time</h2><div id="operators"></div>'
        if any(n == "operators" for n, _ in specs)
        else ""
    )
    try:
        version = metadata.version("edge-workbench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    frontier_axes = ", ".join(
        AXIS_TITLES[c].split(" (")[0] + (" (max)" if s == "max" else " (min)")
        for c, s in REPORT_OBJECTIVES.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Edge Workbench report: {_e(study.model)}</title>
<style>{_CSS}</style>
<script type="text/javascript">{_javascript_bundle()}</script>
</head>
<body>
<h1>Edge Workbench report: {_e(study.model)}</h1>
<p class="muted">{len(study.results)} variants · written {_e(created)}
by edge-workbench {_e(version)}.
Latency and memory were measured on the exported artifact in {_e(_runtime_names(study))}, batch 1;
accuracy on the held-out test split.{_untimed_note(untimed)}{_separate_runs_note(study)}</p>
<h2>Trade-offs</h2>
{y_note}
<p class="muted">Hover a point for its recipe and figures. The dashed line is the Pareto
frontier for the two plotted figures.</p>
<div class="charts">{chart_divs}</div>
{search_html}
<h2>Every variant</h2>
<p class="muted">&#9733; marks the Pareto frontier over {_e(frontier_axes)}{
        " within each runtime" if per_runtime else ""
    }.</p>
{_variant_table(study, per_runtime)}
{device_html}
{_failures(study)}
{operators}
<h2>Model</h2>
{_kv_list(study.model_info) if study.model_info else _kv_list({"name": study.model})}
<h2>Environment</h2>
{env_html}
<script type="text/javascript">
const opts = {_script_json(EMBED_OPTIONS)};
{embeds}
</script>
</body>
</html>
"""


def write_report(
    study: Study,
    path: str | Path,
    *,
    per_runtime: bool = False,
    search: Any = None,
    devices: Sequence[str] = (),
    cache: Cache | None = None,
) -> Path:
    """Write ``study`` as one self-contained HTML file, atomically.

    The page holds interactive tradeoff charts of accuracy (or agreement) against
    latency p50, size and compressed size with their Pareto frontiers, the table of
    every variant with its measured speed-ups and warnings, the baseline's time per
    operator, the model and the environment the numbers were measured in. Variants of
    several runtimes are told apart by shape on the charts and by a column in the table;
    ``per_runtime`` takes the frontiers within each runtime. With ``search`` (a
    ``workbench.search.SearchResult``, e.g. ``SearchResult.load`` of the file ``workbench
    search --out`` wrote), the page also draws the search path and lists each candidate
    with why it was tried and its verdict. Each of ``devices`` gets a
    section: which variants fit it, the deciding figure, and the latency there.

    Returns:
        The path written.

    Raises:
        WorkbenchError: the study is empty, or ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise WorkbenchError(f"{path} is a folder", "give a file name such as report.html")
    return write_text_atomic(
        path,
        report_html(study, per_runtime=per_runtime, search=search, devices=devices, cache=cache),
    )

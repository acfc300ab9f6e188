"""VariantsPanel: every variant measured as a sortable table (with a CSV download), and
two variants side by side.

The rows come from :func:`workbench.study.variant_table` and the comparison from
:func:`workbench.study.compare_results`; this panel only chooses and displays them.
"""

from __future__ import annotations

import base64
import html
import re
import threading
from typing import Any

import ipywidgets as W
import pandas as pd
import traitlets as T

from widgets.style import LINK_STYLE, TOGGLE_STYLE
from workbench.charts import format_change, format_figure
from workbench.study import FIGURES, compare_results, variant_table

__all__ = ["VariantsPanel"]

GOOD, BAD, NEUTRAL = "#1a7f37", "#b00020", "#555555"
_SORT_OPTIONS = (
    (("recipe", "recipe"),)
    + tuple((f.label, f.column) for f in FIGURES)
    + (("warnings", "warnings"),)
)
_CELL = "padding: 2px 10px 2px 0; text-align: right; white-space: nowrap;"


def _csv_link(csv_text: str, model: str) -> str:
    data = base64.b64encode(csv_text.encode("utf-8")).decode("ascii")
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{model}-variants") + ".csv"
    return (
        f'<a class="edge-workbench-csv" style="{LINK_STYLE}" download="{html.escape(name)}" '
        f'href="data:text/csv;charset=utf-8;base64,{data}">download the table as CSV '
        f"({html.escape(name)})</a>"
    )


def _variant_label(result: Any, with_runtime: bool) -> str:
    """A variant's name, with the runtime it was measured in when that tells it apart."""
    return f"{result.recipe.name} ({result.runtime})" if with_runtime else result.recipe.name


class VariantsPanel(W.VBox):
    """Every variant of ``study`` in a table, and variant B compared with variant A.

    Traits:
        study: the ``workbench.Study`` shown (mutable: call :meth:`refresh` after
            adding results; assigning a new Study refreshes by itself).
        sort_by: the column the table is sorted on; ascending: its direction.
        a_key, b_key: cache keys of the two variants compared ("" for none).
        rows: (read-only) the table's rows as dicts, in the order shown.
        comparison: (read-only) ``compare_results(A, B)``'s rows, [] without two variants.
        csv: (read-only) the table as CSV text (what the download link holds).
        device: the target device ("" for none): whether each variant fits it, and on a
            device other than host its latency there (measured there, else estimated).
        cache: where device-runner measurements were imported (``workbench import``).
    """

    study = T.Any(None)
    sort_by = T.Unicode("recipe")
    ascending = T.Bool(True)
    a_key = T.Unicode("")
    b_key = T.Unicode("")
    rows = T.List(read_only=True)
    comparison = T.List(read_only=True)
    csv = T.Unicode("", read_only=True)
    device = T.Unicode("")
    cache = T.Any(None)

    def __init__(self, **kwargs) -> None:
        # Refreshes come from the UI thread and the measuring worker; choosing defaults
        # for A and B inside a refresh must not start another one.
        self._lock = threading.RLock()
        self._refreshing = False
        self.sort_w = W.Dropdown(options=_SORT_OPTIONS, description="sort by")
        self.order_w = W.ToggleButtons(
            options=[("ascending", True), ("descending", False)],
            style=TOGGLE_STYLE,
        )
        self.a_w = W.Dropdown(options=[("-", "")], description="A")
        self.b_w = W.Dropdown(options=[("-", "")], description="B")
        self._table_w = W.HTML()
        self._csv_w = W.HTML()
        self._compare_w = W.HTML()
        super().__init__(
            children=[
                W.HTML("<b>Every variant measured</b>"),
                W.HBox([self.sort_w, self.order_w], layout=W.Layout(flex_flow="row wrap")),
                self._table_w,
                self._csv_w,
                W.HTML("<b>Compare two variants</b> (B against A)"),
                W.HBox([self.a_w, self.b_w], layout=W.Layout(flex_flow="row wrap")),
                self._compare_w,
            ],
            **kwargs,
        )
        T.link((self, "sort_by"), (self.sort_w, "value"))
        T.link((self, "ascending"), (self.order_w, "value"))
        T.link((self, "a_key"), (self.a_w, "value"))
        T.link((self, "b_key"), (self.b_w, "value"))
        self.refresh()

    @T.observe("study", "sort_by", "ascending", "a_key", "b_key", "device")
    def _on_change(self, change: dict) -> None:
        if not self._refreshing:
            self.refresh()

    def refresh(self) -> None:
        """Rebuild the table, the A/B choices and the comparison from the study as it is now."""
        with self._lock:
            self._refreshing = True
            try:
                self._refresh()
            finally:
                self._refreshing = False

    def _refresh(self) -> None:
        study = self.study
        df = (
            variant_table(
                study, self.sort_by, self.ascending, device=self.device or None, cache=self.cache
            )
            if study is not None
            else None
        )
        rows = [] if df is None else df.to_dict("records")
        self.set_trait("rows", rows)
        self.set_trait("csv", "" if df is None else df.to_csv(index=False))
        self._table_w.value = self._table_html(rows)
        self._csv_w.value = _csv_link(self.csv, study.model) if rows else ""
        self._update_choices(study)
        self._render_comparison(study)

    def _table_html(self, rows: list[dict[str, Any]]) -> str:
        if not rows:
            return f'<div style="color:{NEUTRAL};">No variant measured yet.</div>'
        # A figure no variant has (accuracy, for a model without labels) gets no column.
        figures = [f for f in FIGURES if any(pd.notna(r[f.column]) for r in rows)]
        # Variants of several runtimes: the table says which runtime measured each.
        show_runtime = "runtime" in rows[0]
        runtime_th = f'<th style="{_CELL} text-align: left;">runtime</th>' if show_runtime else ""
        # The chosen device: fits or not (the card's line on hover), and its latency there.
        device_ths = ""
        if "fits" in rows[0]:
            device_ths = f'<th style="{_CELL}">fits {html.escape(self.device)}</th>'
            if "device_latency" in rows[0]:
                device_ths += (
                    f'<th style="{_CELL} text-align: left;">latency on '
                    f"{html.escape(self.device)}</th>"
                )
        head = "".join(
            f'<th style="{_CELL}">{html.escape(f.label)}{self._arrow(f.column)}</th>'
            for f in figures
        )
        parts = [
            '<div style="overflow-x: auto;"><table class="edge-workbench-variants" '
            'style="border-collapse: collapse; font-size: 12px;">'
            f'<tr><th style="{_CELL} text-align: left;">recipe{self._arrow("recipe")}</th>'
            f'{runtime_th}{head}{device_ths}<th style="{_CELL}">warnings</th>'
            f'<th style="{_CELL}">frontier</th></tr>'
        ]
        for r in rows:
            cells = "".join(
                f'<td style="{_CELL}">{format_figure(f.column, r[f.column])}</td>' for f in figures
            )
            if show_runtime:
                cells = (
                    f'<td style="{_CELL} text-align: left;">{html.escape(str(r["runtime"]))}</td>'
                    + cells
                )
            if device_ths:
                fits = "yes" if r["fits"] else f'<span style="color:{BAD};">no</span>'
                cells += f'<td style="{_CELL}" title="{html.escape(str(r["fit"]))}">{fits}</td>'
                if "device_latency" in r:
                    cells += (
                        f'<td style="{_CELL} text-align: left;">'
                        f"{html.escape(str(r['device_latency']))}</td>"
                    )
            parts.append(
                f'<tr style="border-top: 1px solid #eee;"><td style="{_CELL} text-align: left;">'
                f"{html.escape(str(r['recipe']))}</td>{cells}"
                f'<td style="{_CELL}">{int(r["warnings"])}</td>'
                f'<td style="{_CELL}">{"yes" if r["on_frontier"] else ""}</td></tr>'
            )
        parts.append("</table></div>")
        return "".join(parts)

    def _arrow(self, column: str) -> str:
        return (" ▲" if self.ascending else " ▼") if column == self.sort_by else ""

    def _update_choices(self, study: Any) -> None:
        results = list(study.results) if study is not None else []
        several = len({r.runtime for r in results}) > 1
        options = [("-", "")] + [(_variant_label(r, several), r.key) for r in results]
        keys = {r.key for r in results}
        a, b = self.a_key, self.b_key
        # Sensible defaults: A the baseline, B the latest other variant.
        if a not in keys:
            a = study.baseline.key if study is not None and study.baseline is not None else ""
        if b not in keys:
            b = next((r.key for r in reversed(results) if r.key != a), "")
        for widget in (self.a_w, self.b_w):
            if list(widget.options) != options:
                widget.options = options
        self.a_key, self.b_key = a, b

    def _render_comparison(self, study: Any) -> None:
        by_key = {r.key: r for r in study.results} if study is not None else {}
        a, b = by_key.get(self.a_key), by_key.get(self.b_key)
        if a is None or b is None:
            self.set_trait("comparison", [])
            self._compare_w.value = (
                f'<div style="color:{NEUTRAL};">Measure two variants to compare them.</div>'
            )
            return
        rows = compare_results(a, b)
        self.set_trait("comparison", rows)
        parts = [
            '<table class="edge-workbench-compare" style="border-collapse: collapse;">'
            f'<tr><th style="{_CELL} text-align: left;"></th>'
            f'<th style="{_CELL}">A: {html.escape(_variant_label(a, a.runtime != b.runtime))}</th>'
            f'<th style="{_CELL}">B: {html.escape(_variant_label(b, a.runtime != b.runtime))}</th>'
            f'<th style="{_CELL}">B vs A</th></tr>'
        ]
        for row in rows:
            fig = row["figure"]
            colour = {"b": GOOD, "a": BAD}.get(row["better"], NEUTRAL)
            delta = format_change(row["b"], row["a"], fig.kind)
            parts.append(
                f'<tr><td style="{_CELL} text-align: left; color:{NEUTRAL};">'
                f"{html.escape(fig.label)}</td>"
                f'<td style="{_CELL}">{format_figure(fig.column, row["a"])}</td>'
                f'<td style="{_CELL}">{format_figure(fig.column, row["b"])}</td>'
                f'<td style="{_CELL} color:{colour};">{delta}</td></tr>'
            )
        parts.append("</table>")
        self._compare_w.value = "".join(parts)

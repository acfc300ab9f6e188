"""TradeoffChart: the study's variants on an Altair JupyterChart, clickable.

The chart itself is :func:`workbench.charts.tradeoff_chart`; this panel adds the axis
choosers, redraws when the study or the current variant changes, and turns a click
on a point into the ``picked_key`` trait.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import altair as alt
import ipywidgets as W
import pandas as pd
import traitlets as T

from workbench.cache import Cache
from workbench.charts import EMBED_OPTIONS, PICK_PARAM, default_y, tradeoff_chart
from workbench.devices.view import device_overlay
from workbench.errors import WorkbenchError
from workbench.study import FIGURES

__all__ = ["X_AXES", "Y_AXES", "TradeoffChart", "enable_offline_charts"]

# Costs (smaller is better) against quality (a fraction, larger is better), from the
# one table of figures.
X_AXES = tuple(
    (f.label, f.column) for f in FIGURES if f.unit in ("ms", "bytes") and f.better == "min"
)
Y_AXES = tuple((f.label, f.column) for f in FIGURES if f.unit == "fraction")

_offline_lock = threading.Lock()


def enable_offline_charts() -> None:
    """Serve Vega from the kernel (bundled by vl-convert) instead of a CDN.

    Without it a JupyterChart fetches Vega from the network and draws nothing offline.
    Called once per process (it bundles ~900 kB of JavaScript in about 1.5 s).
    """
    with _offline_lock:
        alt.JupyterChart.enable_offline()


class _SerialJupyterChart(alt.JupyterChart):
    """A JupyterChart whose updates from the browser never interleave with a redraw.

    The browser answers every new spec with an update (``local_tz``, ``_vl_selections``,
    ``_params``), handled on the kernel's main thread, while redraws also come from the
    measuring worker. ipywidgets keeps a widget's sync bookkeeping (``_holding_sync``,
    ``_states_to_send``, the property lock) and traitlets its held notifications in
    unguarded instance state, so the two must take turns: ``serialised`` is the
    TradeoffChart's lock.
    """

    def __init__(self, chart: alt.TopLevelMixin, *, serialised: Callable, **kwargs) -> None:
        self._serialised = serialised
        super().__init__(chart, **kwargs)

    def set_state(self, sync_data: dict) -> None:
        with self._serialised():
            super().set_state(sync_data)


class TradeoffChart(W.VBox):
    """Every variant of ``study`` as a point; the frontier; the current one ringed.

    Traits:
        study: the ``workbench.Study`` drawn. It is mutable: call :meth:`refresh`
            after adding results to it (assigning a new Study redraws by itself).
        current_key: the cache key of the variant to ring.
        x: the cost axis (a column of ``Study.to_dataframe()``).
        y: "accuracy" or "agreement"; accuracy falls back to agreement for a model
            without labels.
        picked_key: (read-only) the key of the point clicked, "" when none is selected.
        device: a target device's name ("" for none): its budget lines, the variants
            that do not fit greyed, the frontier within its budget, and on a device
            other than this machine its latency (measured there or estimated).
        device_error: (read-only) why the device could not be drawn, "" otherwise.
        frontier_per_runtime: draw a frontier for each runtime (one line each) instead
            of one across them; points of several runtimes differ in shape either way.

    Args:
        cache: where device-runner measurements were imported (``workbench import``),
            so the device's own figures are drawn instead of estimates.
    """

    study = T.Any(None)
    current_key = T.Unicode("")
    device = T.Unicode("")
    x = T.Unicode("latency_p50_ms")
    y = T.Unicode("accuracy")
    picked_key = T.Unicode("", read_only=True)
    device_error = T.Unicode("", read_only=True)
    frontier_per_runtime = T.Bool(False)

    def __init__(self, study=None, *, cache: Cache | None = None, **kwargs) -> None:
        self.cache = cache
        enable_offline_charts()
        self.x_w = W.Dropdown(options=X_AXES, value=self.x, description="x axis")
        self.y_w = W.Dropdown(options=Y_AXES, value=self.y, description="y axis")
        self.per_runtime_w = W.Checkbox(
            description="frontier per runtime",
            indent=False,
            layout=W.Layout(width="auto"),
            tooltip="one frontier line for each runtime instead of one across them",
        )
        # Redraws come from the UI and worker threads, the browser's updates from the UI
        # thread: one at a time (reentrant: a redraw's own observers may redraw).
        self._lock = threading.RLock()
        self._depth = 0  # how deep the holder of _lock is nested
        self._pick = ""  # the clicked point, published as picked_key once _lock is free
        # EMBED_OPTIONS: no "Open in Vega Editor" (it posts the spec to a public site).
        self.jchart = _SerialJupyterChart(
            self._build(), serialised=self._serialised, embed_options=dict(EMBED_OPTIONS)
        )
        self.jchart.observe(self._on_selection, names="_vl_selections")
        super().__init__(
            children=[W.HBox([self.x_w, self.y_w, self.per_runtime_w]), self.jchart], **kwargs
        )
        T.link((self, "x"), (self.x_w, "value"))
        T.link((self, "y"), (self.y_w, "value"))
        T.link((self, "frontier_per_runtime"), (self.per_runtime_w, "value"))
        if study is not None:
            self.study = study

    def _dataframe(self) -> pd.DataFrame:
        return self.study.to_dataframe() if self.study is not None else pd.DataFrame()

    def _build(self) -> alt.LayerChart:
        df = self._dataframe()
        y = self.y if (self.y != "accuracy" or df.empty) else default_y(df)
        return tradeoff_chart(
            df,
            x=self.x,
            y=y,
            current_key=self.current_key or None,
            device=self._overlay(),
            per_runtime_frontier=self.frontier_per_runtime,
        )

    def _overlay(self) -> Any:
        """The chosen device's view of the study (the engine computes it), or None."""
        if not self.device or self.study is None:
            self.set_trait("device_error", "")
            return None
        try:
            overlay = device_overlay(self.study.results, self.device, self.cache)
        except (WorkbenchError, OSError) as exc:  # e.g. an artifact deleted meanwhile
            self.set_trait("device_error", str(exc))
            return None
        self.set_trait("device_error", "")
        return overlay

    @T.observe("study", "current_key", "x", "y", "device", "frontier_per_runtime")
    def _on_change(self, change: dict) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Redraw from the study as it is now.

        Redraws take turns (with each other and with the browser's updates): whichever
        comes last builds from the latest study and current key, so the last state wins.
        """
        with self._serialised():
            self.jchart.chart = self._build()

    @contextlib.contextmanager
    def _serialised(self) -> Iterator[None]:
        """Hold the chart's lock; on leaving the outermost hold, publish the pick.

        ``picked_key``'s observers (the app loads the picked recipe, which takes the
        app's display lock) run only once the lock is free: a thread holding this lock
        never waits for another lock that a redrawing thread may hold.
        """
        with self._lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                outermost = self._depth == 0
        if outermost:
            self._publish_pick()

    def _publish_pick(self) -> None:
        if self.picked_key != self._pick:
            self.set_trait("picked_key", self._pick)

    def _on_selection(self, change: dict) -> None:
        # The browser sends the "pick" selection as a Vega signal; JupyterChart's own
        # observer has already parsed it into selections.pick by the time this runs.
        selection = getattr(self.jchart.selections, PICK_PARAM, None)
        points = selection.value if selection is not None else []
        # An emptied selection (double click, or a redraw) clears the pick, so clicking
        # the same point again later is a new pick.
        self._pick = str(points[0].get("key", "")) if points else ""
        if self._depth == 0:  # not inside a redraw or a browser update: publish now
            self._publish_pick()

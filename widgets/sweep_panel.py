"""SweepPanel: measure a grid of recipes in the background, with progress and Cancel.

Run builds the grid with ``workbench.grid`` and calls ``workbench.sweep`` on a worker
thread; each finished variant is added to the shared Study and announced through the
``last_result`` trait, so a chart can draw it as it arrives.
"""

from __future__ import annotations

import html
import os
import threading
from typing import Any

import ipywidgets as W
import traitlets as T

from widgets.style import TOGGLE_STYLE
from workbench.cache import Cache
from workbench.cluster import RAY_ADDRESS_ENV
from workbench.errors import WorkbenchError
from workbench.pipeline import MeasureSettings, torch_steps_unavailable
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.runtimes import list_runtimes
from workbench.study import grid, sweep

__all__ = ["SweepPanel"]

SPARSITIES = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95)
SCHEMES = ("none", "dynamic", "int8", "fp16")


class SweepPanel(W.VBox):
    """A grid of pruning sparsities x quantization schemes, measured on a worker thread.

    Args:
        study: the Study results are added to (shared with the chart).
        model: the Model to sweep.
        cache: where results are kept (a rerun is instant).
        settings: how variants are measured.
        study_lock: held while adding to ``study`` (share it with other writers).

    Traits:
        model, study: as above.
        method: pruning method of the grid ("unstructured" or "structured").
        sparsities: the sparsities of the grid (0 to 0.95).
        schemes: quantization schemes of the grid ("none" for float).
        runtimes: the runtimes every variant is measured in (empty: the settings'
            runtime); the app keeps it on its chosen runtime until one picks others.
        running, done, total, status, error: (read-only) progress of the current run.
        last_result: (read-only) the variant that finished last.
    """

    model = T.Any(None)
    study = T.Any(None)
    method = T.Unicode("unstructured")
    sparsities = T.Tuple((0.25, 0.5, 0.75))
    schemes = T.Tuple(("none", "int8"))
    runtimes = T.Tuple(())
    running = T.Bool(False, read_only=True)
    done = T.Int(0, read_only=True)
    total = T.Int(0, read_only=True)
    status = T.Unicode("", read_only=True)
    error = T.Unicode("", read_only=True)
    last_result = T.Any(None, read_only=True)

    def __init__(
        self,
        study: Any = None,
        model: Any = None,
        *,
        cache: Cache | None = None,
        settings: MeasureSettings | None = None,
        study_lock: threading.Lock | None = None,
        **kwargs,
    ) -> None:
        self.cache = cache
        self.settings = settings
        # Study.add is a read-modify-write: whoever else adds to the same study from
        # another thread passes the lock it uses.
        self.study_lock = study_lock or threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.method_w = W.ToggleButtons(
            options=["unstructured", "structured"],
            description="pruning",
            style=TOGGLE_STYLE,
        )
        self.sparsities_w = W.SelectMultiple(
            options=[(f"{s:.0%}", s) for s in SPARSITIES], description="sparsities", rows=6
        )
        self.schemes_w = W.SelectMultiple(options=list(SCHEMES), description="quantize", rows=4)
        self.runtimes_w = W.SelectMultiple(
            options=list_runtimes(),
            description="runtimes",
            rows=4,
            tooltip="every variant is measured in each runtime chosen",
        )
        self.count_w = W.HTML()
        self.run_w = W.Button(description="Run sweep", button_style="primary", icon="play")
        self.cancel_w = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress_w = W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="260px"))
        self.progress_label_w = W.Label("")
        self._status_w = W.HTML()
        super().__init__(
            children=[
                W.HTML(
                    "<b>Sweep</b>: every combination is measured; points appear as they finish."
                ),
                self.method_w,
                W.HBox([self.sparsities_w, self.schemes_w, self.runtimes_w]),
                self.count_w,
                W.HBox([self.run_w, self.cancel_w, self.progress_w, self.progress_label_w]),
                self._status_w,
            ],
            **kwargs,
        )
        T.link((self, "method"), (self.method_w, "value"))
        T.link((self, "sparsities"), (self.sparsities_w, "value"))
        T.link((self, "schemes"), (self.schemes_w, "value"))
        T.link((self, "runtimes"), (self.runtimes_w, "value"))
        self.observe(lambda _c: self._count(), names="runtimes")
        self.run_w.on_click(lambda _b: self.run())
        self.cancel_w.on_click(lambda _b: self.cancel())
        self.study = study
        self.model = model
        self._count()

    def recipes(self) -> list[Recipe]:
        """The grid's recipes (baseline first), as ``workbench.grid`` builds them.

        For a model pruning cannot apply to (an ONNX file...), the pruning settings are
        left out and the grid is the quantization schemes alone.
        """
        prunable = self.model is None or not torch_steps_unavailable(self.model)
        sparsities = self.sparsities if prunable else ()
        prune = [None] + [PruneConfig(method=self.method, sparsity=s) for s in sparsities]
        quantize = [None if s == "none" else QuantizeConfig(scheme=s) for s in self.schemes]
        return grid(prune=prune, quantize=quantize or [None])

    @T.observe("method", "sparsities", "schemes", "model")
    def _on_grid(self, change: dict) -> None:
        prunable = self.model is None or not torch_steps_unavailable(self.model)
        self.method_w.disabled = self.sparsities_w.disabled = not prunable
        self._count()

    def _count(self) -> None:
        self.count_w.value = f"{len(self.recipes())} variants, baseline included"
        if len(self.runtimes) > 1:
            self.count_w.value += f", in each of {len(self.runtimes)} runtimes"

    def _runtimes(self) -> list[str] | None:
        """The runtimes to sweep in: the chosen ones, else None (the settings' runtime)."""
        return list(self.runtimes) or None

    @T.observe("running", "done", "total", "status", "error")
    def _on_progress(self, change: dict) -> None:
        self.run_w.disabled = self.running
        self.cancel_w.disabled = not self.running
        self.progress_w.max = max(self.total, 1)
        self.progress_w.value = self.done
        self.progress_label_w.value = f"{self.done} of {self.total}" if self.total else ""
        if self.error:
            self._status_w.value = f'<span style="color:#b00020">{html.escape(self.error)}</span>'
        else:
            self._status_w.value = html.escape(self.status)

    def run(self) -> bool:
        """Start the sweep on a worker thread; returns False if one is running or no model."""
        if self.running:
            return False
        if self.model is None:
            self.set_trait("error", str(WorkbenchError("no model to sweep", "load a model first")))
            return False
        recipes = self.recipes()
        total = len(recipes) * len(self._runtimes() or [None])
        self._cancel = threading.Event()
        with self.hold_trait_notifications():
            self.set_trait("error", "")
            self.set_trait("total", total)
            self.set_trait("done", 0)
            self.set_trait("status", f"measuring {total} variants...")
            self.set_trait("running", True)
        self._thread = threading.Thread(
            target=self._work,
            args=(self.model, self.study, recipes, self._cancel, self._runtimes()),
            name="workbench-sweep",
            daemon=True,
        )
        self._thread.start()
        return True

    def _work(
        self,
        model: Any,
        study: Any,
        recipes: list[Recipe],
        cancel: threading.Event,
        runtimes: list[str] | None = None,
    ) -> None:
        several = runtimes is not None and len(runtimes) > 1

        def on_result(result: Any) -> None:
            if study is not None:
                with self.study_lock:
                    study.add(result)
            self.set_trait("done", self.done + 1)
            where = f" in {result.runtime}" if several else ""
            self.set_trait("status", f"measured {result.name}{where}")
            self.set_trait("last_result", result)

        try:
            swept = sweep(
                model,
                recipes,
                settings=self.settings,
                cache=self.cache,
                progress=False,
                on_result=on_result,
                cancel=cancel,
                # A configured cluster (WORKBENCH_RAY_ADDRESS: "auto" or host:port) runs it.
                executor="ray" if os.environ.get(RAY_ADDRESS_ENV) else "local",
                ray_address=os.environ.get(RAY_ADDRESS_ENV) or None,
                runtimes=runtimes,
            )
            if several and study is not None:
                # The sweep compared each recipe's files across the runtimes afterwards
                # (Metrics.cross_runtime): the study's points get those figures too.
                linked = {r.key: r for r in swept.results}
                with self.study_lock:
                    study.results = [linked.get(r.key, r) for r in study.results]
            if cancel.is_set() and self.done < self.total:
                self.set_trait("status", f"cancelled after {self.done} of {self.total} variants")
            else:
                self.set_trait("status", f"done: {self.done} variants")
            # A variant that could not be built is kept with its error; the rest went on.
            if swept.failures:
                if study is not None:
                    with self.study_lock:
                        for failure in swept.failures:
                            study.failures = [
                                f
                                for f in study.failures
                                if (f["recipe_name"], f.get("runtime"))
                                != (failure["recipe_name"], failure.get("runtime"))
                            ] + [failure]
                self.set_trait(
                    "error",
                    f"{len(swept.failures)} variant(s) failed: "
                    + "; ".join(
                        f"{f['recipe_name']}"
                        + (f" in {f.get('runtime')}" if several else "")
                        + f": {f['error']}"
                        for f in swept.failures
                    ),
                )
        except WorkbenchError as exc:
            self.set_trait("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never kills the app
            self.set_trait("error", f"the sweep stopped: {type(exc).__name__}: {exc}")
        finally:
            self.set_trait("running", False)

    def cancel(self) -> None:
        """Stop after the variant being measured (it is kept in the cache)."""
        self._cancel.set()
        if self.running:
            self.set_trait("status", "cancelling after the variant in progress...")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the sweep ends (for scripts and tests); returns whether it did."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

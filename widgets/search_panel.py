"""SearchPanel: the sensitivity-guided recipe search, run in the background with Cancel.

Run calls ``workbench.search.search`` on a worker thread; each measured candidate is
announced through ``last_step`` (and added to the shared Study, so the trade-off chart
draws it as it arrives); when the search ends, ``result`` holds the SearchResult, whose
path ``workbench.charts.search_path_chart`` draws.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as W
import traitlets as T

from widgets.style import TOGGLE_STYLE
from workbench.cache import Cache
from workbench.errors import WorkbenchError
from workbench.pipeline import MeasureSettings
from workbench.search import RECOVERIES, TARGETS, check_request, search

__all__ = ["SearchPanel"]

FLOOR_KINDS = ("drop", "absolute")


def _caveat_html(result: Any) -> str:
    """The engine's warning that the verdicts are lenient (the model saw the validation
    images), or ""."""
    caveat = result.floor.get("caveat")
    return f'<p style="color:#b00020;">warning: {html.escape(caveat)}</p>' if caveat else ""


class SearchPanel(W.VBox):
    """An accuracy floor and a target in, the smallest (or fastest) recipe out.

    Args:
        study: the Study each measured candidate is added to (shared with the chart).
        model: the Model to search.
        cache: where results are kept (a rerun is instant).
        settings: how variants are measured.
        study_lock: held while adding to ``study`` (share it with other writers).

    Traits:
        model, study: as above.
        floor_kind: "drop" (points below the float model) or "absolute" (percent).
        floor_value: the drop in points, or the floor in percent.
        target: one of ``workbench.search.TARGETS``.
        max_candidates: variants evaluated besides the baseline.
        recovery: how pruned candidates recover (``workbench.search.RECOVERIES``).
        students: also try smaller students distilled from the model (narrower widths,
            smaller samples), then compress the one kept.
        running, status, error: (read-only) progress of the current run.
        last_step: (read-only) the SearchStep judged last.
        result: (read-only) the SearchResult of the last finished run.
    """

    model = T.Any(None)
    study = T.Any(None)
    floor_kind = T.Unicode("drop")
    floor_value = T.Float(1.0)
    target = T.Unicode("size")
    max_candidates = T.Int(12)
    recovery = T.Unicode("finetune")
    students = T.Bool(True)
    running = T.Bool(False, read_only=True)
    status = T.Unicode("", read_only=True)
    error = T.Unicode("", read_only=True)
    last_step = T.Any(None, read_only=True)
    result = T.Any(None, read_only=True)

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
        self.study_lock = study_lock or threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.floor_kind_w = W.ToggleButtons(
            options=[("points below float", "drop"), ("at least (%)", "absolute")],
            description="floor",
            style=TOGGLE_STYLE,
        )
        self.floor_value_w = W.BoundedFloatText(min=0.0, max=100.0, step=0.1, description="value")
        self.target_w = W.Dropdown(options=list(TARGETS), description="target")
        self.max_candidates_w = W.BoundedIntText(min=1, max=100, description="candidates")
        self.recovery_w = W.Dropdown(options=list(RECOVERIES), description="recovery")
        self.students_w = W.Checkbox(
            description="try smaller students",
            indent=False,
            tooltip="distil narrower or smaller models from this one, then compress the one kept",
        )
        self.run_w = W.Button(description="Run search", button_style="primary", icon="search")
        self.cancel_w = W.Button(description="Cancel", icon="stop", disabled=True)
        self._status_w = W.HTML()
        self.path_w = W.HTML()
        super().__init__(
            children=[
                W.HTML(
                    "<b>Search</b>: the smallest recipe that keeps the floor, guided by layer "
                    "sensitivity; every candidate is measured, and judged on validation images "
                    "(a fifth of the training part it never trains on), never the test split."
                ),
                self.floor_kind_w,
                W.HBox([self.floor_value_w, self.target_w]),
                W.HBox([self.max_candidates_w, self.recovery_w, self.students_w]),
                W.HBox([self.run_w, self.cancel_w]),
                self._status_w,
                self.path_w,
            ],
            **kwargs,
        )
        for name, widget in (
            ("floor_kind", self.floor_kind_w),
            ("floor_value", self.floor_value_w),
            ("target", self.target_w),
            ("max_candidates", self.max_candidates_w),
            ("recovery", self.recovery_w),
            ("students", self.students_w),
        ):
            T.link((self, name), (widget, "value"))
        self.run_w.on_click(lambda _b: self.run())
        self.cancel_w.on_click(lambda _b: self.cancel())
        self.study = study
        self.model = model

    def request(self) -> dict[str, Any]:
        """The search's arguments from the controls (checked by ``check_request``)."""
        floor = (
            {"max_accuracy_drop": self.floor_value}
            if self.floor_kind == "drop"
            else {"accuracy_floor": self.floor_value}
        )
        return {
            **floor,
            "target": self.target,
            "max_candidates": self.max_candidates,
            "recovery": self.recovery,
            "students": self.students,
        }

    @T.observe("running", "status", "error")
    def _on_progress(self, change: dict) -> None:
        self.run_w.disabled = self.running
        self.cancel_w.disabled = not self.running
        if self.error:
            self._status_w.value = f'<span style="color:#b00020">{html.escape(self.error)}</span>'
        else:
            self._status_w.value = html.escape(self.status)

    @T.observe("result")
    def _on_result(self, change: dict) -> None:
        result = change["new"]
        if result is None:
            self.path_w.value = ""
            return
        rows = "".join(
            f"<tr><td>{'★' if r['chosen'] else ''}{r['step']}</td><td>{html.escape(r['recipe'])}</td>"
            f"<td>{'accepted' if r['accepted'] else 'rejected'}</td>"
            f"<td>{html.escape(r['reason'])}</td></tr>"
            for r in result.path_rows()
        )
        self.path_w.value = (
            f"<p>{html.escape(result.outcome)}</p>{_caveat_html(result)}"
            "<table><tr><th>#</th><th>recipe</th>"
            f"<th>verdict</th><th>why</th></tr>{rows}</table>"
        )

    def run(self) -> bool:
        """Start the search on a worker thread; False if one is running or the input is bad
        (``error`` says why)."""
        if self.running:
            return False
        try:
            if self.model is None:
                raise WorkbenchError("no model to search", "load a model first")
            request = self.request()
            # What check_request judges; "students" is a plain switch.
            check_request(**{k: v for k, v in request.items() if k != "students"})
        except WorkbenchError as exc:
            self.set_trait("error", str(exc))
            return False
        self._cancel = threading.Event()
        with self.hold_trait_notifications():
            self.set_trait("error", "")
            self.set_trait("result", None)
            self.set_trait("status", "measuring the baseline...")
            self.set_trait("running", True)
        self._thread = threading.Thread(
            target=self._work,
            args=(self.model, self.study, self.request(), self._cancel),
            name="workbench-search",
            daemon=True,
        )
        self._thread.start()
        return True

    def _work(self, model: Any, study: Any, request: dict, cancel: threading.Event) -> None:
        def on_step(step: Any) -> None:
            if study is not None and step.result is not None:
                with self.study_lock:
                    study.add(step.result)
            verdict = "accepted" if step.accepted else "rejected"
            self.set_trait("status", f"[{step.index}] {step.recipe.name}: {verdict}")
            self.set_trait("last_step", step)

        try:
            result = search(
                model,
                **request,
                settings=self.settings,
                cache=self.cache,
                on_step=on_step,
                cancel=cancel,
            )
            self.set_trait("result", result)
            self.set_trait("status", f"{result.outcome} ({result.stopped})")
        except Exception as exc:  # noqa: BLE001 - shown in the panel, not lost on a thread
            self.set_trait("error", str(exc) or type(exc).__name__)
        finally:
            self.set_trait("running", False)

    def cancel(self) -> None:
        """Stop after the candidate in progress (its figures are kept)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

"""Workbench: the whole app in one widget.

Model picker, pruning and quantization panels, the metrics card, the tradeoff chart,
the table of variants (and two compared), the sweep, the recipe search, the Netron
graph of the current artifact, and export. A new model clears every panel at once and starts from its
baseline. Whenever a panel's config changes the current variant follows:

- already in the cache: shown at once, on the calling (UI) thread;
- otherwise measured on one worker thread while the card says "measuring...".
  The latest setting wins: a generation counter marks every request, a result that
  is no longer the latest is added to the study (it is a real measurement) but never
  shown as current, and at most one measurement runs with one waiting (the latest).

The UI thread never waits for a measurement; ``wait_idle`` is for scripts and tests.
"""

from __future__ import annotations

import dataclasses
import html
import threading
import time
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import traitlets as T

from widgets.compression_panels import PruningPanel, QuantizationPanel
from widgets.export_panel import ExportPanel
from widgets.frontend_sync import FrontendSync, resend_tree
from widgets.metrics_card import SPINNER, MetricsCard
from widgets.model_picker import ModelPicker
from widgets.netron_view import NetronView
from widgets.runtime_panel import RuntimePanel
from widgets.search_panel import SearchPanel
from widgets.sweep_panel import SweepPanel
from widgets.tradeoff_chart import TradeoffChart
from widgets.variants_panel import VariantsPanel
from workbench.cache import Cache
from workbench.devices.registry import HOST, get_device, list_devices
from workbench.devices.view import variant_status
from workbench.errors import WorkbenchError
from workbench.models import list_models
from workbench.pipeline import (
    MeasureSettings,
    check_applicable,
    evaluate,
    torch_steps_unavailable,
    variant_key,
)
from workbench.recipe import Recipe
from workbench.runtimes.parity import link_cross_runtime_parity
from workbench.study import Study

__all__ = ["TAB_TITLES", "Workbench"]

TAB_TITLES = ("Variants", "Sweep", "Search", "Export", "Graph (Netron)")
_GRAPH_TAB = TAB_TITLES.index("Graph (Netron)")


@dataclass(frozen=True)
class _Job:
    generation: int
    model: Any
    recipe: Recipe
    remeasure: bool = False  # time a cached variant again instead of showing it
    settings: Any = None  # the settings (runtime) it was asked in; None: the app's


class Workbench(W.VBox):
    """Pick a model, compress it, and see what each setting costs and buys.

    Args:
        model: a sample name (default "digits-cnn"), ``torchvision:<arch>``, a model
            file path, or a loaded ``Model``.
        cache: where variants are kept (default: ``Cache()``, the user's cache folder).
        threads: ONNX Runtime threads for latency and memory measurements.
        settings: full measurement settings (overrides ``threads``).
        device: the target device chosen at first (default ``host``, this machine);
            any name of ``workbench.devices.list_devices()``.

    Traits (read-only):
        model: the loaded Model.
        study: the Study of every variant measured in this session (the chart's points).
        recipe: the Recipe the panels describe.
        current: the Result shown in the card; current_key its cache key.
        baseline: the baseline Result the card compares with.
        busy: a measurement for the latest setting is running or waiting.
        status: one line of what happened last (with timings).
        error: the last failed measurement's message, "" otherwise.
        last_update_seconds: how long the last shown update took from the request.
        first_figures_seconds: for the last new variant, how long from the request
            until its first figures (accuracy, sizes) were on the card.

    Traits (settable):
        device: the target device chosen in the device dropdown. The chart draws its
            budget lines, greys the variants that do not fit and takes the frontier
            within its budget; the card says whether the current variant fits, with
            its headroom and the deciding figure, and on a device other than this
            machine its latency there (measured there, or a labelled estimate).
        runtime: the runtime the current variant is built for and measured in (one of
            ``workbench.runtimes.list_runtimes()``; default the settings' runtime).
            Choosing another measures the current recipe in it (or shows it from the
            cache); what it cannot do is explained under its dropdown.
    """

    model = T.Any(None, read_only=True)
    study = T.Any(None, read_only=True)
    recipe = T.Any(None, read_only=True)
    current = T.Any(None, read_only=True)
    current_key = T.Unicode("", read_only=True)
    baseline = T.Any(None, read_only=True)
    busy = T.Bool(False, read_only=True)
    status = T.Unicode("", read_only=True)
    error = T.Unicode("", read_only=True)
    last_update_seconds = T.Float(0.0, read_only=True)
    first_figures_seconds = T.Float(0.0, read_only=True)
    device = T.Unicode(HOST)
    runtime = T.Unicode("")

    def __init__(
        self,
        model: Any = "digits-cnn",
        cache: Cache | None = None,
        threads: int = 1,
        *,
        settings: MeasureSettings | None = None,
        device: str = HOST,
        **kwargs,
    ) -> None:
        self.cache = cache if cache is not None else Cache()
        # Checked (an unknown name lists the known ones) and, for host, detected and
        # micro-benchmarked now, once per process: before any variant is timed, so the
        # benchmark never runs beside a latency measurement.
        get_device(device)
        self.settings = settings if settings is not None else MeasureSettings(threads=threads)
        # _lock guards the job bookkeeping; _display_lock makes "is this still the
        # latest? then show it" one step, so a stale result can never overwrite a newer one.
        self._lock = threading.Lock()
        self._display_lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._generation = 0
        self._pending: _Job | None = None
        self._worker: threading.Thread | None = None
        self._requested_at: dict[int, float] = {}
        self._loading_recipe = False

        self.picker = ModelPicker(initial=None)
        # Teachers to distil from: the labelled sample models (the registry's own names).
        self._teachers = tuple(list_models("digits-*"))
        self.pruning = PruningPanel(teachers=self._teachers)
        self.quantization = QuantizationPanel()
        self.runtime_panel = RuntimePanel(runtime=self.settings.runtime)
        self.card = MetricsCard()
        self.chart = TradeoffChart(cache=self.cache)
        self.chart.device = device
        self.device_w = W.Dropdown(
            options=list_devices(),
            value=device,
            description="device",
            tooltip="the target device: its memory budget and storage on the chart and card",
        )
        self._study_lock = threading.Lock()  # the worker, the sweep and the search add points
        self.sweep = SweepPanel(
            cache=self.cache, settings=self.settings, study_lock=self._study_lock
        )
        # The recipe search: its candidates land on the chart and in the table as measured.
        self.search = SearchPanel(
            cache=self.cache, settings=self.settings, study_lock=self._study_lock
        )
        self.netron = NetronView()
        self.exporter = ExportPanel(cache=self.cache, settings=self.settings)
        self.variants = VariantsPanel(cache=self.cache, device=device)
        self._status_w = W.HTML()

        # The graph sits in a tab and follows the current variant only while that tab
        # is open: Netron takes the focus when it loads a model, which would scroll the
        # page to it on every slider move.
        self.tabs = tabs = W.Tab(
            children=[self.variants, self.sweep, self.search, self.exporter, self.netron]
        )
        for i, title in enumerate(TAB_TITLES):
            tabs.set_title(i, title)
        # Controls in a left column, the chart and the card on the right: on a laptop
        # screen (1280x800) the sliders and the chart are in view together. On a narrow
        # screen the columns stack.
        left = W.VBox(
            [self.picker, self.runtime_panel, self.pruning, self.quantization],
            layout=W.Layout(flex="0 1 470px", min_width="360px", padding="0 16px 0 0"),
        )
        right = W.VBox(
            [self.device_w, self.chart, self.card, self.card.remeasure_button],
            layout=W.Layout(flex="1 1 640px", min_width="420px"),
        )
        super().__init__(
            children=[
                W.HTML("<h2 style='margin: 4px 0'>Edge Workbench</h2>"),
                self._status_w,
                W.HBox(
                    [left, right],
                    layout=W.Layout(flex_flow="row wrap", align_items="flex-start"),
                ),
                tabs,
                # Invisible: makes a page that loaded while a measurement finished current.
                FrontendSync(self._resend_state),
            ],
            **kwargs,
        )
        self.picker.observe(self._on_model, names="model")
        self.picker.observe(self._on_loading, names="loading")
        self.pruning.observe(self._on_config, names=["config", "finetune_config"])
        self.quantization.observe(self._on_config, names="config")
        self.chart.observe(self._on_pick, names="picked_key")
        self.sweep.observe(self._on_sweep_result, names="last_result")
        self.search.observe(self._on_sweep_result, names="last_step")
        self.card.observe(lambda _c: self.remeasure(), names="remeasure_requests")
        self.set_trait("runtime", self.settings.runtime)
        self.sweep.runtimes = (self.settings.runtime,)  # shown selected; follows the choice
        T.link((self, "runtime"), (self.runtime_panel, "runtime"))
        T.dlink((self, "runtime"), (self.quantization, "runtime"))  # its words, its settings
        self.observe(self._on_runtime, names="runtime")
        self.observe(self._on_state, names=["busy", "status", "error"])
        self.set_trait("device", device)
        T.link((self, "device"), (self.device_w, "value"))
        T.dlink((self, "device"), (self.variants, "device"))
        self.observe(self._on_device, names="device")
        tabs.observe(lambda _c: self._sync_graph(), names="selected_index")
        if model is not None:
            if isinstance(model, str) and model in (self.picker.sample_w.options or ()):
                self.picker.sample_w.value = model  # loads it; _on_model follows
            elif isinstance(model, str):
                self.picker.path_w.value = model
                self.picker.load(model)
            else:
                self.picker.use(model)
        if self.model is None and self.picker.error:
            self.set_trait("error", self.picker.error)

    # -- requests -------------------------------------------------------------------

    def _on_loading(self, change: dict) -> None:
        """A model is being loaded: nothing shown of the current one may pass for it."""
        if change["new"]:
            self.card.busy = f"loading {change['new']}..."
            self.netron.path = ""
        elif self.picker.error:  # the load failed: the current model stays
            self.card.busy = ""
            self._sync_graph()

    def _on_model(self, change: dict) -> None:
        model = change["new"]
        if model is None:
            return
        self.sweep.cancel()
        self.search.cancel()
        study = Study(model.name, model_info=model.describe())
        with self._display_lock:
            with self._lock:
                self._generation += 1  # whatever runs for the old model is now stale
                self._pending = None
            previous = self.recipe
            with self.hold_trait_notifications():
                self.set_trait("model", model)
                self.set_trait("study", study)
                self.set_trait("current", None)
                self.set_trait("current_key", "")
                self.set_trait("baseline", None)
                self.set_trait("error", "")
            # Every panel showing the previous model's variant is cleared now, not when
            # the new model's first figures arrive.
            self.card.result, self.card.baseline, self.card.error = None, None, ""
            self.card.progress = None
            self.sweep.study, self.sweep.model = study, model
            self.search.study, self.search.model = study, model
            self.exporter.model = model
            self.exporter.clear()
            self.netron.path = ""
            self.variants.study = study
            self._loading_recipe = True  # one request below, not one per control reset
            try:
                self.pruning.unavailable = torch_steps_unavailable(model)
                # A model distilling from itself learns nothing new.
                self.pruning.teachers = tuple(t for t in self._teachers if t != model.name)
                # A new model starts from its baseline: the previous model's recipe is
                # not carried over (it may not suit it, and its first figures would come
                # only after a long measurement).
                self.pruning.set_config(None, None)
                self.quantization.set_config(None)
            finally:
                self._loading_recipe = False
            self.chart.current_key = ""
            self.chart.study = study
            self.runtime_panel.model = model
        self.request()
        if previous is not None and not previous.is_baseline:
            self.set_trait(
                "status",
                f"{model.name}: settings reset to the baseline ({previous.name} was set for "
                "the previous model); " + self.status,
            )

    @T.validate("device")
    def _valid_device(self, proposal: dict) -> str:
        try:  # an unknown name: one clear error listing the known ones, nothing changed
            name = get_device(proposal["value"]).name
        except WorkbenchError as exc:
            raise T.TraitError(str(exc)) from None
        if hasattr(self, "device_w") and name not in self.device_w.options:
            # A profile registered since the app started (load_profiles): offer it too.
            current = self.device_w.value
            self.device_w.options = list_devices()
            self.device_w.value = current
        return name

    def _on_device(self, change: dict) -> None:
        """Another target device: the chart and the card show the variants on it."""
        self.chart.device = change["new"]
        self.card.device_status = self._device_status(self.current)

    def _device_status(self, result: Any) -> Any:
        """``result`` on the chosen device (the engine decides), or None."""
        if result is None or not self.device:
            return None
        try:
            return variant_status(result, self.device, self.cache)
        except (WorkbenchError, OSError):  # e.g. the artifact was deleted meanwhile
            return None

    def _on_config(self, change: dict) -> None:
        if not self._loading_recipe:
            self.request()

    @T.validate("runtime")
    def _known_runtime(self, proposal: dict) -> str:
        # Checked before anything follows it: an unknown name changes nothing.
        if proposal["value"] not in self.runtime_panel.options:
            raise T.TraitError(
                f"unknown runtime {proposal['value']!r}: use one of "
                f"{', '.join(self.runtime_panel.options)}"
            )
        return proposal["value"]

    def _on_runtime(self, change: dict) -> None:
        """Another runtime: every measurement from now on is in it; the current recipe
        is shown in it (from the cache, or measured)."""
        old, new = change["old"], change["new"]
        self.settings = dataclasses.replace(self.settings, runtime=new)
        self.exporter.settings = self.settings
        if tuple(self.sweep.runtimes) in ((), (old,)):  # not chosen by hand: follow
            self.sweep.runtimes = (new,)
        self.sweep.settings = self.settings
        self.search.settings = self.settings
        if not self._loading_recipe:
            self.request()

    def _on_pick(self, change: dict) -> None:
        key = change["new"]
        if not key or self.study is None:
            return
        result = next((r for r in self.study.results if r.key == key), None)
        if result is not None:
            # A point measured in another runtime: show it in its own runtime.
            self._loading_recipe = True
            try:
                self.runtime = result.runtime
            finally:
                self._loading_recipe = False
            self.load_recipe(result.recipe)

    def _on_sweep_result(self, change: dict) -> None:
        # The sweep (or search) panel has added the result to the shared study already.
        self.chart.refresh()
        self.variants.refresh()

    def load_recipe(self, recipe: Recipe) -> None:
        """Put ``recipe``'s steps in the panels and show that variant (one request)."""
        self._loading_recipe = True
        try:
            self.pruning.set_config(recipe.get("prune"), recipe.get("finetune"))
            self.quantization.set_config(recipe.get("qat") or recipe.get("quantize"))
        finally:
            self._loading_recipe = False
        self.request()

    def remeasure(self) -> None:
        """Time the variant the panels describe again, off the UI thread (its latency,
        memory and profile on the cached artifact; nothing is rebuilt)."""
        self.request(remeasure=True)

    def request(self, *, remeasure: bool = False) -> None:
        """Show the variant the panels describe: from the cache now, else measured off-thread."""
        model = self.model
        invalid = self.pruning.error or self.quantization.error
        if invalid:  # a config of None here means "invalid", not "no such step"
            with self._lock:
                self._generation += 1  # whatever is measuring is no longer wanted
                self._pending = None
            self._fail(self._generation, invalid)
            return
        recipe = Recipe.of(
            self.pruning.config, self.quantization.config, self.pruning.finetune_config
        )
        if self.quantization.qat_config is not None:  # QAT replaces post-training int8
            recipe = Recipe((*recipe.steps, self.quantization.qat_config))
        self.set_trait("recipe", recipe)
        self.runtime_panel.recipe = recipe
        if model is None:
            return
        started = time.perf_counter()
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._requested_at = {generation: started}
        try:
            # A recipe the chosen runtime cannot measure: the engine's reason, at once.
            check_applicable(model, recipe, self.settings.runtime)
        except WorkbenchError as exc:
            with self._lock:
                self._pending = None
            self._fail(
                generation, f"{recipe.name} cannot be measured in {self.settings.runtime}: {exc}"
            )
            return
        try:
            hit = self.cache.get(variant_key(model, recipe, self.settings))
        except WorkbenchError as exc:
            self._fail(generation, str(exc))
            return
        if hit is not None and not remeasure:
            with self._lock:
                self._pending = None  # nothing older is worth measuring now
            self._display(hit, generation, model, source="cached")
            return
        # Busy first: a fast worker may finish (and clear it) before this returns.
        with self._display_lock:
            if not self._is_latest(generation):
                return
            self.set_trait("busy", True)
            verb = "re-measuring" if hit is not None else "measuring"
            self.set_trait("status", f"{verb} {recipe.name}...")
            what = f"{model.name}'s baseline" if recipe.is_baseline else recipe.name
            what += f" in {self.settings.runtime}"
            self.card.busy = (
                f"re-measuring {what} (timing, memory and profile)..."
                if hit is not None
                else f"measuring {what} (a new variant: export, then measure)..."
            )
        with self._lock:
            self._pending = _Job(
                generation, model, recipe, remeasure=hit is not None, settings=self.settings
            )
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="workbench-measure", daemon=True
                )
                self._worker.start()

    def _resend_state(self) -> None:
        """Send every panel's state to the page again (see widgets.frontend_sync)."""
        # Under the display lock: a result being shown is sent whole, before or after.
        with self._display_lock:
            resend_tree(self)

    def _is_latest(self, generation: int) -> bool:
        with self._lock:
            return generation == self._generation

    def _work(self) -> None:
        while True:
            with self._lock:
                job = self._pending
                self._pending = None
                if job is None:
                    self._worker = None
                    self._idle.notify_all()
                    return
            try:
                result = evaluate(
                    job.model,
                    job.recipe,
                    settings=job.settings or self.settings,
                    cache=self.cache,
                    remeasure=job.remeasure,
                    on_progress=lambda p, job=job: self._show_progress(p, job),
                )
            except Exception as exc:  # noqa: BLE001 - shown in the panel, never kills the worker
                message = (
                    str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
                )
                self._fail(job.generation, f"{job.recipe.name} could not be measured: {message}")
                continue
            try:
                shown = self._display(result, job.generation, job.model, source="measured")
            except Exception as exc:  # noqa: BLE001 - a panel that fails to redraw must not
                # end the worker silently: every later setting would wait for it forever.
                self._fail(
                    job.generation,
                    f"{job.recipe.name} was measured but could not be shown: "
                    f"{type(exc).__name__}: {exc}",
                )
                continue
            if not shown:
                self._add_to_study(result, job.model)  # stale: a point, not the current one
            else:
                try:
                    self._link_parity(result, job.model)
                except Exception as exc:  # noqa: BLE001 - the figures shown stay; say why
                    self.set_trait("status", f"{self.status}; parity not measured: {exc}")

    # -- display --------------------------------------------------------------------

    def _baseline_for(self, model: Any, runtime: str | None = None) -> Any:
        """The cached baseline of ``model`` in ``runtime`` (default: the chosen one)."""
        settings = self.settings
        if runtime is not None and runtime != settings.runtime:
            settings = dataclasses.replace(settings, runtime=runtime)
        return self.cache.get(variant_key(model, Recipe(), settings))

    def _add_to_study(self, result: Any, model: Any) -> None:
        if model is not self.model or self.study is None:
            return  # measured for a model no longer loaded
        baseline = None
        if self.study.baseline_in(result.runtime) is None and not result.recipe.is_baseline:
            baseline = self._baseline_for(model, result.runtime)
        with self._study_lock:
            if baseline is not None:
                self.study.add(baseline)
            self.study.add(result)
        self.chart.refresh()
        self.variants.refresh()

    def _link_parity(self, result: Any, model: Any) -> None:
        """Compare ``result``'s file with the same recipe's files in the other runtimes
        the study holds (measured once on the built files, cached with both variants,
        see ``link_cross_runtime_parity``) and show the figures if it is still current."""
        if self.study is None or model is not self.model:
            return
        with self._study_lock:
            group = [r for r in self.study.results if r.recipe == result.recipe]
        if len({r.runtime for r in group}) < 2:
            return
        linked = {r.key: r for r in link_cross_runtime_parity(group, model, self.cache)}
        with self._study_lock:
            self.study.results = [linked.get(r.key, r) for r in self.study.results]
        with self._display_lock:
            mine = linked.get(result.key)
            current = self.card.result
            if mine is not None and current is not None and current.key == mine.key:
                self.card.result = mine
                self.set_trait("current", mine)

    def _display(self, result: Any, generation: int, model: Any, *, source: str) -> bool:
        """Show ``result`` as current if ``generation`` is still the latest; True if shown."""
        with self._display_lock:
            if not self._is_latest(generation) or model is not self.model:
                return False
            baseline = (
                result if result.recipe.is_baseline else self._baseline_for(model, result.runtime)
            )
            with self._study_lock:
                if self.study.baseline_in(result.runtime) is None and baseline is not None:
                    self.study.add(baseline)
                self.study.add(result)
            self.card.progress = None
            with self.card.hold_trait_notifications():
                self.card.result, self.card.baseline = result, baseline
                self.card.device_status = self._device_status(result)
            self.card.error, self.card.busy = "", ""
            if self.chart.current_key != result.key:
                self.chart.current_key = result.key  # redraws
            else:
                self.chart.refresh()
            self.variants.refresh()
            self.exporter.result = result
            self._sync_graph(result)
            with self._lock:
                started = self._requested_at.get(generation, time.perf_counter())
            # From the request to every panel updated (for a measured variant: the
            # measurement included).
            seconds = time.perf_counter() - started
            with self.hold_trait_notifications():
                self.set_trait("current", result)
                self.set_trait("current_key", result.key)
                self.set_trait("baseline", baseline)
                self.set_trait("error", "")
                self.set_trait("last_update_seconds", seconds)
                self.set_trait(
                    "status", f"{result.recipe.name}: {source}, shown in {seconds:.2f} s"
                )
                self.set_trait("busy", False)
            return True

    def _show_progress(self, progress: Any, job: _Job) -> None:
        """Show a variant's first figures while the rest are measured (if still wanted)."""
        with self._display_lock:
            if not self._is_latest(job.generation) or job.model is not self.model:
                return
            if progress.stage == "complete":
                return  # _display shows the finished result
            self.card.progress = progress
            with self._lock:
                started = self._requested_at.get(job.generation)
            if started is not None and progress.stage == "accuracy":
                self.set_trait("first_figures_seconds", time.perf_counter() - started)

    def _sync_graph(self, result: Any = None) -> None:
        """Point the graph at ``result``'s (default: the current) artifact, if its tab is open."""
        result = result if result is not None else self.current
        if self.tabs.selected_index == _GRAPH_TAB and result is not None:
            self.netron.path = str(result.artifact)

    def _fail(self, generation: int, message: str) -> None:
        with self._display_lock:
            if not self._is_latest(generation):
                return
            with self.hold_trait_notifications():
                self.set_trait("error", message)
                self.set_trait("status", "the last setting could not be measured")
                self.set_trait("busy", False)
            self.card.busy, self.card.error, self.card.progress = "", message, None

    def _on_state(self, change: dict) -> None:
        colour = "#b00020" if self.error else ("#555" if self.busy else "#1a7f37")
        icon = SPINNER if self.busy else ""
        text = html.escape(" · ".join(t for t in (self.status, self.error) if t))
        self._status_w.value = f'<span style="color:{colour}">{icon}{text}</span>'

    # -- for scripts and tests ------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no measurement runs or waits; returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._worker is not None or self._pending is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

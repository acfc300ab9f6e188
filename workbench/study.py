"""Sweeps over recipes, the Study they produce, and its Pareto frontier."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.atomic import write_text_atomic
from workbench.cache import Cache
from workbench.errors import WorkbenchError
from workbench.formatting import format_bytes, format_count, format_ms, format_percent
from workbench.pipeline import MeasureSettings, check_applicable, evaluate
from workbench.recipe import FineTuneConfig, PruneConfig, QuantizeConfig, Recipe, StepConfig
from workbench.results import Result
from workbench.runtimes import DEFAULT_RUNTIME

__all__ = [
    "DEFAULT_OBJECTIVES",
    "FIGURES",
    "METRICS",
    "METRICS_BY_COLUMN",
    "OBJECTIVE_COLUMNS",
    "Figure",
    "Study",
    "compare_results",
    "grid",
    "machine_of",
    "pareto_mask",
    "sweep",
    "variant_table",
]

log = logging.getLogger(__name__)

STUDY_FORMAT = 1
# Where sweep() evaluates the variants: this process, or a Ray cluster.
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Figure:
    """One measured figure: the one place its name, unit, format and direction live.

    Attributes:
        column: its column in ``Study.to_dataframe()``.
        label: its name for people ("latency p50").
        kind: "points" for a fraction (changes in percentage points), "ratio" otherwise.
        better: "max" or "min".
        unit: "fraction", "ms", "bytes" or "count": how its values are written.
        title: its axis title, with the unit ("latency p50 (ms, batch 1)").
        read: how to read it from a Result.
        compact: shown in the compact views (metrics card, variants table, tooltips);
            the report and the objectives take every figure.
    """

    column: str
    label: str
    kind: str
    better: str
    unit: str
    title: str
    read: Callable[[Result], Any]
    compact: bool = True

    def text(self, value: Any, *, precise: bool = True) -> str:
        """``value`` written with its unit; fractions get two decimals when ``precise``
        (99.25% and 99.60% differ by one test image on digits), else one."""
        if self.unit == "fraction":
            return format_percent(value, 2 if precise else 1)
        return _FORMATTERS[self.unit](value)

    @property
    def axis_format(self) -> str:
        """The d3-format of its chart axis: fractions as percents, the rest to at most
        3 significant digits with SI prefixes ("44.7M", never "44.717074M")."""
        return {"fraction": ".3~%", "ms": ".3~r"}.get(self.unit, ".3~s")


_FORMATTERS: dict[str, Callable[[Any], str]] = {
    "ms": format_ms,
    "bytes": format_bytes,
    "count": format_count,
}


def _latency(result: Result, figure: str) -> float | None:
    """A latency figure, or None for a runtime that times nothing here (TFLite Micro)."""
    lat = result.metrics.latency
    return None if lat is None else getattr(lat, figure)


# Every measured figure, in display order: the one table study, CLI, charts, the
# metrics card, the trade-off chart and the report read.
METRICS: tuple[Figure, ...] = (
    Figure("accuracy", "accuracy", "points", "max", "fraction",
           "top-1 accuracy (test split)", lambda r: r.metrics.accuracy),
    Figure("agreement", "agreement", "points", "max", "fraction",
           "agreement with the float model", lambda r: r.metrics.agreement),
    Figure("latency_p50_ms", "latency p50", "ratio", "min", "ms",
           "latency p50 (ms, batch 1)", lambda r: _latency(r, "p50")),
    Figure("latency_p90_ms", "latency p90", "ratio", "min", "ms",
           "latency p90 (ms, batch 1)", lambda r: _latency(r, "p90")),
    Figure("latency_p99_ms", "latency p99", "ratio", "min", "ms",
           "latency p99 (ms, batch 1)", lambda r: _latency(r, "p99"), compact=False),
    Figure("size_bytes", "size", "ratio", "min", "bytes",
           "artifact size (bytes)", lambda r: r.metrics.size_bytes),
    Figure("compressed_bytes", "compressed size", "ratio", "min", "bytes",
           "deflate-compressed size (bytes)", lambda r: r.metrics.compressed_bytes),
    Figure("peak_memory_bytes", "peak memory", "ratio", "min", "bytes",
           "peak inference memory (bytes)", lambda r: r.metrics.memory.peak_bytes),
    Figure("macs", "MACs", "ratio", "min", "count",
           "multiply-accumulates per inference", lambda r: r.metrics.macs),
    Figure("params", "params", "ratio", "min", "count",
           "weight elements", lambda r: r.metrics.params),
    Figure("nonzero_params", "non-zero params", "ratio", "min", "count",
           "non-zero weight elements", lambda r: r.metrics.nonzero_params),
)  # fmt: skip
METRICS_BY_COLUMN: dict[str, Figure] = {f.column: f for f in METRICS}

# The figures a variant is shown and compared on in compact views, in display order.
FIGURES: tuple[Figure, ...] = tuple(f for f in METRICS if f.compact)

# Columns of Study.to_dataframe() that can be objectives, with the better direction.
OBJECTIVE_COLUMNS: dict[str, str] = {f.column: f.better for f in METRICS}
DEFAULT_OBJECTIVES: dict[str, str] = {
    "accuracy": "max",
    "latency_p50_ms": "min",
    "size_bytes": "min",
}


# Steps that train the module, and so count towards ``finetune_epochs``.
_TRAINING_KINDS = ("finetune", "gradual_prune", "qat", "distill")
# The recipe's structure as columns (Study.to_dataframe(), its CSV, the charts).
VARIANT_COLUMNS = (
    "model",
    "runtime",
    "prune_method",
    "sparsity",
    "quant_scheme",
    "finetune_epochs",
    "teacher",
)


def variant_columns(result: Result) -> dict[str, Any]:
    """What a variant is, as columns rather than a name to parse back: its model,
    runtime, pruning method and sparsity, quantization scheme, training epochs and the
    teacher it was distilled from (None where the recipe has no such step)."""
    recipe = result.recipe
    prune = recipe.get("prune") or recipe.get("gradual_prune")
    quant = recipe.get("quantize")
    qat = recipe.get("qat")
    scheme = getattr(quant, "scheme", None) or ("int8-qat" if qat is not None else None)
    if scheme is None:  # a quantization the runtime required (TFLite Micro's int8)
        scheme = next((s.get("scheme") for s in result.steps if s.get("required_by")), None)
    training = [s for s in recipe.steps if s.kind in _TRAINING_KINDS]
    epochs = sum(
        int(getattr(s, "epochs", 0) or 0)
        + int(getattr(s, "epochs_per_step", 0) or 0) * int(getattr(s, "steps", 0) or 0)
        for s in training
    )
    distill = recipe.get("distill")
    teacher = next((s.teacher for s in training if getattr(s, "teacher", None)), None)
    if teacher is None and distill is not None:  # no teacher named: the model itself
        teacher = result.model
    return {
        "model": result.model,
        "runtime": result.runtime,
        "prune_method": getattr(prune, "method", None),
        "sparsity": getattr(prune, "sparsity", None),
        "quant_scheme": scheme,
        "finetune_epochs": epochs if training else None,
        "teacher": teacher,
    }


def result_row(result: Result) -> dict[str, Any]:
    """One flat row of a result: what it is (VARIANT_COLUMNS), then every METRICS
    figure, as in Study.to_dataframe()."""
    m = result.metrics
    speed = m.comparison("baseline")
    lat = m.latency  # None: not measured in this runtime (NO_LATENCY), so no columns
    return {
        "recipe": result.recipe.name,
        **variant_columns(result),
        **{f.column: f.read(result) for f in METRICS},
        "latency_mean_ms": None if lat is None else lat.mean,
        # The middle half of the rounds' p50s (error bars), the interleaved speed-up
        # against the baseline with its middle half, and whether the timing was noisy.
        "latency_p50_low_ms": None if lat is None else lat.p50_low,
        "latency_p50_high_ms": None if lat is None else lat.p50_high,
        "speedup": speed.speedup if speed else None,
        "speedup_low": speed.low if speed else None,
        "speedup_high": speed.high if speed else None,
        "latency_noisy": result.noisy,
        "latency_runs": None if lat is None else lat.n,
        "threads": None if lat is None else lat.threads,
        "warnings": len(result.warnings),
        "is_baseline": result.recipe.is_baseline,
        "key": result.key,
        "artifact": str(result.artifact),
    }


def machine_of(result: Result) -> str:
    """The machine a result was measured on: its CPU model and logical cores, as in the
    cache key, and the device a cluster node was labelled with."""
    env = result.metrics.environment or {}
    machine = f"{env.get('cpu_model') or 'unknown CPU'} x{env.get('logical_cores', '?')}"
    device = (env.get("node") or {}).get("device")
    return f"{device}: {machine}" if device else machine


def frontier_group(result: Result, per_runtime: bool = False) -> str:
    """The group whose variants a frontier compares: the machine a result was measured
    on (see machine_of), and with ``per_runtime`` its runtime too ("litert on <machine>")."""
    machine = machine_of(result)
    return f"{result.runtime} on {machine}" if per_runtime else machine


def pareto_mask(df: pd.DataFrame, objectives: dict[str, str]) -> np.ndarray:
    """True for the rows no other row dominates (as good in every objective, better in one).

    Rows with a missing value in an objective are never on the frontier.
    """
    for col, sense in objectives.items():
        if col not in df.columns:
            raise WorkbenchError(
                f"unknown objective {col!r}", f"use one of: {', '.join(OBJECTIVE_COLUMNS)}"
            )
        if sense not in ("min", "max"):
            raise WorkbenchError(f"objective direction {sense!r} for {col}", "use 'min' or 'max'")
    if df.empty:
        return np.zeros(0, dtype=bool)
    # Turn every objective into "smaller is better".
    values = np.column_stack(
        [
            df[c].astype(float).to_numpy() * (-1.0 if s == "max" else 1.0)
            for c, s in objectives.items()
        ]
    )
    valid = ~np.isnan(values).any(axis=1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = values[valid]
        dominated = np.all(others <= values[i], axis=1) & np.any(others < values[i], axis=1)
        mask[i] = not dominated.any()
    return mask


@dataclass
class Study:
    """The evaluated variants of one model, in the order they were evaluated."""

    model: str
    results: list[Result] = field(default_factory=list)
    model_info: dict[str, Any] = field(default_factory=dict)
    # Variants that could not be built or measured: {"recipe", "recipe_name", "error"}.
    # Kept so a sweep goes on past one failure and says which ones failed; never on the
    # frontier (they have no figures).
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def baseline(self) -> Result | None:
        return next((r for r in self.results if r.recipe.is_baseline), None)

    def add(self, result: Result) -> None:
        """Add a result, replacing one with the same recipe measured in the same runtime
        (the same recipe in another runtime is another variant)."""
        self.results = [
            r for r in self.results if r.recipe != result.recipe or r.runtime != result.runtime
        ] + [result]
        self.failures = [
            f for f in self.failures if not _same_failure(f, result.recipe.name, result.runtime)
        ]

    def add_failure(
        self, recipe: Recipe, error: BaseException, runtime: str = DEFAULT_RUNTIME
    ) -> None:
        """Record that ``recipe`` failed in ``runtime`` with ``error`` (replacing an
        earlier record of that recipe in that runtime)."""
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        entry = {
            "recipe": recipe.to_dict(),
            "recipe_name": recipe.name,
            "runtime": runtime,
            "error": f"{type(error).__name__}: {text}"[:500]
            if not isinstance(error, WorkbenchError)
            else text[:500],
        }
        self.failures = [f for f in self.failures if not _same_failure(f, recipe.name, runtime)] + [
            entry
        ]

    def runtimes(self) -> list[str]:
        """The runtimes the variants were measured in, in the order they first appear."""
        return list(dict.fromkeys(r.runtime for r in self.results))

    def baseline_in(self, runtime: str) -> Result | None:
        """The baseline measured in ``runtime``, or None."""
        return next(
            (r for r in self.results if r.recipe.is_baseline and r.runtime == runtime), None
        )

    def to_dataframe(self) -> pd.DataFrame:
        """One row per variant: recipe, figures, warning count, cache key, artifact."""
        return pd.DataFrame([result_row(r) for r in self.results])

    def objectives_used(self, objectives: dict[str, str] | None = None) -> dict[str, str]:
        """The objectives the frontier is computed on: ``objectives`` (default
        DEFAULT_OBJECTIVES), with agreement standing in for accuracy when no variant has
        labels to score accuracy on, and without latency when no variant was timed."""
        objectives = dict(objectives or DEFAULT_OBJECTIVES)
        if "accuracy" in objectives and all(r.metrics.accuracy is None for r in self.results):
            objectives = {("agreement" if k == "accuracy" else k): v for k, v in objectives.items()}
        # No variant timed (TFLite Micro times nothing here): a latency objective would
        # leave every variant off the frontier, so it is taken over the other figures.
        if all(r.metrics.latency is None for r in self.results):
            rest = {k: v for k, v in objectives.items() if not k.startswith("latency_")}
            objectives = rest or objectives
        return objectives

    def machines(self) -> list[str]:
        """The machines the variants were measured on (see machine_of), in order. More
        than one only when a cluster of unlike machines ran the sweep."""
        return list(dict.fromkeys(machine_of(r) for r in self.results))

    def frontier(
        self, objectives: dict[str, str] | None = None, *, per_runtime: bool = False
    ) -> list[Result]:
        """The Pareto-optimal variants over ``objectives`` (column -> "min"/"max").

        Variants measured on different machines are never compared: each machine has a
        frontier of its own (see frontiers), and this is all of them. With
        ``per_runtime`` each runtime has its own frontier too (a variant is then on the
        frontier when no variant measured in the same runtime dominates it); without it,
        variants of every runtime compete on one frontier.
        """
        fronts = self.frontiers(objectives, per_runtime=per_runtime)
        keep = {id(r) for front in fronts.values() for r in front}
        return [r for r in self.results if id(r) in keep]

    def frontiers(
        self, objectives: dict[str, str] | None = None, *, per_runtime: bool = False
    ) -> dict[str, list[Result]]:
        """The frontier of each machine the variants were measured on (of each runtime
        on each machine with ``per_runtime``, each over the objectives its own variants
        were measured on), keyed by :func:`frontier_group`."""
        used = self.objectives_used(objectives)
        out = {}
        groups = dict.fromkeys(frontier_group(r, per_runtime) for r in self.results)
        for group in groups:
            results = [r for r in self.results if frontier_group(r, per_runtime) == group]
            if per_runtime:  # a runtime's variants may lack a figure another's have
                used = Study(self.model, results).objectives_used(objectives)
            df = pd.DataFrame([result_row(r) for r in results])
            mask = pareto_mask(df, used)
            out[group] = [r for r, keep in zip(results, mask, strict=True) if keep]
        return out

    def frontier_record(
        self, objectives: dict[str, str] | None = None, *, per_runtime: bool = False
    ) -> dict[str, Any]:
        """Which variants are on the frontier and for which objectives:
        ``{"objectives": {column: "min"/"max"}, "per_runtime": bool, "keys": [cache
        keys]}``; with ``per_runtime`` also ``"by_runtime": {runtime: [keys]}`` and
        ``"objectives_by_runtime"`` (each runtime's frontier is over the objectives its
        own variants were measured on)."""
        used = self.objectives_used(objectives)
        front = self.frontier(objectives, per_runtime=per_runtime)
        record: dict[str, Any] = {
            "objectives": used,
            "per_runtime": per_runtime,
            "keys": [r.key for r in front],
        }
        if per_runtime:
            record["by_runtime"] = {
                rt: [r.key for r in front if r.runtime == rt] for rt in self.runtimes()
            }
            record["objectives_by_runtime"] = {
                rt: Study(self.model, [r for r in self.results if r.runtime == rt]).objectives_used(
                    objectives
                )
                for rt in self.runtimes()
            }
        return record

    def to_dict(
        self,
        objectives: dict[str, str] | None = None,
        *,
        per_runtime: bool = False,
        devices: dict[str, Any] | None = None,
    ) -> dict:
        """The study as JSON-ready data, with its frontier over ``objectives`` (default
        DEFAULT_OBJECTIVES; one per runtime with ``per_runtime``) recorded beside the
        results (it is derived, not read back).

        Args:
            devices: a device matrix record (``workbench.devices.gate.study_device_record``:
                variants x devices pass/fail with the deciding figure, and the frontier
                within each device's budget), recorded under ``"devices"`` (derived too).
        """
        d = {
            "format": STUDY_FORMAT,
            "model": self.model,
            "model_info": self.model_info,
            "results": [r.to_dict() for r in self.results],
            "failures": list(self.failures),
            "frontier": self.frontier_record(objectives, per_runtime=per_runtime),
        }
        if devices is not None:
            d["devices"] = devices
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Study:
        if not isinstance(d, dict):
            raise WorkbenchError(
                f"a study is a JSON object, not {type(d).__name__ if d is not None else 'null'}",
                "pass the file `workbench sweep --out` wrote",
            )
        if d.get("format") != STUDY_FORMAT:
            raise WorkbenchError(
                f"unsupported study format {d.get('format')!r}",
                f"re-run the sweep with this version of the workbench (format {STUDY_FORMAT})",
            )
        if not isinstance(d["results"], list):
            raise WorkbenchError(
                "the study's results are not a list", "pass the file `workbench sweep --out` wrote"
            )
        results = [Result.from_dict(r) for r in d["results"]]
        for r in results:
            _check_figures(r)
        failures = d.get("failures", [])
        if not isinstance(failures, list) or not all(
            isinstance(f, dict) and isinstance(f.get("error"), str) for f in failures
        ):
            raise WorkbenchError(
                "the study's failures are not a list of {recipe, error} entries",
                "pass the file `workbench sweep --out` wrote",
            )
        return cls(d["model"], results, d.get("model_info", {}), failures)

    def save(
        self,
        path: str | Path,
        objectives: dict[str, str] | None = None,
        *,
        per_runtime: bool = False,
        devices: dict[str, Any] | None = None,
    ) -> Path:
        """Write the study as JSON (atomically), recording its frontier over ``objectives``
        (one per runtime with ``per_runtime``) and the device matrix ``devices`` (see
        :meth:`to_dict`)."""
        path = Path(path)
        data = self.to_dict(objectives, per_runtime=per_runtime, devices=devices)
        write_text_atomic(path, json.dumps(data, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Study:
        """Read a study written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise WorkbenchError(
                f"no study file at {path}", "run `workbench sweep ... --out FILE` first"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkbenchError(
                f"{path} is not a study JSON file ({exc})",
                "pass the file `workbench sweep --out` wrote",
            ) from None
        try:
            return cls.from_dict(d)
        except WorkbenchError as exc:
            raise WorkbenchError(f"{path}: {exc.problem}", exc.fix) from None
        except KeyError as exc:
            raise WorkbenchError(
                f"{path} is not a complete study (missing {exc})",
                "pass the file `workbench sweep --out` wrote",
            ) from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise WorkbenchError(
                f"{path} is not a valid study ({str(exc).splitlines()[0][:200]})",
                "pass the file `workbench sweep --out` wrote",
            ) from None

    def to_csv(
        self,
        path: str | Path,
        objectives: dict[str, str] | None = None,
        *,
        per_runtime: bool = False,
        devices: dict[str, Any] | None = None,
    ) -> Path:
        """Write the DataFrame as CSV (atomically), with ``on_frontier`` (over
        ``objectives``, default DEFAULT_OBJECTIVES) and the objectives it was taken over
        (``frontier_objectives``, e.g. ``accuracy:max;latency_p50_ms:min``); with
        ``per_runtime`` each runtime's own frontier, said in ``frontier_per_runtime``.

        With a device matrix record ``devices`` (see :meth:`to_dict`), three columns per
        device: ``pass:<device>`` (True/False), ``device:<device>`` (the cell: pass or
        the threshold missed, with the deciding figure) and ``frontier:<device>`` (on the
        frontier within its budget)."""
        path = Path(path)
        df = self.to_dataframe()
        if not df.empty:
            record = self.frontier_record(objectives, per_runtime=per_runtime)
            keys = set(record["keys"])
            df["on_frontier"] = [k in keys for k in df["key"]]
            df["frontier_objectives"] = ";".join(
                f"{c}:{d}" for c, d in record["objectives"].items()
            )
            if per_runtime:
                df["frontier_per_runtime"] = True
            if devices is not None:
                matrix = devices["matrix"]
                for name in matrix["devices"]:
                    df[f"pass:{name}"] = [matrix["passed_matrix"][v][name] for v in df["recipe"]]
                    df[f"device:{name}"] = [matrix["matrix"][v][name] for v in df["recipe"]]
                    within = set(devices["frontiers"][name]["keys"])
                    df[f"frontier:{name}"] = [k in within for k in df["key"]]
        write_text_atomic(path, df.to_csv(index=False))
        return path


def _same_failure(failure: dict[str, Any], recipe_name: str, runtime: str) -> bool:
    """Whether ``failure`` records ``recipe_name`` in ``runtime`` (records from before
    failures named their runtime were all ONNX Runtime's)."""
    return (
        failure.get("recipe_name") == recipe_name
        and failure.get("runtime", DEFAULT_RUNTIME) == runtime
    )


def variant_table(
    study: Study,
    sort_by: str = "recipe",
    ascending: bool = True,
    *,
    device: str | None = None,
    cache: Cache | None = None,
) -> pd.DataFrame:
    """Every variant of ``study``, one row each: recipe, every figure, warnings, frontier.

    The rows a table (and its CSV) shows; ``sort_by`` is any of its columns (missing
    values last). Columns: ``recipe``, the :data:`FIGURES` columns, ``warnings``,
    ``on_frontier`` (over the study's default objectives) and ``key``; with variants of
    more than one runtime, ``runtime`` after ``recipe``. With a ``device``: ``fits``
    (bool) and ``fit`` (the line the card shows) before ``warnings``, and on a device
    other than ``host`` ``device_latency`` (measured there, else the labelled estimate);
    ``cache`` is where device-runner measurements were imported.

    Raises:
        WorkbenchError: ``sort_by`` is not a column of the table; an unknown device.
    """
    columns = ["recipe", *(f.column for f in FIGURES), "warnings", "on_frontier", "key"]
    if len(study.runtimes()) > 1:  # the same recipe once per runtime: say which
        columns.insert(1, "runtime")
    overlay = None
    if device is not None:
        from workbench.devices.view import device_overlay

        overlay = device_overlay(study.results, device, cache)
        extra = ["fits", "fit"] + ([] if overlay.is_host else ["device_latency"])
        at = columns.index("warnings")
        columns[at:at] = extra
    df = study.to_dataframe()
    if df.empty:
        if sort_by not in columns:
            raise WorkbenchError(f"cannot sort by {sort_by!r}", f"use one of: {', '.join(columns)}")
        return pd.DataFrame(columns=columns)
    df["on_frontier"] = pareto_mask(df, study.objectives_used())
    if overlay is not None:
        table = overlay.table
        df["fits"] = df["key"].map(table["fits"]).astype(bool)
        df["fit"] = df["key"].map(table["fit_text"])
        if not overlay.is_host:
            df["device_latency"] = df["key"].map(table["latency_text"])
    df = df[columns]
    if sort_by not in df.columns:
        raise WorkbenchError(f"cannot sort by {sort_by!r}", f"use one of: {', '.join(columns)}")
    return df.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")


def compare_results(a: Result, b: Result) -> list[dict[str, Any]]:
    """Variant ``b`` against variant ``a``, figure by figure.

    One dict per :data:`FIGURES` entry that either has: ``figure`` (the Figure),
    ``a`` and ``b`` (the values, None when not measured), ``difference`` (b - a) and
    ``ratio`` (b / a; None when a value is missing or a is 0), and ``better``: "a",
    "b" or "same" by the figure's direction (None when a value is missing).
    """
    row_a, row_b = result_row(a), result_row(b)
    rows = []
    for fig in FIGURES:
        va, vb = row_a[fig.column], row_b[fig.column]
        if va is None and vb is None:
            continue
        both = va is not None and vb is not None
        if not both:
            better = None
        elif va == vb:
            better = "same"
        else:
            b_wins = vb > va if fig.better == "max" else vb < va
            better = "b" if b_wins else "a"
        rows.append(
            {
                "figure": fig,
                "a": va,
                "b": vb,
                "difference": vb - va if both else None,
                "ratio": vb / va if both and va != 0 else None,
                "better": better,
            }
        )
    return rows


def _config_list(values: Any, what: str, cls: type, example: str) -> list:
    """``values`` as a non-empty list of ``cls`` configs or None, else a WorkbenchError
    naming the call to write (a bare number or string is the usual slip)."""
    if isinstance(values, (str, StepConfig)) or not isinstance(values, Iterable):
        raise WorkbenchError(
            f"grid's {what} must be a list of {cls.__name__}s, not {values!r}"[:200],
            f"pass {example}",
        )
    values = list(values)
    if not values:
        raise WorkbenchError(f"grid's {what} list is empty", f"pass {example} (None: no step)")
    for v in values:
        if v is not None and not isinstance(v, cls):
            raise WorkbenchError(
                f"grid's {what} list holds {type(v).__name__} {v!r}, not a {cls.__name__}"[:200],
                f"pass {example}",
            )
    return values


_LATENCY_FIGURES = ("p50", "p90", "p99", "mean", "min", "max", "n")
_MEMORY_FIGURES = ("peak_bytes", "process_peak_bytes")


def _check_figures(result: Result) -> None:
    """Raise WorkbenchError unless every figure of ``result`` is a number (None where a
    figure may be absent): a hand-edited study must fail here, not deep in a chart."""
    m = result.metrics
    figures = {
        "accuracy": (m.accuracy, True),
        "agreement": (m.agreement, True),
        "parity_max_abs_diff": (m.parity_max_abs_diff, True),
        **{k: (getattr(m, k), False) for k in ("size_bytes", "compressed_bytes", "params")},
        **{k: (getattr(m, k), False) for k in ("nonzero_params", "macs")},
        # A runtime that times nothing here has no latency at all (Metrics.latency None).
        **{
            f"latency.{k}": (getattr(m.latency, k), False)
            for k in (_LATENCY_FIGURES if m.latency is not None else ())
        },
        **{f"memory.{k}": (getattr(m.memory, k), False) for k in _MEMORY_FIGURES},
    }
    for name, (value, optional) in figures.items():
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WorkbenchError(
                f"variant {result.recipe.name}: {name} is {value!r}, not a number",
                "pass the file `workbench sweep --out` wrote, unedited (or re-run the sweep)",
            )


def grid(
    prune: Sequence[PruneConfig | None] = (None,),
    quantize: Sequence[QuantizeConfig | None] = (None,),
    finetune: FineTuneConfig | None = None,
) -> list[Recipe]:
    """Every combination of a pruning step and a quantization step (None: no such step).

    The baseline comes first; a pruning step at sparsity 0 is the same as none and is
    dropped, so no variant is measured twice. ``finetune`` retrains every pruned variant.
    """
    prune = _config_list(prune, "prune", PruneConfig, "prune=[PruneConfig(sparsity=0.5), ...]")
    quantize = _config_list(
        quantize, "quantize", QuantizeConfig, "quantize=[None, QuantizeConfig(scheme='int8')]"
    )
    if finetune is not None and not isinstance(finetune, FineTuneConfig):
        raise WorkbenchError(
            f"grid's finetune must be a FineTuneConfig, not {finetune!r}"[:200],
            "pass finetune=FineTuneConfig(epochs=3)",
        )
    prune = [None if (p is not None and p.sparsity == 0) else p for p in prune]
    recipes: list[Recipe] = [Recipe()]
    for p, q in itertools.product(prune, quantize):
        r = Recipe.of(p, q, finetune if p is not None else None)
        if r not in recipes:
            recipes.append(r)
    return recipes


def sweep(
    model: Any,
    recipes: Iterable[Recipe],
    *,
    settings: MeasureSettings | None = None,
    cache: Cache | None = None,
    progress: bool = True,
    on_result: Callable[[Result], None] | None = None,
    cancel: threading.Event | None = None,
    remeasure: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    device: str | None = None,
    runtimes: Sequence[str] | None = None,
) -> Study:
    """Evaluate every recipe on ``model`` (baseline first) and collect a Study.

    Results are cached as they finish, so an interrupted sweep resumes where it stopped
    and a rerun is instant. A variant that fails (e.g. a graph Torch-Pruning cannot
    prune structurally) is recorded in ``Study.failures`` with its error and the sweep
    goes on; only a failing baseline stops it, since every variant is compared with it.

    Args:
        on_result: called with each Result as it finishes (e.g. to plot it).
        cancel: when set, the sweep stops after the variant in progress.
        remeasure: measure the latency and memory of variants already cached again
            (nothing is rebuilt), replacing their cached figures.
        executor: "local" (this process) or "ray": one Ray task per variant on a
            cluster, results back in ``cache`` (see workbench.cluster).
        ray_address: with "ray": "auto" joins the cluster started on this machine,
            host:port another; None starts one on this machine for the sweep.
        device: with "ray": measure on the nodes labelled with this device's resource.
        runtimes: measure every recipe in each of these runtimes (default: the one
            ``settings`` names); the study's rows carry their runtime. Every baseline
            comes first, then each recipe in every runtime in turn.
    """
    from tqdm.auto import tqdm

    from workbench.models import load_model

    if executor not in EXECUTORS:
        raise WorkbenchError(
            f"unknown executor {executor!r}", f"use one of: {', '.join(EXECUTORS)}"
        )
    if executor == "ray" and remeasure:
        raise WorkbenchError(
            "re-measuring cached variants runs on this machine, not on a cluster",
            "drop --ray (executor='ray') to re-measure, or --remeasure to sweep on the cluster",
        )
    if executor == "local" and (ray_address is not None or device is not None):
        raise WorkbenchError(
            "a Ray address or a device to measure on needs the Ray executor",
            "pass executor='ray' (workbench sweep --ray [ADDRESS] --device NAME)",
        )
    if isinstance(model, (str, Path)):
        model = load_model(model)
    todo = list(recipes)
    if Recipe() not in todo:
        todo.insert(0, Recipe())
    else:
        todo.insert(0, todo.pop(todo.index(Recipe())))
    per_runtime = _runtime_settings(settings or MeasureSettings(), runtimes)
    for recipe in todo:  # refuse the whole grid before measuring any of it
        for each in per_runtime:
            check_applicable(model, recipe, each.runtime)
    if executor == "ray":
        from workbench.cluster import sweep_on_ray

        cache = cache or Cache()
        study = Study(model.name, model_info=model.describe())
        for each in per_runtime:  # one cluster sweep per runtime, gathered in one study
            if cancel is not None and cancel.is_set():
                break
            part = sweep_on_ray(
                model,
                todo,
                settings=each,
                cache=cache,
                progress=progress,
                on_result=on_result,
                cancel=cancel,
                address=ray_address,
                device=device,
            )
            for result in part.results:
                study.add(result)
            # The cluster records failures without their runtime: this part's is known.
            study.failures += [{**f, "runtime": each.runtime} for f in part.failures]
        return study
    study = Study(model.name, model_info=model.describe())
    # Every runtime's baseline first (each variant is compared with its own runtime's),
    # then each recipe in every runtime, so the runtimes can be compared early on.
    jobs = [(recipe, each) for recipe in todo for each in per_runtime]
    several = len(per_runtime) > 1
    for recipe, each in tqdm(
        jobs, desc=f"sweep {model.name}", unit="variant", disable=not progress
    ):
        if cancel is not None and cancel.is_set():
            break
        try:
            result = evaluate(model, recipe, settings=each, cache=cache, remeasure=remeasure)
        except Exception as exc:  # noqa: BLE001 - one variant's failure must not lose the rest
            if recipe.is_baseline:
                if several:  # name the runtime whose baseline could not be measured
                    raise WorkbenchError(
                        f"the baseline could not be measured in {each.runtime}: {exc}",
                        f"leave {each.runtime} out of the sweep's runtimes",
                    ) from exc
                raise  # every variant is compared with the baseline: nothing can go on
            log.warning("sweep %s: %s in %s failed: %s", model.name, recipe.name, each.runtime, exc)
            study.add_failure(recipe, exc, each.runtime)
            continue
        study.add(result)
        if on_result is not None:
            on_result(result)
    return study


def _runtime_settings(
    settings: MeasureSettings, runtimes: Sequence[str] | None
) -> list[MeasureSettings]:
    """``settings`` once per runtime of ``runtimes`` (default: its own runtime), in
    order, without repeats; an unknown name fails here, listing the known ones."""
    if runtimes is None:
        return [settings]
    if isinstance(runtimes, str) or not isinstance(runtimes, Iterable):
        raise WorkbenchError(
            f"runtimes must be a list of runtime names, not {runtimes!r}"[:200],
            "pass runtimes=['onnxruntime', ...]",
        )
    names = list(dict.fromkeys(runtimes))
    if not names:
        raise WorkbenchError("the sweep's runtimes list is empty", "name at least one runtime")
    return [dataclasses.replace(settings, runtime=name) for name in names]

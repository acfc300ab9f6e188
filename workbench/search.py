"""Sensitivity-guided recipe search: the smallest (or fastest) stack that keeps an accuracy floor.

``search(model, max_accuracy_drop=1.0, target="size")`` answers "how far can this model
be compressed before it loses more than a point?" with measured variants, not guesses:

Every choice is made on the task's *validation* part, a fixed stratified fifth of the
training split (``Task.raw("validation")``), never on the test split; the candidates are
built with ``Task.fitting()``, whose training part leaves those images out, so no
candidate is fine-tuned, distilled or calibrated on the images it is judged on.

1. The float baseline is evaluated; the floor is resolved against its accuracy on the
   validation images (a drop is in points below it; an absolute floor is compared with
   validation accuracies too).
2. A sensitivity profile is measured cheaply in PyTorch on the validation images: each
   prunable layer's accuracy drop when pruned alone, and the one-shot drop of the whole
   model at a few sparsities per pruning method.
3. Candidates go through the real pipeline (``workbench.pipeline.evaluate``: every figure
   measured on the exported artifact, cached), and each artifact is also run on the
   validation images, in the order the profile suggests:
   quantization first (int8, the cheapest 4x, then the accuracy-aware int8, dynamic and
   fp16 only if it loses too much), then for each pruning method that can lower the
   target a bisection of the sparsity (pruned and retrained, kept when it clears the floor
   by the quantization's validation drop), starting where the profile predicts the floor
   is lost, with the layers too sensitive to prune kept dense; then the quantization
   stacked on the sparsest variant kept; last, when the budget allows, students at a
   fraction of the model's width (or smaller samples) distilled from it (see
   STUDENT_WIDTHS), largest first while they keep the floor; the smallest kept gets the
   quantization stacked, then a bisection of its own sparsity per method (a student is
   another network: it may keep more or less than the model did), starting at the
   sparsest the model's bisection kept, within the candidates the search reserved for
   students (STUDENT_BUDGET_SHARE) and any the pruning left, and the quantization
   stacked on the sparsest the student keeps.
4. A candidate is accepted when its validation accuracy keeps the floor, and, with a
   device, when it fits the device's budget. The chosen recipe is the accepted one with
   the smallest target figure. Its test-split figures (``evaluate()``'s, as every figure
   the workbench shows) are reported beside, labelled as such: they decide nothing.

Every candidate, its measured figures, why it was tried and why it was accepted or
rejected is kept in :class:`SearchResult`, which saves as a study file (``workbench
report`` and the charts read it) with the search path beside the results.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.atomic import write_text_atomic
from workbench.cache import Cache
from workbench.errors import WorkbenchError
from workbench.pipeline import MeasureSettings, check_applicable, evaluate, subject_model
from workbench.recipe import (
    MAX_SPARSITY,
    PRUNE_METHODS,
    DistillConfig,
    FineTuneConfig,
    PruneConfig,
    QuantizeConfig,
    Recipe,
    StepConfig,
)
from workbench.results import Result
from workbench.runtimes import get_runtime
from workbench.study import METRICS_BY_COLUMN, Study

__all__ = [
    "RECOVERIES",
    "SEARCH_FORMAT",
    "TARGETS",
    "SearchResult",
    "SearchStep",
    "SearchTarget",
    "check_model",
    "check_request",
    "evaluate_flags",
    "measure_sensitivity",
    "search",
    "student_options",
]

# 2: accept/reject on the validation part (``validation_accuracy``), not the test split.
SEARCH_FORMAT = 2


@dataclass(frozen=True)
class SearchTarget:
    """What a search minimises, and which steps can lower it.

    Attributes:
        name: the target's name (``--target``).
        column: the Study column minimised (see ``workbench.study.METRICS``).
        description: what the chosen recipe is, for people.
        methods: the pruning methods that lower this figure (unstructured pruning only
            zeroes weights: the compressed file shrinks, MACs and latency do not).
        quantize: whether quantization lowers it (it does not change MACs).
    """

    name: str
    column: str
    description: str
    methods: tuple[str, ...]
    quantize: bool


TARGETS: dict[str, SearchTarget] = {
    t.name: t
    for t in (
        SearchTarget(
            "size",
            "compressed_bytes",
            "the smallest artifact (deflate-compressed bytes, what a download or an update costs)",
            ("unstructured", "structured"),
            True,
        ),
        SearchTarget(
            "macs",
            "macs",
            "the fewest multiply-accumulates per inference",
            ("structured",),
            False,
        ),
        SearchTarget(
            "latency",
            "latency_p50_ms",
            "the lowest latency p50 on this machine (ranked by the speed-up over the "
            "baseline timed interleaved with it)",
            ("structured",),
            True,
        ),
        SearchTarget(
            "device",
            "peak_memory_bytes",
            "the most memory headroom on the device (the smallest measured peak memory) "
            "among the variants that fit its budget",
            ("unstructured", "structured"),
            True,
        ),
    )
}

# How a pruned candidate recovers: retrain on the training part, distil from the float
# model while retraining, or not at all (one-shot pruning).
RECOVERIES = ("finetune", "distill", "none")

# Sparsities the bisection chooses from (the last is MAX_SPARSITY).
SPARSITY_GRID: tuple[float, ...] = tuple(round(0.2 + 0.05 * i, 2) for i in range(16))
# One-shot sparsities the profile measures per method.
PROFILE_SPARSITIES = (0.3, 0.5, 0.7, 0.8, 0.9)
# Per-layer sensitivity: each layer alone pruned this much.
LAYER_PROBE_SPARSITY = {"unstructured": 0.9, "structured": 0.5}
# What the validation figures are, for the path record and the CLI.
VALIDATION_BASIS = (
    "validation part: a stratified fifth of the training split (Task.raw('validation')), "
    "never trained or calibrated on by the candidates (Task.fitting()); never the test split"
)
# The float model scoring this many points more on the validation images than on the
# test split has most likely trained on them: verdicts taken there are lenient.
SEEN_VALIDATION_GAP_POINTS = 1.0


def holds_validation_out(model: Any) -> bool:
    """True when the model's own record says it trained on exactly the images its task's
    fitting part holds (the training part without the validation images): the shipped
    samples, trained by ``sample_models.train`` on ``Task.fitting()``."""
    trained_on = (getattr(model, "meta", None) or {}).get("training", {}).get("train_images")
    task = getattr(model, "task", None)
    if not isinstance(trained_on, int) or task is None or not hasattr(task, "fitting"):
        return False
    return trained_on == len(task.fitting().raw("train")[1])


def validation_caveat(
    validation_accuracy: float, test_accuracy: float | None, held_out: bool = False
) -> str:
    """A warning when the float model reads far better on the validation images than on
    the test split ("" otherwise): it most likely learned them, so a candidate judged
    there keeps less on unseen data than the floor says. ``held_out``: the model is known
    to have trained without them (``holds_validation_out``), and a gap is chance (252
    validation against 540 test images: one point is about 1.3 standard errors)."""
    if test_accuracy is None or held_out:
        return ""
    gap = (validation_accuracy - float(test_accuracy)) * 100
    if gap <= SEEN_VALIDATION_GAP_POINTS:
        return ""
    return (
        f"the float model scores {validation_accuracy:.2%} on the validation images but "
        f"{float(test_accuracy):.2%} on the test split ({gap:.1f} points apart): it has most "
        "likely trained on them, so the verdicts are lenient and the chosen variant may sit "
        "below the floor on unseen data; train the model on Task.fitting()'s training part "
        "(without the validation images) for a floor that holds"
    )


# Layers kept dense because they are too sensitive may hold at most this share of the
# prunable weights: keeping a big layer dense would cost more size than it saves accuracy.
MAX_EXCLUDED_SHARE = 0.1
# A one-shot drop this many times the allowance is still worth retraining from: the
# bisection starts at the highest profiled sparsity within it.
RECOVERABLE_FACTOR = 8.0
# Quantization tried first, in order: the first that keeps the floor is stacked on every
# pruned candidate. The accuracy-aware int8 is tried with the whole allowance.
QUANT_LADDER = ("int8", "int8-aware", "dynamic", "fp16")
# Students tried after pruning (distilled from the model, then pruned and quantized):
# the model's own architecture at these channel multipliers, widest first, when it takes
# one, then the task's registered samples with fewer parameters, largest first.
STUDENT_WIDTHS = (0.5, 0.25)
# The share of the candidate budget kept for students (at most MAX_STUDENT_CANDIDATES:
# each student kept, the quantization stacked on the smallest, and per method a short
# bisection of its own sparsity with the quantization stacked on the sparsest it keeps).
STUDENT_BUDGET_SHARE = 1 / 3
MAX_STUDENT_CANDIDATES = 6


def _quant_config(name: str, allowance_points: float) -> QuantizeConfig:
    if name == "int8-aware":
        return QuantizeConfig(scheme="int8", max_accuracy_drop=round(max(allowance_points, 0.0), 4))
    return QuantizeConfig(scheme=name)


@dataclass
class SearchStep:
    """One candidate of the path: what was tried, why, what was measured, the verdict.

    ``figures`` holds the measured Study columns (accuracy on the test split, sizes, MACs,
    latency, memory); ``validation_accuracy`` is the artifact's accuracy on the validation
    images, which the verdict is decided on.
    """

    index: int
    phase: str  # "baseline", "quantize", "prune-unstructured", "prune-structured"
    recipe: Recipe
    why_tried: str
    accepted: bool = False
    reason: str = ""
    key: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] | None = None
    validation_accuracy: float | None = None
    seconds: float = 0.0
    error: str | None = None
    # The measured Result while the search runs (on_step callers add it to a Study); the
    # saved path names it by ``key``.
    result: Result | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "phase": self.phase,
            "recipe": self.recipe.to_dict(),
            "recipe_name": self.recipe.name,
            "why_tried": self.why_tried,
            "accepted": self.accepted,
            "reason": self.reason,
            "key": self.key,
            "figures": dict(self.figures),
            "fit": self.fit,
            "validation_accuracy": self.validation_accuracy,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchStep:
        return cls(
            index=int(d["index"]),
            phase=str(d["phase"]),
            recipe=Recipe.from_dict(d["recipe"]),
            why_tried=str(d.get("why_tried", "")),
            accepted=bool(d["accepted"]),
            reason=str(d.get("reason", "")),
            key=d.get("key"),
            figures=dict(d.get("figures") or {}),
            fit=d.get("fit"),
            validation_accuracy=d.get("validation_accuracy"),
            seconds=float(d.get("seconds", 0.0)),
            error=d.get("error"),
        )


@dataclass
class SearchResult:
    """The outcome of :func:`search`: the path of candidates and the chosen recipe.

    ``chosen`` is the index of the chosen step in ``steps`` (None when no candidate kept
    the floor; ``outcome`` then says why). ``results`` holds the measured Results of the
    path (each step names its own by ``key``), so the search reads as a Study.
    """

    model: str
    target: str
    floor: dict[
        str, Any
    ]  # {"kind": "absolute"|"drop", "value": percent or points, "accuracy": fraction}
    steps: list[SearchStep]
    chosen: int | None
    outcome: str
    stopped: str
    sensitivity: dict[str, Any]
    wall_seconds: float
    device: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    model_info: dict[str, Any] = field(default_factory=dict)
    max_candidates: int = 0

    @property
    def chosen_step(self) -> SearchStep | None:
        return None if self.chosen is None else self.steps[self.chosen]

    @property
    def chosen_recipe(self) -> Recipe | None:
        step = self.chosen_step
        return None if step is None else step.recipe

    @property
    def chosen_result(self) -> Result | None:
        step = self.chosen_step
        if step is None:
            return None
        return next((r for r in self.results if r.key == step.key), None)

    @property
    def candidates_evaluated(self) -> int:
        """Candidates measured through the pipeline (the baseline included)."""
        return sum(1 for s in self.steps if s.key is not None)

    def to_study(self) -> Study:
        """The measured variants of the path as a Study (baseline first)."""
        return Study(self.model, list(self.results), dict(self.model_info))

    def path_rows(self) -> list[dict[str, Any]]:
        """One row per step, for a table or ``workbench.charts.search_path_chart``:
        ``step``, ``phase``, ``recipe``, ``key``, ``accepted``, ``chosen``, ``reason``,
        ``validation_accuracy`` (what the verdict is decided on) and the measured
        figures (``accuracy`` is the test split's)."""
        return [
            {
                "step": s.index,
                "phase": s.phase,
                "recipe": s.recipe.name,
                "key": s.key,
                "accepted": s.accepted,
                "chosen": s.index == self.chosen,
                "reason": s.reason,
                "validation_accuracy": s.validation_accuracy,
                **s.figures,
            }
            for s in self.steps
        ]

    def search_dict(self) -> dict[str, Any]:
        """The search's own record (without the Results it names by key)."""
        return {
            "format": SEARCH_FORMAT,
            "target": self.target,
            "objective": TARGETS[self.target].column,
            "floor": dict(self.floor),
            "device": self.device,
            "max_candidates": self.max_candidates,
            "steps": [s.to_dict() for s in self.steps],
            "chosen": self.chosen,
            "chosen_recipe": None if self.chosen_recipe is None else self.chosen_recipe.to_dict(),
            "chosen_recipe_name": None if self.chosen_recipe is None else self.chosen_recipe.name,
            "outcome": self.outcome,
            "stopped": self.stopped,
            "sensitivity": self.sensitivity,
            "wall_seconds": round(self.wall_seconds, 2),
            "candidates_evaluated": self.candidates_evaluated,
            "settings": dict(self.settings),
        }

    def to_dict(self) -> dict[str, Any]:
        """A study file (``Study.load`` and ``workbench report`` read it) with the search
        path under ``"search"``; its frontier is over accuracy and the target figure."""
        column = TARGETS[self.target].column
        study = self.to_study().to_dict({"accuracy": "max", column: "min"})
        study["search"] = self.search_dict()
        return study

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        if not isinstance(d, dict) or not isinstance(d.get("search"), dict):
            raise WorkbenchError(
                "this file holds no search path", "pass the file `workbench search --out` wrote"
            )
        s = d["search"]
        if s.get("format") != SEARCH_FORMAT:
            raise WorkbenchError(
                f"unsupported search format {s.get('format')!r}",
                f"run the search again with this version of the workbench (format {SEARCH_FORMAT})",
            )
        study = Study.from_dict(d)
        return cls(
            model=study.model,
            target=s["target"],
            floor=dict(s["floor"]),
            steps=[SearchStep.from_dict(x) for x in s["steps"]],
            chosen=s.get("chosen"),
            outcome=s.get("outcome", ""),
            stopped=s.get("stopped", ""),
            sensitivity=s.get("sensitivity", {}),
            wall_seconds=float(s.get("wall_seconds", 0.0)),
            device=s.get("device"),
            settings=s.get("settings", {}),
            results=study.results,
            model_info=study.model_info,
            max_candidates=int(s.get("max_candidates", 0)),
        )

    def save(self, path: str | Path) -> Path:
        """Write the search as a study JSON file with its path (atomically)."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        """Read a file written by :meth:`save`."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise WorkbenchError(
                f"no search file at {path}", "run `workbench search ... --out FILE` first"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkbenchError(
                f"{path} is not a search JSON file ({exc})",
                "pass the file `workbench search --out` wrote",
            ) from None
        try:
            return cls.from_dict(d)
        except WorkbenchError as exc:
            raise WorkbenchError(f"{path}: {exc.problem}", exc.fix) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkbenchError(
                f"{path} is not a valid search file ({str(exc).splitlines()[0][:200]})",
                "pass the file `workbench search --out` wrote",
            ) from None


# ------------------------------------------------------------------------ input checks


def _floor_spec(accuracy_floor: Any, max_accuracy_drop: Any) -> dict[str, Any]:
    """The floor as {"kind", "value"}: exactly one of the two must be given."""
    if (accuracy_floor is None) == (max_accuracy_drop is None):
        raise WorkbenchError(
            "give exactly one accuracy floor",
            "pass accuracy_floor=97 (percent, absolute) or max_accuracy_drop=1.0 (points below "
            "the float model) (CLI: --accuracy-floor or --max-accuracy-drop)",
        )
    if accuracy_floor is not None:
        value = accuracy_floor
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise WorkbenchError(
                f"accuracy floor {value!r} is not a number", "use a percentage such as 97"
            )
        if 0 < value <= 1:
            raise WorkbenchError(
                f"accuracy floor {value:g} looks like a fraction, but the floor is in percent",
                f"write {value * 100:g} for {value:.0%}",
            )
        if not 1 < value <= 100:
            raise WorkbenchError(
                f"accuracy floor {value:g}% is out of range",
                "use a percentage above 1 and at most 100, e.g. 97",
            )
        return {"kind": "absolute", "value": float(value)}
    value = max_accuracy_drop
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise WorkbenchError(
            f"accuracy drop {value!r} is not a number", "use points of accuracy such as 1.0"
        )
    if not 0 <= value < 100:
        raise WorkbenchError(
            f"accuracy drop {value:g} points is out of range",
            "use points of accuracy from 0 to below 100, e.g. 1.0",
        )
    return {"kind": "drop", "value": float(value)}


def _check_target(target: Any, device: Any) -> SearchTarget:
    if target not in TARGETS:
        raise WorkbenchError(
            f"unknown search target {target!r}", f"use one of: {', '.join(TARGETS)}"
        )
    if target == "device" and device is None:
        raise WorkbenchError(
            "the device target needs a device", "name one (device='raspberry-pi-4', CLI --device)"
        )
    return TARGETS[target]


def check_request(
    *,
    accuracy_floor: Any = None,
    max_accuracy_drop: Any = None,
    target: Any = "size",
    device: Any = None,
    max_candidates: Any = 12,
    recovery: Any = "finetune",
    methods: Any = None,
    runtime: str = "onnxruntime",
) -> dict[str, Any]:
    """Check a search request before anything is loaded or measured.

    Returns ``floor`` ({"kind", "value"}), ``target`` (the SearchTarget), ``methods``
    and ``device`` (the DeviceProfile or None).

    Raises:
        WorkbenchError: both or neither floor, a floor out of range, an unknown target,
            device, recovery or pruning method, a device that does not run ``runtime``,
            or a candidate budget below 1.
    """
    floor = _floor_spec(accuracy_floor, max_accuracy_drop)
    goal = _check_target(target, device)
    if recovery not in RECOVERIES:
        raise WorkbenchError(
            f"unknown recovery {recovery!r}", f"use one of: {', '.join(RECOVERIES)}"
        )
    if (
        isinstance(max_candidates, bool)
        or not isinstance(max_candidates, int)
        or max_candidates < 1
    ):
        raise WorkbenchError(
            f"max_candidates {max_candidates!r} is not a whole number >= 1",
            "allow at least one candidate besides the baseline, e.g. 12",
        )
    methods = goal.methods if methods is None else tuple(methods)
    unknown = [m for m in methods if m not in PRUNE_METHODS]
    if unknown or not methods:
        raise WorkbenchError(
            f"unknown pruning method(s) to search: {', '.join(map(repr, unknown)) or 'none given'}",
            f"use one or more of: {', '.join(PRUNE_METHODS)}",
        )
    profile = None
    if device is not None:
        from workbench.devices.registry import get_device

        profile = get_device(device)  # an unknown name lists the known ones
        if runtime not in profile.runtimes:
            raise WorkbenchError(
                f"{profile.name} does not run {runtime}, which the search measures in: "
                "no variant could be said to fit it",
                f"search in a runtime {profile.name} runs ({', '.join(profile.runtimes)}), or "
                "name another device",
            )
    return {"floor": floor, "target": goal, "methods": methods, "device": profile}


def check_model(model: Any) -> None:
    """Raise WorkbenchError unless ``model`` can be searched: a labelled task (a floor
    needs accuracy) and PyTorch layers (pruning and retraining act on them)."""
    from workbench.pipeline import torch_steps_unavailable

    if model.task is None:
        raise WorkbenchError(
            f"an accuracy floor needs accuracy, and {model.name} has no labelled task",
            "load the model with a task (e.g. task='digits' / --task digits)",
        )
    why = torch_steps_unavailable(model)
    if why:
        raise WorkbenchError(
            f"{model.name} is {why}: the search prunes and retrains PyTorch layers",
            "load its weights with the architecture (--arch), or try quantization with "
            "`workbench evaluate --quantize int8`",
        )


# ------------------------------------------------------------------------ sensitivity


def _validation(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """The task's validation images (a fixed part of the training split, never the test
    split) through ``model``'s preprocessing, and their labels."""
    return model.task.arrays("validation", model.preprocessing)


def _torch_accuracy(module: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    module.eval()
    with torch.inference_mode():
        logits = torch.cat(
            [module(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)]
        )
    return float((logits.argmax(dim=1).numpy() == y).mean())


def _first_last(module: Any, example: Any) -> set[str]:
    """The first and last prunable layers in forward order (kept dense by default)."""
    from workbench.compress.prune import _layer_order  # the order prune_ itself uses

    order, called = _layer_order(module, example)
    return {order[0], order[max(called, 1) - 1]} if order else set()


def measure_sensitivity(
    model: Any, methods: tuple[str, ...], allowance_points: float
) -> dict[str, Any]:
    """The search's sensitivity profile, measured in PyTorch on the validation images.

    Returns a JSON-able dict: ``validation_images``, ``float_accuracy`` (validation), and
    per method: ``layers`` (each layer's drop in points when pruned alone at
    LAYER_PROBE_SPARSITY, most sensitive first), ``exclude`` (the layers kept dense: a
    lone drop above the allowance, within MAX_EXCLUDED_SHARE of the weights) and
    ``curve`` (the whole model's one-shot validation drop at each PROFILE_SPARSITIES,
    pruned with that exclusion).
    """
    from workbench.compress import layer_sensitivity, prune_

    started = time.perf_counter()
    x, y = _validation(model)
    module = model.module
    example = model.example_input()
    float_acc = _torch_accuracy(copy.deepcopy(module), x, y)
    dense = _first_last(module, example)
    profile: dict[str, Any] = {
        "validation_images": int(len(y)),
        "validation_source": VALIDATION_BASIS,
        "float_accuracy": float_acc,
        "methods": {},
    }
    for method in methods:
        entry: dict[str, Any] = {"probe_sparsity": LAYER_PROBE_SPARSITY[method]}
        try:
            rows = layer_sensitivity(
                module,
                lambda m: _torch_accuracy(m, x, y),
                sparsity=LAYER_PROBE_SPARSITY[method],
                method=method,
                example_input=example,
            )
        except WorkbenchError as exc:
            rows, entry["layers_error"] = [], str(exc)
        rows = sorted(rows, key=lambda r: -r["drop"])
        entry["layers"] = [
            {"layer": r["layer"], "params": r["params"], "drop_points": round(r["drop"] * 100, 3)}
            for r in rows
        ]
        total = sum(r["params"] for r in rows) or 1
        exclude, kept = [], 0
        for r in rows:
            if r["drop"] * 100 <= allowance_points or r["layer"] in dense:
                continue
            if kept + r["params"] > MAX_EXCLUDED_SHARE * total:
                continue
            exclude.append(r["layer"])
            kept += r["params"]
        entry["exclude"] = exclude
        curve = []
        for s in PROFILE_SPARSITIES:
            trial = copy.deepcopy(module)
            try:
                prune_(
                    trial, PruneConfig(method=method, sparsity=s, exclude=tuple(exclude)), example
                )
            except WorkbenchError as exc:
                curve.append({"sparsity": s, "drop_points": None, "error": str(exc)})
                continue
            drop = (float_acc - _torch_accuracy(trial, x, y)) * 100
            curve.append({"sparsity": s, "drop_points": round(drop, 3)})
        entry["curve"] = curve
        profile["methods"][method] = entry
    profile["seconds"] = round(time.perf_counter() - started, 2)
    return profile


# Bump when a change to measure_sensitivity changes what a stored profile would be.
SENSITIVITY_VERSION = 2


def _cached_sensitivity(
    model: Any, methods: tuple[str, ...], allowance_points: float, cache: Cache
) -> dict[str, Any]:
    """measure_sensitivity's profile, kept in the cache beside the variants: it depends
    only on the weights, the data, the methods and the allowance, and takes minutes on a
    large model."""
    import torch

    payload = {
        "version": SENSITIVITY_VERSION,
        "fingerprint": model.fingerprint,
        "input_shape": list(model.input_shape),
        "preprocessing": model.preprocessing.to_dict() if model.preprocessing else None,
        "task": model.task.name,
        "methods": list(methods),
        "allowance": round(float(allowance_points), 6),
        "probe": ["validation", list(PROFILE_SPARSITIES), LAYER_PROBE_SPARSITY],
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    path = cache.root / "search-sensitivity" / f"{digest}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    profile = measure_sensitivity(model, methods, allowance_points)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(profile))
    return profile


def _one_shot_keeps(curve: list[dict[str, Any]], sparsity: float, allowance_points: float) -> bool:
    """True when the profile's one-shot drop at the nearest profiled sparsity at or above
    ``sparsity`` is within the allowance (pruning only loses more as sparsity rises)."""
    above = [
        c for c in curve if c["sparsity"] >= sparsity - 1e-9 and c.get("drop_points") is not None
    ]
    return bool(above) and min(above, key=lambda c: c["sparsity"])["drop_points"] <= max(
        allowance_points, 0.0
    )


def _start_index(curve: list[dict[str, Any]], allowance_points: float, factor: float) -> int:
    """Where the bisection starts for a method (an index of SPARSITY_GRID): the highest
    profiled sparsity whose one-shot drop is within ``factor`` times the allowance (what
    retraining can plausibly recover), else the lowest sparsity of the grid."""
    ok = [
        c["sparsity"]
        for c in curve
        if c.get("drop_points") is not None
        and c["drop_points"] <= max(allowance_points, 0.2) * factor
    ]
    if not ok:
        return 0
    return min(range(len(SPARSITY_GRID)), key=lambda i: abs(SPARSITY_GRID[i] - max(ok)))


# ---------------------------------------------------------------------------- students


def student_options(model: Any, teacher: str | None = None) -> list[tuple[DistillConfig, str]]:
    """The students a search tries, largest first, each with why it is tried.

    The model's own architecture at each STUDENT_WIDTHS when it takes a channel
    multiplier, then the registered samples of the model's task with fewer parameters
    than it. Every student starts from seeded random weights: a sample's own trained
    weights learned the validation images the search judges on. ``teacher`` is the
    DistillConfig's (None: the model itself).
    """
    from sample_models.architectures import WIDTH_KWARGS
    from workbench.compress.distill import _arch_of  # the architecture student_model builds
    from workbench.models import load_model
    from workbench.models._sample import sample_names

    if model.module is None or model.task is None:
        return []
    options: list[tuple[DistillConfig, str]] = []
    arch = _arch_of(model)
    if arch is not None and arch[0] in WIDTH_KWARGS:
        for width in STUDENT_WIDTHS:
            options.append(
                (
                    DistillConfig(width=width, teacher=teacher),
                    f"a student: the model's own architecture at {width:g}x its channels, "
                    "distilled from it",
                )
            )
    own = sum(p.numel() for p in model.module.parameters())
    smaller = []
    for name in sample_names():
        if name == model.name:
            continue
        sample = load_model(name, pretrained=False)
        if sample.task is None or sample.task.name != model.task.name or sample.module is None:
            continue
        params = sum(p.numel() for p in sample.module.parameters())
        if params < own:
            smaller.append((params, name))
    for params, name in sorted(smaller, reverse=True):
        options.append(
            (
                DistillConfig(student=name, teacher=teacher),
                f"a student: the smaller sample {name} ({params:,} parameters vs {own:,}), "
                "from random weights, distilled from the model",
            )
        )
    return options


# ------------------------------------------------------------------------------ search


def _figures(result: Result) -> dict[str, Any]:
    from workbench.study import result_row

    row = result_row(result)
    columns = (
        "accuracy",
        "agreement",
        "compressed_bytes",
        "size_bytes",
        "macs",
        "nonzero_params",
        "latency_p50_ms",
        "peak_memory_bytes",
        "speedup",
    )
    return {c: row[c] for c in columns}


def _fmt(column: str, value: Any) -> str:
    fig = METRICS_BY_COLUMN.get(column)
    return str(value) if fig is None or value is None else fig.text(value)


def _objective(step: SearchStep, target: SearchTarget) -> tuple[float, float]:
    """The ranking key of an accepted step: smaller is better."""
    f = step.figures
    if target.name == "latency":
        # Runs timed at different moments differ more than the variants do on a busy
        # machine: the interleaved speed-up over the baseline is the steadier figure.
        speed = f.get("speedup")
        primary = -float(speed) if speed is not None else -1.0
    else:
        primary = float(f[target.column])
    return primary, float(f["compressed_bytes"])


def search(
    model: Any,
    *,
    accuracy_floor: float | None = None,
    max_accuracy_drop: float | None = None,
    target: str = "size",
    settings: MeasureSettings | None = None,
    cache: Cache | None = None,
    device: Any = None,
    memory_fraction: float | None = None,
    max_candidates: int = 12,
    recovery: str = "finetune",
    finetune_epochs: int = 3,
    methods: tuple[str, ...] | None = None,
    students: bool = True,
    on_step: Callable[[SearchStep], None] | None = None,
    cancel: threading.Event | None = None,
) -> SearchResult:
    """Find the smallest (or fastest) recipe that keeps an accuracy floor, guided by sensitivity.

    Args:
        model: a ``workbench.models.Model`` (or a name for ``load_model``) with a labelled
            task and PyTorch layers.
        accuracy_floor: the lowest acceptable top-1 accuracy, in **percent** (97 = 97%).
        max_accuracy_drop: or the floor as **points** below the float model's measured
            accuracy (1.0 = one point). Give exactly one of the two.
        target: "size" (deflate-compressed bytes), "macs", "latency" (p50 on this
            machine) or "device" (fits ``device``, with the most memory headroom).
        device: a device name or profile (``workbench.devices``); with any target, a
            candidate must also fit the device's memory budget and storage.
        memory_fraction: the device budget's share of its memory (default: the profile's).
        max_candidates: variants evaluated besides the baseline (>= 1).
        recovery: how pruned candidates recover: "finetune", "distill" (from the float
            model, by its registry name) or "none" (one-shot pruning).
        finetune_epochs: epochs of that retraining.
        methods: the pruning methods to try (default: those that lower the target).
        students: also try students distilled from the model (``student_options``), then
            pruned and quantized, with up to STUDENT_BUDGET_SHARE of the candidates; not
            with ``recovery="none"`` (no training asked for).
        on_step: called with each SearchStep once it is measured and judged.
        cancel: when set, the search stops after the candidate in progress and returns
            what it measured so far (``stopped`` says so).

    Returns:
        A SearchResult. When no candidate keeps the floor (e.g. a floor above the float
        model's accuracy) it is returned with ``chosen`` None and ``outcome`` saying so:
        that is an answer, measured, not an error.

    Raises:
        WorkbenchError: bad input (floor out of range, both or neither floor, an unknown
            target or device, a model without a labelled task or PyTorch layers), checked
            before anything is measured.
    """
    from workbench.models import Model, load_model

    started = time.perf_counter()
    settings = settings or MeasureSettings()
    request = check_request(
        accuracy_floor=accuracy_floor,
        max_accuracy_drop=max_accuracy_drop,
        target=target,
        device=device,
        max_candidates=max_candidates,
        recovery=recovery,
        methods=methods,
        runtime=settings.runtime,
    )
    floor, goal, methods, profile = (
        request["floor"],
        request["target"],
        request["methods"],
        request["device"],
    )
    if isinstance(model, (str, Path)):
        model = load_model(model)
    elif not isinstance(model, Model):
        raise WorkbenchError(
            f"search() needs a model, not {type(model).__name__}",
            "pass load_model('digits-cnn') (or a name from `workbench models`)",
        )
    check_model(model)
    if recovery == "distill" and model.source != "sample":
        raise WorkbenchError(
            f"distilling needs the float model by a registry name, and {model.name} is a file",
            "use recovery='finetune' (CLI --recovery finetune)",
        )
    return _Search(
        model,
        floor=floor,
        goal=goal,
        methods=methods,
        profile=profile,
        settings=settings,
        cache=cache or Cache(),
        memory_fraction=memory_fraction,
        max_candidates=max_candidates,
        recovery=recovery,
        finetune_epochs=finetune_epochs,
        students=students,
        on_step=on_step,
        cancel=cancel,
        started=started,
    ).run()


class _Search:
    """One search in progress: the path so far, the candidate budget, the floor, the
    quantization kept; each phase of :func:`search` is a method, called in order by
    :meth:`run`."""

    def __init__(
        self,
        model: Any,
        *,
        floor: dict[str, Any],
        goal: SearchTarget,
        methods: tuple[str, ...],
        profile: Any,
        settings: MeasureSettings,
        cache: Cache,
        memory_fraction: float | None,
        max_candidates: int,
        recovery: str,
        finetune_epochs: int,
        students: bool,
        on_step: Callable[[SearchStep], None] | None,
        cancel: threading.Event | None,
        started: float,
    ) -> None:
        self.model, self.floor, self.goal, self.methods = model, floor, goal, methods
        self.profile, self.settings, self.cache = profile, settings, cache
        self.memory_fraction, self.max_candidates = memory_fraction, max_candidates
        self.students, self.on_step, self.cancel, self.started = students, on_step, cancel, started
        # Distilling recovers from the float model by its registry name.
        self.teacher = model.name if recovery == "distill" else None
        self.recover = (
            None
            if recovery == "none"
            else FineTuneConfig(epochs=finetune_epochs, teacher=self.teacher)
        )
        self.steps: list[SearchStep] = []
        self.results: dict[str, Result] = {}
        self.fit_of = self._fit if profile is not None else None
        self.floor_accuracy: float | None = None
        # The candidates are built from the task without its validation images
        # (fine-tuning, distillation and calibration never see them), and judged on them.
        self.fitting = dataclasses.replace(model, task=model.task.fitting())
        self.runtime = get_runtime(settings.runtime)
        self.validation_sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.left = max_candidates  # candidates the budget still allows
        self.cancelled = False
        self.quant: QuantizeConfig | None = None
        self.margin = 0.0  # the chosen quantization's validation drop (a fraction)

    def _fit(self, result: Result) -> Any:
        from workbench.devices.budget import fit

        return fit(result, self.profile, fraction=self.memory_fraction, cache=self.cache)

    def _validation_accuracy(self, recipe: Recipe, result: Result) -> float:
        # A distilled student reads the images through its own preprocessing.
        subject = (
            subject_model(self.fitting, recipe) if recipe.get("distill") is not None else self.model
        )
        name = json.dumps(subject.preprocessing.to_dict(), sort_keys=True)
        if name not in self.validation_sets:
            self.validation_sets[name] = _validation(subject)
        return _artifact_accuracy(self.runtime, result, *self.validation_sets[name])

    def _measure(self, phase: str, recipe: Recipe, why: str) -> SearchStep:
        """Evaluate ``recipe``, run it on the validation images and judge it."""
        step = SearchStep(index=len(self.steps), phase=phase, recipe=recipe, why_tried=why)
        t0 = time.perf_counter()
        try:
            check_applicable(self.fitting, recipe, self.settings.runtime)
            result = evaluate(self.fitting, recipe, settings=self.settings, cache=self.cache)
            checked = self._validation_accuracy(recipe, result)
        except Exception as exc:  # noqa: BLE001 - one candidate's failure must not end the search
            if recipe.is_baseline:
                raise  # every candidate is judged against it: nothing can go on
            text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            step.error = (
                text if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {text}"
            )
            step.reason = f"rejected: failed: {step.error}"
        else:
            self.results[result.key] = result
            step.result = result
            step.key = result.key
            step.figures = _figures(result)
            step.validation_accuracy = checked
            if self.floor_accuracy is None:  # the baseline: the floor in absolute terms
                self.floor_accuracy = _absolute_floor(self.floor, checked)
            _judge(step, result, self.goal, self.floor_accuracy, self.fit_of)
        step.seconds = time.perf_counter() - t0
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step

    def _try(self, phase: str, recipe: Recipe, why: str) -> SearchStep | None:
        """Evaluate ``recipe`` unless the budget is spent or it was tried already."""
        done = next((s for s in self.steps if s.recipe == recipe), None)
        if done is not None:
            return done
        if self.left <= 0:
            return None
        if self.cancel is not None and self.cancel.is_set():
            self.left = 0
            self.cancelled = True
            return None
        self.left -= 1
        return self._measure(phase, recipe, why)

    def run(self) -> SearchResult:
        """The phases in order: baseline, quantization, the sparsity bisections, students."""
        # 1. The baseline, and the floor in absolute terms.
        base = self._measure(
            "baseline", Recipe(), "the float model: the floor's reference and the first candidate"
        )
        floor = self.floor
        self.base_acc = base_acc = float(base.validation_accuracy)
        self.floor_acc = floor_acc = floor["accuracy"] = self.floor_accuracy
        floor["basis"] = VALIDATION_BASIS
        floor["validation_images"] = len(_validation(self.model)[1])
        floor["float_validation_accuracy"] = base_acc
        # The floor read on the test split, for charts drawn in test figures: the same
        # drop below the float's test accuracy, or the same absolute percentage.
        floor["test_reference"] = _absolute_floor(floor, float(base.figures["accuracy"]))
        caveat = validation_caveat(
            base_acc, base.figures.get("accuracy"), holds_validation_out(self.model)
        )
        if caveat:
            floor["caveat"] = caveat
        self.allowance = (base_acc - floor_acc) * 100  # points the compression may cost
        if base_acc < floor_acc:
            return self._finish(
                "the float model is below the floor: nothing compressed can keep it", {}
            )
        profile = self.profile
        if base.fit is not None and base.fit.get("decided_by") == "runtime":
            runtime = self.settings.runtime
            raise WorkbenchError(
                f"{profile.name} does not run {runtime}: no {runtime} variant can fit it",
                f"search for a runtime {profile.name} runs ({', '.join(profile.runtimes)}), "
                "or name another device",
            )
        # 2. Quantization first: the cheapest large step.
        if self.goal.quantize:
            self._quantize_first()
        if self.left <= 0:
            return self._finish(f"the budget of {self.max_candidates} candidate(s) is spent", {})
        # 3. The sensitivity profile, then a bisection of the sparsity per method.
        quant, allowance = self.quant, self.allowance
        sensitivity = _cached_sensitivity(self.model, self.methods, allowance, self.cache)
        sensitivity["quantization"] = None if quant is None else quant.label()
        # Retraining recovers much of a one-shot drop; without it the profile is the forecast.
        factor = RECOVERABLE_FACTOR if self.recover is not None else 1.0
        sensitivity["recoverable_factor"] = factor
        order = sorted(
            self.methods,
            key=lambda m: (
                -SPARSITY_GRID[_start_index(sensitivity["methods"][m]["curve"], allowance, factor)]
            ),
        )
        sensitivity["quantization_validation_drop_points"] = round(self.margin * 100, 3)
        # Pruned candidates are bisected in float, each kept when it clears the floor by
        # the quantization's validation drop; the quantization is then stacked on the
        # sparsest one kept. A stacked candidate's float version is its own reference in
        # the pipeline, so this way each sparsity is trained once, not twice.
        self.threshold = floor_acc + self.margin
        stopped = "every method's sparsity bisected to one grid step"
        # Candidates kept for the students, out of what the pruning may spend.
        plan = (
            student_options(self.model, self.teacher)
            if self.students and self.recover is not None
            else []
        )
        reserve = 0
        if plan:
            reserve = min(MAX_STUDENT_CANDIDATES, int(self.max_candidates * STUDENT_BUDGET_SHARE))
            reserve = max(0, min(reserve, self.left - 1))
        self.left -= reserve
        sparsest: dict[str, tuple[int, StepConfig | None]] = {}  # per method, the sparsest kept
        for n, method in enumerate(order):
            share = math.ceil(self.left / (len(order) - n)) if self.left > 0 else 0
            kept = self._bisect(method, sensitivity["methods"][method], share, factor)
            if kept:
                sparsest[method] = kept
        self.left += reserve
        student = self._students(plan, sparsest, sensitivity)
        sensitivity["students"] = [config.label() for config, _ in plan]
        sensitivity["student_kept"] = None if student is None else student.label()
        if self.left <= 0:
            stopped = f"the budget of {self.max_candidates} candidates is spent"
        return self._finish(stopped, sensitivity)

    def _quantize_first(self) -> None:
        """Try QUANT_LADDER in order; the first that keeps the floor is stacked on every
        pruned candidate (``self.quant``, its validation drop ``self.margin``)."""
        for name in QUANT_LADDER:
            config = _quant_config(name, self.allowance)
            why = (
                "int8 first: 4x smaller weights, the cheapest step"
                if name == "int8"
                else f"{QUANT_LADDER[QUANT_LADDER.index(name) - 1]} lost too much: {name} next"
            )
            step = self._try("quantize", Recipe((config,)), why)
            if step is None:
                break
            if step.accepted or (step.key is not None and _keeps_floor(step, self.floor_acc)):
                if self.goal.name == "latency" and not _faster(step):
                    step.reason += "; not stacked: not faster than float on this machine"
                    continue
                self.quant = config
                # Its sensitivity: what it costs on the validation images.
                self.margin = max(0.0, self.base_acc - (step.validation_accuracy or self.base_acc))
                break

    def _bisect(
        self,
        method: str,
        entry: dict[str, Any],
        share: int,
        factor: float,
        student: DistillConfig | None = None,
        start: tuple[int, StepConfig | None] | None = None,
    ) -> tuple[int, StepConfig | None] | None:
        """Bisect ``method``'s sparsity within ``share`` candidates (one kept for the
        quantization stacked on the sparsest kept); returns the sparsest kept (a
        SPARSITY_GRID index and its retraining), if any.

        The model's own bisection starts where the sensitivity profile ``entry`` predicts
        the floor is lost. With ``student`` (a distillation step), the student is pruned
        instead (every candidate distils it first), starting at ``start``, the sparsest
        the model kept and its retraining; the profile, the model's, then only gives the
        layers kept dense (to a student of the model's own architecture).
        """
        quant, margin, allowance = self.quant, self.margin, self.allowance
        bisect_share = share - (1 if quant is not None and share > 1 else 0)
        spent_before = self.left
        lo, hi = -1, len(SPARSITY_GRID)  # highest index kept, lowest index lost
        kept: list[tuple[int, StepConfig | None]] = []  # sparsity index, its retraining
        # Retraining can also cost accuracy (a well-trained model at a high learning
        # rate): when it loses a sparsity the one-shot profile kept, one-shot is tried
        # there, and kept for this method if it holds.
        retraining_now: StepConfig | None = self.recover
        head: tuple[StepConfig, ...] = ()
        exclude = tuple(entry["exclude"])
        phase, stack_phase, whose = f"prune-{method}", f"stack-{method}", ""
        if student is None:
            index = _start_index(entry["curve"], allowance, factor)
            why = (
                f"start of the bisection: the highest profiled sparsity whose one-shot "
                f"validation drop (no retraining) is within {factor:g}x the "
                f"{allowance:.2f}-point allowance"
            )
        else:
            assert start is not None
            index, retraining_now = start
            head = (student,)
            # A width student keeps the model's layer names, so its sensitive layers too.
            exclude = () if student.student else exclude
            phase, stack_phase = f"student-{method}", f"stack-student-{method}"
            whose = "the student's "
            why = (
                f"start of the student's bisection ({student.label()}): "
                f"{SPARSITY_GRID[index]:g}, the sparsest {method} pruning the model itself kept"
            )

        def pruned(i: int, with_quant: bool, retraining: StepConfig | None) -> Recipe:
            prune = PruneConfig(method=method, sparsity=SPARSITY_GRID[i], exclude=exclude)
            last = quant if with_quant else None
            return Recipe(tuple(s for s in (*head, prune, retraining, last) if s is not None))

        while lo < index < hi and spent_before - self.left < bisect_share:
            step = self._try(phase, pruned(index, False, retraining_now), why)
            if step is None:
                break
            if step.key is not None and _keeps_floor(step, self.threshold):
                lo = index
                kept.append((index, retraining_now))
                step.reason += "; bisection: kept" + (
                    f" (clears the floor by {quant.label()}'s validation drop, "
                    f"{margin * 100:.2f} points)"
                    if quant is not None
                    else ""
                )
            elif (
                student is None  # the one-shot profile is the model's own
                and retraining_now is not None
                and _one_shot_keeps(entry["curve"], SPARSITY_GRID[index], allowance - margin * 100)
            ):
                step.reason += "; lost with retraining where the one-shot profile kept it"
                retraining_now = None
                hi = len(SPARSITY_GRID)  # losses with retraining do not bound one-shot
                why = (
                    f"retraining lost the floor at {SPARSITY_GRID[index]:g}, where the one-shot "
                    "validation profile kept it: one-shot pruning instead"
                )
                continue  # the same sparsity, one-shot
            else:
                hi = index
                step.reason += "; bisection: lost" + (
                    f" (within {quant.label()}'s validation drop of the floor)"
                    if quant is not None
                    and step.key is not None
                    and _keeps_floor(step, self.floor_acc)
                    else ""
                )
            if hi - lo <= 1:
                break
            index = max((lo + hi) // 2, lo + 1)
            why = f"{whose}bisection between {_grid(lo)} (kept the floor) and {_grid(hi)} (lost it)"
        # The quantization stacked on the sparsest kept sparsity (the next one down if
        # the stack loses the floor).
        for i, retraining in sorted(kept, key=lambda k: -k[0])[:2] if quant is not None else []:
            step = self._try(
                stack_phase,
                pruned(i, True, retraining),
                f"{quant.label()} stacked on the sparsest {method} pruning "
                f"{'of the student ' if student is not None else ''}kept ({SPARSITY_GRID[i]:g})",
            )
            if step is None or (step.key is not None and _keeps_floor(step, self.floor_acc)):
                break
        return max(kept, key=lambda k: k[0]) if kept else None

    def _students(
        self,
        plan: list[tuple[DistillConfig, str]],
        sparsest: dict[str, tuple[int, StepConfig | None]],
        sensitivity: dict[str, Any],
    ) -> DistillConfig | None:
        """Distil the students of ``plan`` in turn (largest first) while they clear the
        threshold (the floor plus the quantization's validation drop, as the pruned
        candidates); on the smallest kept, stack the quantization, then bisect its own
        sparsity per method as the model's was (``_bisect``), starting at the sparsest
        the model itself kept (with that retraining), within the candidates left, and
        stack the quantization on the sparsest it keeps. Returns the student kept, if
        any."""
        quant = self.quant
        kept: DistillConfig | None = None
        for config, why in plan:
            step = self._try("distill", Recipe((config,)), why)
            if step is None:
                break
            if step.key is not None and _keeps_floor(step, self.threshold):
                kept = config
                step.reason += "; student kept" + (
                    f" (clears the floor by {quant.label()}'s validation drop)" if quant else ""
                )
            else:
                step.reason += "; student lost: no smaller student is tried"
                break
        if kept is None:
            return None
        if quant is not None:
            self._try(
                "stack-distill",
                Recipe((kept, quant)),
                f"{quant.label()} stacked on the smallest student kept ({kept.label()})",
            )
        # The candidates left for the students' pruning (the reserve, and what the model's
        # bisections did not spend), shared between the methods as the model's were.
        sensitivity["student_pruning_budget"] = max(self.left, 0)
        sensitivity["student_sparsest"] = {}
        methods = list(sparsest)
        for n, method in enumerate(methods):
            share = math.ceil(self.left / (len(methods) - n)) if self.left > 0 else 0
            found = self._bisect(
                method,
                sensitivity["methods"][method],
                share,
                sensitivity["recoverable_factor"],
                student=kept,
                start=sparsest[method],
            )
            sensitivity["student_sparsest"][method] = (
                None if found is None else SPARSITY_GRID[found[0]]
            )
        return kept

    def _finish(self, stopped: str, sensitivity: dict[str, Any]) -> SearchResult:
        """The SearchResult: the chosen step (the accepted one ranking first) and why."""
        steps, goal, profile = self.steps, self.goal, self.profile
        base_acc, floor_acc = self.base_acc, self.floor_acc
        if self.cancelled:
            stopped = f"cancelled after {len(steps) - 1} candidate(s)"
        accepted = [s for s in steps if s.accepted]
        chosen = min(accepted, key=lambda s: _objective(s, goal)) if accepted else None
        if chosen is None:
            if base_acc < floor_acc:
                outcome = (
                    f"no recipe meets the floor: the float model itself scores "
                    f"{base_acc:.2%} on the validation images, below the floor of "
                    f"{floor_acc:.2%}, and compression only loses accuracy; lower the floor"
                )
            else:
                outcome = (
                    f"no recipe meets the floor of {floor_acc:.2%}"
                    + (f" and fits {profile.name}" if profile is not None else "")
                    + f" within {len(steps) - 1} candidate(s); allow a larger drop or more candidates"
                )
        else:
            outcome = (
                f"chosen: {chosen.recipe.name} ({goal.description}) at "
                f"{chosen.validation_accuracy:.2%} on the validation images (floor "
                f"{floor_acc:.2%}); test split, as evaluate() measures it: "
                f"{chosen.figures['accuracy']:.2%}"
            )
            for s in steps:
                if s is not chosen and s.accepted:
                    s.reason += f"; not chosen: {_fmt(goal.column, s.figures[goal.column])} vs {_fmt(goal.column, chosen.figures[goal.column])}"
        # Baseline first, then the path's order.
        ordered = [self.results[s.key] for s in steps if s.key is not None]
        unique = list({r.key: r for r in ordered}.values())
        return SearchResult(
            model=self.model.name,
            target=goal.name,
            floor=self.floor,
            steps=steps,
            chosen=None if chosen is None else chosen.index,
            outcome=outcome,
            stopped=stopped,
            sensitivity=sensitivity,
            wall_seconds=time.perf_counter() - self.started,
            device=None if profile is None else profile.name,
            settings=self.settings.to_dict(),
            results=unique,
            model_info=self.model.describe(),
            max_candidates=self.max_candidates,
        )


def _absolute_floor(floor: dict[str, Any], baseline_accuracy: float) -> float:
    """The floor as a fraction: the absolute percentage, or the drop below the baseline."""
    if floor["kind"] == "absolute":
        return floor["value"] / 100.0
    return baseline_accuracy - floor["value"] / 100.0


def _grid(i: int) -> str:
    if i < 0:
        return "none"
    if i >= len(SPARSITY_GRID):
        return f"above {MAX_SPARSITY:g}"
    return f"{SPARSITY_GRID[i]:g}"


def _keeps_floor(step: SearchStep, floor_acc: float) -> bool:
    """Whether the step's validation accuracy (what every verdict is decided on) keeps
    ``floor_acc``."""
    acc = step.validation_accuracy
    # A hair of float tolerance: 97.5% measured as 0.97499999 must still keep 97.5%.
    return acc is not None and float(acc) >= floor_acc - 1e-9


def _faster(step: SearchStep) -> bool:
    speed = step.figures.get("speedup")
    return speed is not None and float(speed) > 1.0


def _judge(
    step: SearchStep,
    result: Result,
    goal: SearchTarget,
    floor_acc: float | None,
    fit_of: Callable[[Result], Any] | None,
) -> None:
    """Set ``step.accepted`` and its reason from its measured figures."""
    if floor_acc is None:  # the baseline, before the floor is known
        return
    acc = float(step.validation_accuracy)
    keeps = _keeps_floor(step, floor_acc)
    reasons = [
        f"validation accuracy {acc:.2%} {'keeps' if keeps else 'is below'} the floor "
        f"{floor_acc:.2%} (test {float(step.figures['accuracy']):.2%})"
    ]
    fits = True
    if fit_of is not None:
        fit = fit_of(result)
        step.fit = fit.to_dict()
        fits = fit.fits
        reasons.append(
            fit.summary() if not fits else f"fits {fit.device} (decided by {fit.decided_by})"
        )
    step.accepted = keeps and fits
    step.reason = ("accepted: " if step.accepted else "rejected: ") + "; ".join(reasons)
    step.reason += f"; {goal.name} {_fmt(goal.column, step.figures.get(goal.column))}"


def _artifact_accuracy(runtime: Any, result: Result, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a measured artifact on the validation images (one at a time,
    as the pipeline predicts)."""
    logits = runtime.predict(result.artifact, x, batch_size=1)
    return float((np.argmax(logits.reshape(len(x), -1), axis=1) == y).mean())


# ------------------------------------------------------------------- evaluate flags


def evaluate_flags(recipe: Recipe) -> list[str]:
    """The ``workbench evaluate`` flags that build ``recipe`` (the steps a search makes:
    a student's distillation, one-shot pruning, fine-tuning with an optional teacher,
    quantization).

    Raises:
        WorkbenchError: a step or setting those flags cannot express (one ``--teacher``
            serves the distillation and the fine-tuning, so theirs must agree).
    """
    defaults = {
        "distill": DistillConfig(),
        "prune": PruneConfig(),
        "finetune": FineTuneConfig(),
        "quantize": QuantizeConfig(),
    }
    teachers = {s.teacher for s in recipe.steps if isinstance(s, (DistillConfig, FineTuneConfig))}
    if len(teachers) > 1:
        raise WorkbenchError(
            "the distillation and the fine-tuning learn from different teachers, and one "
            "--teacher flag sets both",
            "use the recipe's JSON",
        )
    flags: list[str] = []
    for step in recipe.steps:
        if step.kind not in defaults:
            raise WorkbenchError(
                f"the {step.kind} step has no flag in this conversion", "use the recipe's JSON"
            )
        _check_only(step, defaults[step.kind])
        if isinstance(step, DistillConfig):
            flags += ["--student", step.student or "self"]
            if step.width != 1.0:
                flags += ["--student-width", f"{step.width:g}"]
            if step.init != "scratch":
                flags += ["--student-init", step.init]
            flags += ["--distill-epochs", str(step.epochs)]
        elif isinstance(step, PruneConfig):
            flags += ["--prune", step.method, "--sparsity", f"{step.sparsity:g}"]
            if step.scope != "global":
                flags += ["--scope", step.scope]
            if not step.keep_first_last:
                flags.append("--prune-first-last")
            for name in step.exclude:
                flags += ["--exclude", name]
            if step.max_layer_sparsity is not None:
                flags += ["--max-layer-sparsity", f"{step.max_layer_sparsity:g}"]
            if step.importance != "magnitude":
                flags += ["--prune-importance", step.importance]
        elif isinstance(step, FineTuneConfig):
            flags += ["--finetune-epochs", str(step.epochs)]
        elif isinstance(step, QuantizeConfig):
            flags += ["--quantize", step.scheme]
            if step.max_accuracy_drop is not None:
                flags += ["--accuracy-aware", f"{step.max_accuracy_drop:g}"]
    teacher = next(iter(teachers), None)
    if teacher:
        flags += ["--teacher", teacher]
    return flags


# Settings each flag set above expresses; any other must be at its default.
_FLAGGED = {
    "distill": {"student", "width", "teacher", "init", "epochs"},
    "prune": {
        "method",
        "sparsity",
        "scope",
        "keep_first_last",
        "exclude",
        "max_layer_sparsity",
        "importance",
    },
    "finetune": {"epochs", "teacher"},
    "quantize": {"scheme", "max_accuracy_drop"},
}


def _check_only(step: StepConfig, default: StepConfig) -> None:
    mine, base = step.to_dict(), default.to_dict()
    other = [k for k in mine if k != "kind" and k not in _FLAGGED[step.kind] and mine[k] != base[k]]
    if other:
        raise WorkbenchError(
            f"{step.label()} sets {', '.join(other)}, which the evaluate flags here do not carry",
            "use the recipe's JSON",
        )

"""Evaluate a variant: apply a recipe to a model, export it, measure the artifact.

``evaluate(model, recipe)`` is the one path every number takes: the CLI, the sweeps,
the panels and CI all call it. PyTorch steps (pruning) change a copy of the module;
the module is exported to the runtime's artifact (with a parity check); artifact steps
(quantization) change the file; then the file is measured in that runtime. Everything
runtime-specific goes through :func:`workbench.runtimes.get_runtime` (default ONNX
Runtime).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench import measure
from workbench.cache import PREDICTIONS_FILE, Cache
from workbench.errors import WorkbenchError
from workbench.honesty import agreement_warning, noise_warning
from workbench.recipe import (
    DistillConfig,
    FineTuneConfig,
    GradualPruneConfig,
    PruneConfig,
    QATConfig,
    QuantizeConfig,
    Recipe,
    StepConfig,
)
from workbench.results import (
    PROGRESS_STAGES,
    Metrics,
    NoiseCheck,
    Progress,
    Result,
    SpeedComparison,
)
from workbench.runtimes import DEFAULT_RUNTIME, Runtime, get_runtime

__all__ = [
    "MeasureSettings",
    "check_applicable",
    "evaluate",
    "evaluation_inputs",
    "is_keras_model",
    "subject_model",
    "torch_steps_unavailable",
    "variant_key",
]

# Notes of a PyTorch step that mean it could not do what was asked, or did harm: these
# become warnings on the Result (a quantize step's notes and fallbacks always do).
_SHORTFALLS = ("could be removed", "lost every weight", "left unpruned")

# Bump when a change to the pipeline changes what a cached number would be.
PIPELINE_VERSION = 5  # 2: batch-1 predictions, slower-than-float vs float variant; 3: census of the artifact, params per use; 4: latency interleaved with the references, noise check, zlib level 6; 5: the runtime is part of the key and the Result
# One timing at a time in this process: a sweep in the background and the panel's
# current variant would otherwise share the cores and disturb each other's latency.
_MEASURE_LOCK = threading.Lock()
# Inputs for agreement when a model has no labelled task: seeded random normal images.
UNLABELLED_INPUTS = 64


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one),
    as the environment line records them."""
    from workbench.measure.environment import _cores

    return _cores()[2] or 1


@dataclass(frozen=True)
class MeasureSettings:
    """How a variant is measured; part of every cache key."""

    threads: int = 1  # the runtime's intra-op threads for latency, memory and profile
    warmup: int = 10  # untimed runs before timing
    min_runs: int = 100  # timed runs at least (for a meaningful p99)
    min_seconds: float = 0.5  # and timing for at least this long
    profile: bool = True  # time per operator type from the runtime's profiler (if it has one)
    max_accuracy_drop: float = 1.0  # points lost before the accuracy warning
    # The variant and its references are timed in this many interleaved rounds.
    rounds: int = 9
    # A measurement is noisy (kept, but measured again next time) when the middle half
    # of its rounds spans more than this fraction of the median (the speed-up's rounds,
    # or the baseline's own p50s) ...
    max_spread: float = 0.25
    # ... or when the OS took the CPU from the timing thread on more than this share of
    # the timed runs (another process wanted the core).
    max_preempted: float = 0.1
    runtime: str = DEFAULT_RUNTIME  # the runtime the artifact is built for and measured in

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 1:
            raise WorkbenchError(
                f"threads {self.threads!r} is not a whole number >= 1", "use 1 or more threads"
            )
        # More threads than cores measure contention, not the model; and thousands of
        # threads can bring the machine to a halt before a single figure is out.
        cores = usable_cores()
        if self.threads > cores:
            raise WorkbenchError(
                f"threads {self.threads} is more than the {cores} core(s) this process can use",
                f"use threads from 1 to {cores} (CLI: --threads)",
            )
        get_runtime(self.runtime)  # an unknown name fails here, listing the known ones
        if self.min_runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise WorkbenchError(
                "latency settings must be positive", "use min_runs >= 1, warmup >= 0"
            )
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise WorkbenchError(
                f"rounds {self.rounds!r} is not a whole number >= 1", "use 1 or more rounds"
            )
        if self.max_spread < 0 or self.max_preempted < 0:
            raise WorkbenchError(
                "noise limits must be >= 0", "use e.g. max_spread=0.25, max_preempted=0.1"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _versions(runtime: str = DEFAULT_RUNTIME) -> dict[str, str]:
    """The library versions a measurement in ``runtime`` depends on."""
    return get_runtime(runtime).versions()


def _model_identity(model: Any, recipe: Recipe | None = None) -> dict:
    # A task whose training part leaves images out (``Task.fitting``) trains and
    # calibrates other variants; the baseline reads no training data, so it keeps one key.
    task = None
    if model.task is not None:
        task = model.task.name if recipe is None or recipe.is_baseline else model.task.identity
    return {
        "fingerprint": model.fingerprint,
        "input_shape": list(model.input_shape),
        "task": task,
        "preprocessing": model.preprocessing.to_dict() if model.preprocessing else None,
    }


def variant_key(model: Any, recipe: Recipe, settings: MeasureSettings) -> str:
    """The content hash naming a variant's cache entry.

    It covers the model's weights, the recipe, the data, the measurement settings, the
    library versions and the CPU, since latency is only valid on the machine it was
    measured on.
    """
    env = measure.environment(settings.threads)
    measured = settings.to_dict()
    if not get_runtime(settings.runtime).measures_latency:
        # Nothing is timed (TFLite Micro): timing settings change no figure, so one
        # entry serves every caller (the CLI's defaults, a notebook's quick settings).
        measured = {k: measured[k] for k in ("runtime", "max_accuracy_drop")}
    payload = {
        "pipeline": PIPELINE_VERSION,
        "model": _model_identity(model, recipe),
        "recipe": recipe.to_dict(),
        "settings": measured,
        "runtime": settings.runtime,
        "versions": _versions(settings.runtime),
        "cpu": [env.get("cpu_model"), env.get("logical_cores")],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def trained_key(model: Any, recipe: Recipe) -> str:
    """The content hash naming the PyTorch module ``recipe``'s training steps make of
    ``model``: the same for every runtime, measurement setting and artifact step."""
    import torch

    payload = {
        "pipeline": PIPELINE_VERSION,
        "model": _model_identity(model, recipe),
        "steps": Recipe(recipe.torch_steps()).to_dict(),  # a distilled student: named here
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def evaluation_inputs(model: Any) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs to measure accuracy and agreement on, their labels, and a description.

    The task's test split when the model has a task; otherwise seeded random normal
    inputs (agreement only).
    """
    if model.task is not None:
        x, y = model.task.arrays("test", model.preprocessing)
        # The preprocessing is part of what a score means: a user model fed other inputs
        # than it was trained on scores near chance, and this line shows why.
        return x, y, f"{len(y)} {model.task.name} test images, {model.preprocessing.summary()}"
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((UNLABELLED_INPUTS, *model.input_shape[1:]), dtype=np.float32)
    return x, None, f"{UNLABELLED_INPUTS} random inputs (no labelled task)"


# Random calibration inputs (models without a task) are held in memory at once.
CALIBRATION_MEMORY_BYTES = 1 << 30


def _check_calibration_count(model: Any, n: int) -> None:
    if model.task is not None:
        model.task.check_calibration_count(n)
        return
    per_sample = 4 * int(np.prod(model.input_shape[1:]))
    most = max(1, CALIBRATION_MEMORY_BYTES // per_sample)
    if n > most:
        raise WorkbenchError(
            f"{n:,} random calibration inputs of shape {list(model.input_shape[1:])} would take "
            f"{n * per_sample / 1e9:.1f} GB of memory",
            f"use at most {most:,} calibration samples for this model (a few hundred are usual)",
        )


def calibration_inputs(model: Any, n: int) -> np.ndarray:
    """``n`` calibration inputs: from the task's training part, else seeded random inputs."""
    if model.task is not None:
        return model.task.calibration(model.preprocessing, n)
    _check_calibration_count(model, n)
    rng = np.random.default_rng(4321)
    return rng.standard_normal((n, *model.input_shape[1:]), dtype=np.float32)


# Step handlers, found by config type (not an if/elif chain): torch steps change a
# module in place. Artifact steps write a new file from an old one; each runtime holds
# its own table of them (``Runtime.artifact_steps``).
def _prune_step(module: Any, config: StepConfig, model: Any) -> dict:
    from workbench.compress import prune_

    return prune_(module, config, model.example_input()).to_dict()


def _finetune_step(module: Any, config: StepConfig, model: Any) -> dict:
    from workbench.compress.finetune import finetune_
    from workbench.models import load_model

    teacher = load_model(config.teacher) if config.teacher else None
    return finetune_(module, config, model, teacher).to_dict()


def _gradual_prune_step(module: Any, config: StepConfig, model: Any) -> dict:
    from workbench.compress.gradual import gradual_prune_
    from workbench.models import load_model

    teacher = load_model(config.teacher) if config.teacher else None
    return gradual_prune_(module, config, model, teacher).to_dict()


def _qat_step(module: Any, config: StepConfig, model: Any) -> dict:
    from workbench.compress.qat import qat_
    from workbench.models import load_model

    teacher = load_model(config.teacher) if config.teacher else None
    return qat_(module, config, model, teacher).to_dict()


def _distill_step(module: Any, config: StepConfig, model: Any, *, teacher: Any) -> dict:
    from workbench.compress.distill import distill_

    return distill_(module, config, model, teacher)


TORCH_STEPS: dict[type, Callable[..., dict]] = {
    PruneConfig: _prune_step,
    FineTuneConfig: _finetune_step,
    GradualPruneConfig: _gradual_prune_step,
    QATConfig: _qat_step,
    DistillConfig: _distill_step,
}


def _keras_pruner() -> Callable[..., dict]:
    """``workbench.compress.keras_prune.prune_keras``, or a clear error where it is absent."""
    try:
        from workbench.compress.keras_prune import prune_keras
    except ImportError:
        raise WorkbenchError(
            "pruning a Keras model needs workbench.compress.keras_prune, which this build "
            "does not have yet",
            "quantize the Keras model only, or prune a PyTorch model",
        ) from None
    return prune_keras


def _keras_prune_step(keras_model: Any, config: StepConfig, model: Any) -> dict:
    return _keras_pruner()(keras_model, config)


# The steps a Keras model takes before export (the rest are refused by check_applicable).
KERAS_STEPS: dict[type, Callable[..., dict]] = {PruneConfig: _keras_prune_step}


def _keras_copy(keras_model: Any) -> Any:
    """A copy of a Keras model with its own weights (steps must not touch the original)."""
    from workbench._tf import keras

    clone = keras().models.clone_model(keras_model)
    clone.set_weights(keras_model.get_weights())
    return clone


# Steps that train the module: they need a labelled task.
TRAINING_STEPS = (FineTuneConfig, GradualPruneConfig, QATConfig, DistillConfig)
_STEP_NAMES = {
    "prune": "pruning",
    "finetune": "fine-tuning",
    "gradual_prune": "gradual pruning",
    "qat": "quantization-aware training",
    "distill": "distillation",
}


_COMPILED = {
    "onnx": "an ONNX file",
    "torchscript": "a TorchScript file",
    "pt2": "a .pt2 program",
    "tflite": "a .tflite file",
}


def is_keras_model(model: Any) -> bool:
    """Whether ``model`` holds a Keras model (``source == "keras"``), whose pruning goes
    through ``workbench.compress.keras_prune`` and whose training steps are refused."""
    return getattr(model, "keras_model", None) is not None


def torch_steps_unavailable(model: Any) -> str:
    """What ``model`` is, when pruning and fine-tuning cannot apply to it; "" when they can.

    They edit and retrain ``nn.Conv2d``/``nn.Linear`` modules: an ONNX file has none,
    and TorchScript and torch.export programs run compiled graphs instead. A Keras
    model can be pruned (its Conv and Dense kernels); its training steps are refused by
    :func:`check_applicable`. A ``.tflite`` file is measured as it is.
    """
    if is_keras_model(model):
        return ""
    if model.module is None or model.source in _COMPILED:
        return _COMPILED.get(model.source, "not a PyTorch module")
    return ""


def check_applicable(model: Any, recipe: Recipe, runtime: str | Runtime = DEFAULT_RUNTIME) -> None:
    """Raise WorkbenchError when ``recipe`` cannot be applied to ``model`` at all.

    Checked before anything is built or measured, so a sweep or an evaluation that
    cannot succeed fails at once; ``runtime`` must have a handler for every step that
    acts on its artifact.
    """
    rt = get_runtime(runtime)
    for step in _artifact_steps(recipe, rt):
        if type(step) not in rt.artifact_steps:
            raise WorkbenchError(
                f"the {step.kind} step ({step.label()}) has no {rt.name} implementation",
                f"use a runtime that has one, or leave the {step.kind} step out",
            )
    rt.check_recipe(model, recipe)  # what this runtime can build from this model
    if is_keras_model(model):
        unsupported = [
            s for s in recipe.steps if s.stage == "torch" and not isinstance(s, PruneConfig)
        ]
        if unsupported:
            what = " and ".join(_STEP_NAMES.get(s.kind, s.kind) for s in unsupported)
            raise WorkbenchError(
                f"{what} is not supported for Keras models ({model.name}): the workbench "
                "trains PyTorch models only",
                "prune (one shot) and quantize the Keras model here, or train it in Keras "
                "and load the result",
            )
        prune = recipe.get("prune")
        if prune is not None:
            _keras_pruner()
            if prune.method != "unstructured":  # checked here so a sweep fails at once
                raise WorkbenchError(
                    f"{prune.method} pruning (removing channels) is not available for Keras models",
                    "use unstructured pruning (--prune unstructured), or load the PyTorch model "
                    "to remove channels",
                )
    why = torch_steps_unavailable(model)
    if recipe.torch_steps() and model.source == "tflite":
        steps = " and ".join(_STEP_NAMES.get(s.kind, s.kind) for s in recipe.torch_steps())
        raise WorkbenchError(
            f"{model.name} is a .tflite file, measured as it is; {steps} needs a trainable model",
            "load the Keras or PyTorch model it was converted from, or measure the file "
            "without steps",
        )
    if recipe.torch_steps() and why:
        steps = " and ".join(_STEP_NAMES.get(s.kind, s.kind) for s in recipe.torch_steps())
        raise WorkbenchError(
            f"{model.name} is {why}, and {steps} needs the model as PyTorch layers",
            "load its weights as a state_dict with the architecture (arch=... / --arch: a "
            "sample name or torchvision:<arch>), or use quantization only",
        )
    quant = recipe.get("quantize")
    if isinstance(quant, QuantizeConfig) and quant.scheme == "int8":
        _check_calibration_count(model, quant.calibration_samples)
    if isinstance(quant, QuantizeConfig) and quant.max_accuracy_drop is not None:
        if model.task is None:
            raise WorkbenchError(
                f"max_accuracy_drop needs labelled images, and {model.name} has no task",
                "load the model with a task (e.g. task='digits' / --task digits), or leave "
                "max_accuracy_drop unset",
            )
    qat = recipe.get("qat")
    if isinstance(qat, QATConfig):
        _check_calibration_count(model, qat.calibration_samples)
    training = [s for s in recipe.steps if isinstance(s, TRAINING_STEPS)]
    if training and model.task is None:
        what = _STEP_NAMES.get(training[0].kind, training[0].kind)
        raise WorkbenchError(
            f"{what} of {model.name} needs a labelled task to train on",
            f"load the model with a task (e.g. task='digits' / --task digits), or leave {what} out",
        )
    distill = recipe.get("distill")
    if isinstance(distill, DistillConfig):
        subject_model(model, recipe)  # builds the student and checks it against the teacher


def _teacher(model: Any, config: DistillConfig) -> Any:
    from workbench.models import load_model

    return load_model(config.teacher) if config.teacher else model


def subject_model(model: Any, recipe: Recipe) -> Any:
    """The model the recipe's steps act on: the distillation's student when the recipe
    distils, else ``model`` itself. The student brings its own input shape and
    preprocessing, which the export, the measurement and the evaluation inputs follow."""
    distill = recipe.get("distill")
    if not isinstance(distill, DistillConfig):
        return model
    from workbench.compress.distill import check_student

    student = check_student(model, distill, _teacher(model, distill))
    if model.task is not None and student.task != model.task:
        # A student sample is loaded with the whole task; it trains on the part the
        # caller's model allows (``Task.fitting`` leaves the validation images out).
        student = dataclasses.replace(student, task=model.task)
    return student


def _artifact_steps(recipe: Recipe, runtime: Runtime) -> tuple[StepConfig, ...]:
    """The steps applied to the exported file: QAT implies its int8 export, and a runtime
    may require one (TFLite Micro runs full-integer int8 only, see
    ``Runtime.required_steps``)."""
    qat = recipe.get("qat")
    steps = recipe.artifact_steps()
    if isinstance(qat, QATConfig):
        steps = (qat.quantize_config(), *steps)
    return runtime.required_steps(steps)


# The PyTorch steps that train (minutes, not seconds): a module they made is kept.
_TRAINING_STEPS = (FineTuneConfig, GradualPruneConfig, QATConfig, DistillConfig)


def _shapes(state: dict) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a state_dict, by name."""
    return {k: tuple(v.shape) for k, v in state.items()}


def _loaded(model: Any, state: dict) -> Any:
    """A copy of ``model.module`` holding ``state``, in eval mode."""
    module = copy.deepcopy(model.module)
    module.load_state_dict(state)
    return module.eval()


def _trained_module(
    model: Any, recipe: Recipe, teacher: Any | None, trained: tuple[Cache, str] | None
) -> tuple[Any, list[dict]]:
    """A copy of ``model.module`` after ``recipe``'s PyTorch steps, and their reports.

    With ``trained`` (a cache and :func:`trained_key`) a module trained before is loaded
    instead of trained again, and a new one is stored, so every runtime's artifact and a
    quantized variant's float reference come from one training. A module whose steps
    changed its structure (structured pruning removes channels) is not stored: a
    state_dict loads only into a module of its own shapes. Nor is one only pruned: that
    takes seconds to redo, and the state_dict is as large as the model."""
    steps = recipe.torch_steps()
    keep = trained if any(isinstance(s, _TRAINING_STEPS) for s in steps) else None
    shapes = _shapes(model.module.state_dict())
    stored = keep[0].get_trained(keep[1]) if keep else None
    if stored is not None and _shapes(stored[0]) == shapes:
        return _loaded(model, stored[0]), stored[1]
    module = copy.deepcopy(model.module)
    reports: list[dict] = []
    for step in steps:
        extra = {"teacher": teacher} if isinstance(step, DistillConfig) else {}
        report = TORCH_STEPS[type(step)](module, step, model, **extra)
        reports.append({"kind": step.kind, **report})
    state = module.state_dict()
    if keep and _shapes(state) == shapes:
        keep[0].put_trained(keep[1], state, reports)
        # Exported as it will be when loaded: pruning re-registers a weight after its
        # bias, which reorders the file's initializers, so a module loaded later would
        # give another file's bytes than the one trained now.
        module = _loaded(model, state)
    return module, reports


def _build_artifact(
    model: Any,
    recipe: Recipe,
    work: Path,
    parity_inputs: np.ndarray,
    runtime: Runtime,
    teacher: Any | None = None,
    trained: tuple[Cache, str] | None = None,
) -> tuple[Path, float | None, Path, list[dict]]:
    """Apply the recipe for ``runtime``; returns the artifact, the export parity, the
    float artifact (before the artifact steps) and each step's report.

    ``model`` is the subject (the student when the recipe distils, see ``subject_model``);
    ``teacher`` the model the distillation learns from; ``trained`` where the trained
    module is kept (see ``_trained_module``)."""
    float_artifact = work / f"float.{runtime.artifact_format}"
    reports: list[dict] = []
    module = None
    if model.module is not None:
        module, reports = _trained_module(model, recipe, teacher, trained)
    elif is_keras_model(model) and recipe.torch_steps():
        # A Keras model's steps (pruning only, see check_applicable) act on a copy; the
        # runtime exports that copy as it exports a stepped PyTorch module.
        module = _keras_copy(model.keras_model)
        for step in recipe.torch_steps():
            report = KERAS_STEPS[type(step)](module, step, model)
            reports.append({"kind": step.kind, **report})
    parity = runtime.export(model, module, float_artifact, parity_inputs)
    artifact = work / runtime.artifact_file
    src = float_artifact
    for step in _artifact_steps(recipe, runtime):
        handler = runtime.artifact_steps[type(step)]
        reports.append({"kind": step.kind, **handler(src, artifact, step, model)})
        src = artifact
    if src == float_artifact:
        shutil.copyfile(float_artifact, artifact)
    return artifact, parity, float_artifact, reports


def _noise_check(timing: measure.InterleavedTiming, comparisons, settings) -> NoiseCheck:
    """Whether the timing was disturbed: spread over rounds, preemption, load."""
    if comparisons:
        spread = max(c.relative_spread for c in comparisons)
        what = "the speed-up's"
    else:
        own = timing.latency[0]
        spread = (
            (own.p50_high - own.p50_low) / own.p50
            if own.p50_low is not None and own.p50 > 0
            else 0.0
        )
        what = "the p50's"
    reasons = []
    if spread > settings.max_spread:
        reasons.append(
            f"the middle half of {what} rounds spans {spread:.0%} of its median "
            f"(limit {settings.max_spread:.0%})"
        )
    if timing.preempted_share > settings.max_preempted:
        reasons.append(
            f"other processes took the CPU from the timing {timing.preempted_share:.2f} "
            f"times per run (limit {settings.max_preempted:g})"
        )
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        load = None
    try:
        cores: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    if reasons and load is not None:
        reasons.append(f"load average {load:.1f} on {cores} usable cores")
    return NoiseCheck(
        noisy=bool(reasons),
        reasons=tuple(reasons),
        spread=float(spread),
        preempted_share=float(timing.preempted_share),
        load_average=load,
        usable_cores=cores,
    )


def _fields(metrics: Metrics) -> dict[str, Any]:
    """A Metrics' fields by name, values as they are (not turned into dicts)."""
    return {f.name: getattr(metrics, f.name) for f in dataclasses.fields(metrics)}


# What is still to come after each of PROGRESS_STAGES (Metrics field names).
_PENDING = dict(
    zip(
        PROGRESS_STAGES,
        (
            ("compressed_bytes", "latency", "comparisons", "noise", "memory", "operator_ms"),
            ("memory", "operator_ms"),
            (),
        ),
        strict=True,
    )
)


def _report(
    on_progress: Callable[[Progress], None] | None, stage: str, recipe: Recipe, known: dict
) -> None:
    if on_progress is not None:
        pending = tuple(name for name in _PENDING[stage] if name not in known)
        on_progress(Progress(stage, recipe, dict(known), pending))


def _input_shape(model: Any, reference: Result) -> tuple[int, ...]:
    """The input shape ``reference`` was measured with: its own subject's (a distilled
    float version is the student, the baseline is ``model`` itself)."""
    return tuple(subject_model(model, reference.recipe).input_shape)


def _measure_speed(
    artifact: Path,
    references: list[tuple[str, Result]],
    shapes: list[Sequence[int]],
    settings: MeasureSettings,
    known: dict,
    recipe: Recipe,
    on_progress: Callable[[Progress], None] | None,
) -> dict:
    """Time ``artifact`` interleaved with its references, then memory and profile.

    ``shapes`` holds the input shape of ``artifact``, then of each reference: a
    distilled student and its teacher baseline take different inputs.

    Returns the Metrics fields measured here; ``on_progress`` hears of the latency
    before memory and the profile are measured.
    """
    shape = shapes[0]
    runtime = get_runtime(settings.runtime)
    if not runtime.measures_latency:
        # Nothing is timed (see Runtime.measures_latency): no latency, comparisons or
        # noise check; the memory is what the runtime needs (TFLite Micro: its arena).
        fields = {"latency": None, "comparisons": (), "noise": None}
        known.update(fields)
        _report(on_progress, "latency", recipe, known)
        # Under the lock all the same: the arena search starts a process per probe, which
        # would disturb a timing running beside it in this process.
        with _MEASURE_LOCK:
            fields["memory"] = runtime.measure_memory(artifact, shape, settings.threads)
            fields["arena"] = runtime.arena_report(artifact)
        fields["operator_ms"] = {}
        fields["environment"] = {
            **measure.environment(settings.threads),
            "runtime": runtime.name,
            "runtime_versions": runtime.versions(),
        }
        return fields
    with _MEASURE_LOCK:
        timing = runtime.measure_latency_interleaved(
            [artifact, *(ref.artifact for _, ref in references)], shapes, settings
        )
        comparisons = tuple(
            SpeedComparison.from_rounds(
                label, ref.recipe.name, timing.round_p50[0], timing.round_p50[i + 1]
            )
            for i, (label, ref) in enumerate(references)
        )
        fields = {
            "latency": timing.latency[0],
            "comparisons": comparisons,
            "noise": _noise_check(timing, comparisons, settings),
        }
        known.update(fields)
        _report(on_progress, "latency", recipe, known)
        fields["memory"] = runtime.measure_memory(artifact, shape, settings.threads)
        fields["operator_ms"] = (
            runtime.profile_operators(artifact, shape, settings.threads) if settings.profile else {}
        )
        # What the timing ran: the delegate the runtime applied and the nodes it took.
        fields["delegation"] = runtime.delegation(artifact, settings.threads)
    # The environment names the runtime the figures were measured in.
    fields["environment"] = {
        **measure.environment(settings.threads),
        "runtime": runtime.name,
        "runtime_versions": runtime.versions(),
    }
    return fields


def _warnings(
    recipe: Recipe,
    metrics: Metrics,
    baseline: Result | None,
    census: Any,
    reports: tuple[dict, ...] | list[dict],
    base_preds: np.ndarray,
    settings: MeasureSettings,
) -> tuple[str, ...]:
    """Every warning of a measured variant: the honesty rules, step shortfalls, noise."""
    warnings = list(
        get_runtime(settings.runtime).honesty_warnings(
            recipe,
            metrics,
            baseline.metrics if baseline else None,
            census,
            settings.max_accuracy_drop,
        )
    )
    # Agreement over a model that answers one class for everything means nothing.
    if metrics.accuracy is None:
        one_class = agreement_warning(base_preds)
        if one_class:
            warnings.append(one_class)
    # A step that could not do all it was asked says so in its report.
    warnings += [
        f"{r['kind']}: {note}"
        for r in reports
        for note in [*r.get("notes", []), *r.get("fallbacks", [])]
        if r["kind"] == "quantize" or any(marker in note for marker in _SHORTFALLS)
    ]
    noisy = noise_warning(metrics.noise)
    if noisy:
        warnings.append(noisy)
    return tuple(warnings)


def evaluate(
    model: Any,
    recipe: Recipe | None = None,
    *,
    settings: MeasureSettings | None = None,
    cache: Cache | None = None,
    remeasure: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> Result:
    """Apply ``recipe`` to ``model``, export, and measure the artifact.

    A variant's latency is timed interleaved with its baseline's (and, for a quantized
    variant with PyTorch steps, its float version's) in the same run, and its speed-up
    stored with the spread over rounds (``metrics.comparisons``). A result whose timing
    was disturbed (``result.noisy``) is cached, but not as final: the next call measures
    its latency, memory and profile again on the cached artifact.

    Args:
        model: a ``workbench.models.Model`` or a name/path for ``load_model``.
        recipe: the steps; the empty recipe (default) measures the baseline.
        settings: how to measure (threads, runs, rounds, noise limits, profiling).
        cache: where results are kept; a rerun with the same key is instant.
        remeasure: measure the timing, memory and profile of a cached variant again
            (nothing is rebuilt) and replace the cached figures.
        on_progress: called with a :class:`~workbench.results.Progress` as figures
            become known: accuracy, agreement, sizes, params and MACs first, latency
            next, memory and the operator profile last (a cached result: not called).

    Returns:
        The Result, whose artifact lives in the cache entry.
    """
    model, recipe = _coerce_arguments(model, recipe)
    settings = settings or MeasureSettings()
    cache = cache or Cache()
    check_applicable(model, recipe, settings.runtime)
    key = variant_key(model, recipe, settings)
    hit = cache.get(key)
    if hit is not None and not remeasure and not hit.noisy:
        return _for_caller(hit, model)
    return _for_caller(
        _evaluate_uncached(model, recipe, settings, cache, key, hit, on_progress), model
    )


def _reference(model: Any, recipe: Recipe, settings: MeasureSettings, cache: Cache) -> Result:
    """A variant's baseline or float version: cached is enough, even if its own timing
    was noisy, since it is timed again interleaved with the variant."""
    hit = cache.get(variant_key(model, recipe, settings))
    return hit if hit is not None else evaluate(model, recipe, settings=settings, cache=cache)


def _evaluate_uncached(
    model: Any,
    recipe: Recipe,
    settings: MeasureSettings,
    cache: Cache,
    key: str,
    hit: Result | None,
    on_progress: Callable[[Progress], None] | None,
) -> Result:
    """Build and measure ``recipe`` (``hit`` None), or measure a cached ``hit`` again."""
    baseline = None if recipe.is_baseline else _reference(model, Recipe(), settings, cache)
    references: list[tuple[str, Result]] = [] if baseline is None else [("baseline", baseline)]
    # "Slower than float" compares a quantized variant with the same model in float:
    # pruned the same way, else the baseline.
    # A runtime that times nothing (TFLite Micro) needs no float version to compare with.
    runtime = get_runtime(settings.runtime)
    if recipe.artifact_steps() and recipe.torch_steps() and runtime.measures_latency:
        float_variant = Recipe(recipe.torch_steps())
        references.append(("float", _reference(model, float_variant, settings, cache)))
    # A distilled variant is the student: its input shape and preprocessing. Each
    # reference is timed with the input shape of the model it was built from (a
    # student's baseline is its teacher).
    subject = subject_model(model, recipe)
    shapes = [subject.input_shape, *(_input_shape(model, ref) for _, ref in references)]
    base_preds_path = None if baseline is None else cache.predictions_path(baseline.key)
    if hit is not None:
        return _remeasure(
            hit, shapes, baseline, references, base_preds_path, settings, cache, on_progress
        )
    distill = recipe.get("distill")
    teacher = _teacher(model, distill) if isinstance(distill, DistillConfig) else None
    inputs, labels, basis = evaluation_inputs(subject)
    with cache.building(key) as work:
        artifact, parity, float_artifact, reports = _build_artifact(
            subject,
            recipe,
            work,
            inputs[:16],
            runtime,
            teacher,
            (cache, trained_key(model, recipe)),
        )
        # Whatever else the export kept beside the float file for the artifact steps
        # (LiteRT keeps the Keras model it converted) is build scratch too.
        for scratch in work.glob(f"{float_artifact.stem}.*"):
            scratch.unlink()
        # Compressing a large file and counting its weights take seconds; zlib and
        # ONNX Runtime release the GIL, so they run beside the predictions (on other
        # cores where there are some). The timing comes after all of them.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="workbench-figures") as pool:
            sizes = pool.submit(measure.file_sizes, artifact)
            graph = pool.submit(runtime.graph_stats, artifact)
            census = runtime.census(artifact)
            # One input at a time, as the latency is measured and a device runs it:
            # dynamic quantization scales activations over the whole batch it is given,
            # so a batched run would measure predictions the batch-1 artifact never makes.
            logits = runtime.predict(artifact, inputs, batch_size=1)
            preds = np.argmax(logits.reshape(len(inputs), -1), axis=1)
            np.save(work / PREDICTIONS_FILE, preds)
            base_preds = preds if base_preds_path is None else np.load(base_preds_path)
            stats = graph.result()
            known: dict[str, Any] = {
                "accuracy": None if labels is None else measure.accuracy(preds, labels),
                "agreement": measure.agreement(preds, base_preds),
                "agreement_basis": basis,
                "size_bytes": artifact.stat().st_size,
                "params": stats.params,
                "nonzero_params": stats.nonzero_params,
                "macs": stats.macs,
                "parity_max_abs_diff": parity,
            }
            # The first figures do not wait for the compression; the timing does.
            _report(on_progress, "accuracy", recipe, known)
            known["size_bytes"], known["compressed_bytes"] = sizes.result()
        known.update(
            _measure_speed(artifact, references, shapes, settings, known, recipe, on_progress)
        )
        metrics = Metrics(**known)
        warnings = _warnings(recipe, metrics, baseline, census, reports, base_preds, settings)
        result = Result(
            model.name, recipe, artifact, metrics, warnings, key, tuple(reports), runtime.name
        )
        Cache.write_result(work, result)
    stored = cache.get(key)
    if stored is None:
        raise WorkbenchError(
            f"the cache entry for {recipe.name} vanished right after it was written",
            f"check that {cache.root} is writable and not cleaned by another process",
        )
    _report(on_progress, "complete", recipe, _fields(stored.metrics))
    return stored


def _remeasure(
    hit: Result,
    shapes: list[Sequence[int]],
    baseline: Result | None,
    references: list[tuple[str, Result]],
    base_preds_path: Path | None,
    settings: MeasureSettings,
    cache: Cache,
    on_progress: Callable[[Progress], None] | None,
) -> Result:
    """Measure a cached variant's timing, memory and profile again; replace its figures.

    Nothing is rebuilt: the artifact and predictions stay, so accuracy and sizes do too.
    ``shapes``: the input shapes of the variant, then of each reference (see
    ``_measure_speed``).
    """
    recipe = hit.recipe
    known = _fields(hit.metrics)
    _report(on_progress, "accuracy", recipe, known)
    known.update(
        _measure_speed(hit.artifact, references, shapes, settings, known, recipe, on_progress)
    )
    metrics = Metrics(**known)
    preds_path = cache.predictions_path(hit.key)
    base_preds = np.load(base_preds_path if base_preds_path is not None else preds_path)
    warnings = _warnings(
        recipe,
        metrics,
        baseline,
        get_runtime(settings.runtime).census(hit.artifact),
        hit.steps,
        base_preds,
        settings,
    )
    cache.replace_result(hit.key, dataclasses.replace(hit, metrics=metrics, warnings=warnings))
    stored = cache.get(hit.key)
    if stored is None:
        raise WorkbenchError(
            f"the cache entry for {recipe.name} vanished while it was re-measured",
            f"check that {cache.root} is writable and not cleaned by another process",
        )
    _report(on_progress, "complete", recipe, _fields(stored.metrics))
    return stored


def _coerce_arguments(model: Any, recipe: Any) -> tuple[Any, Recipe]:
    """``evaluate``'s model and recipe as a Model and a Recipe, or a WorkbenchError that
    names the right call (a raw AttributeError deep inside says nothing)."""
    from workbench.models import Model, load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    elif not isinstance(model, Model):
        kind = type(model).__name__
        if _is_torch_module(model):
            raise WorkbenchError(
                f"evaluate() was given a bare PyTorch module ({kind}): the workbench needs "
                "its input shape and a fingerprint of its weights",
                "save it (torch.export.save(torch.export.export(module, (example,)), "
                "'model.pt2')) and pass load_model('model.pt2', input_shape=(1, C, H, W))",
            )
        raise WorkbenchError(
            f"evaluate() needs a model, not {kind} {model!r}"[:200],
            "pass load_model('digits-cnn') (or a name or path from `workbench models`)",
        )
    if recipe is None:
        return model, Recipe()
    if isinstance(recipe, StepConfig):  # a bare config is the obvious one-step recipe
        return model, Recipe((recipe,))
    if not isinstance(recipe, Recipe):
        raise WorkbenchError(
            f"evaluate()'s recipe must be a Recipe or a step config, not {type(recipe).__name__} "
            f"{recipe!r}"[:200],
            "pass e.g. QuantizeConfig(scheme='int8') or Recipe.of(prune=PruneConfig(sparsity=0.5), "
            "quantize=QuantizeConfig(scheme='int8'))",
        )
    return model, recipe


def _is_torch_module(value: Any) -> bool:
    import torch

    return isinstance(value, torch.nn.Module) or (
        isinstance(value, type) and issubclass(value, torch.nn.Module)
    )


# Accuracy below this multiple of chance (1 / classes) on a user's model points at inputs
# prepared differently from training more often than at a broken model.
NEAR_CHANCE_FACTOR = 2.5


def preprocessing_warning(model: Any, accuracy: float | None) -> str:
    """A warning when a user model with a task scores near chance: the likely cause is a
    preprocessing other than the one it was trained with. "" when there is nothing to say."""
    if model.source == "sample" or model.task is None or accuracy is None:
        return ""
    chance = 1.0 / model.task.num_classes
    if accuracy >= NEAR_CHANCE_FACTOR * chance:
        return ""
    p = model.preprocessing
    used = (
        f"size={p.size}, channels={p.channels}, divisor={p.divisor:g}, mean={p.mean:g}, "
        f"std={p.std:g}"
        if p is not None
        else "none"
    )
    return (
        f"accuracy {accuracy:.1%} is near chance ({chance:.0%}) with the preprocessing "
        f"{used}: if the model was trained on other inputs, give the preprocessing it was "
        "trained with, e.g. load_model(..., preprocessing={'mean': 0.5, 'std': 0.5}) "
        "(CLI: --preprocess mean=0.5,std=0.5)"
    )


def _for_caller(result: Result, model: Any) -> Result:
    """``result`` as this caller asked for it: an entry is shared by every model with the
    same weights, so it is named after the caller's model, with the caller's warnings."""
    extra = preprocessing_warning(model, result.metrics.accuracy)
    warnings = result.warnings + ((extra,) if extra and extra not in result.warnings else ())
    return dataclasses.replace(result, model=model.name, warnings=warnings)

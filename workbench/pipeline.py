"""Evaluate a variant: apply a recipe to a model, export it, measure the artifact.

``evaluate(model, recipe)`` is the one path every number takes: the CLI, the sweeps,
the panels and CI all call it. PyTorch steps (pruning) change a copy of the module;
the module is exported to ONNX (with a parity check); ONNX steps (quantization)
change the file; then the file is measured in ONNX Runtime.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from workbench import measure
from workbench.cache import ARTIFACT_FILE, PREDICTIONS_FILE, Cache
from workbench.errors import WorkbenchError
from workbench.honesty import conv_census, honesty_warnings
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
from workbench.results import Metrics, Result

__all__ = [
    "MeasureSettings",
    "check_applicable",
    "evaluate",
    "evaluation_inputs",
    "subject_model",
    "torch_steps_unavailable",
    "variant_key",
]

# Notes of a PyTorch step that mean it could not do what was asked, or did harm: these
# become warnings on the Result (a quantize step's notes and fallbacks always do).
_SHORTFALLS = ("could be removed", "lost every weight", "left unpruned")

# Bump when a change to the pipeline changes what a cached number would be.
PIPELINE_VERSION = 3  # 2: batch-1 predictions, slower-than-float vs float variant; 3: census of the artifact, params per use
# One timing at a time in this process: a sweep in the background and the panel's
# current variant would otherwise share the cores and disturb each other's latency.
_MEASURE_LOCK = threading.Lock()
# Inputs for agreement when a model has no labelled task: seeded random normal images.
UNLABELLED_INPUTS = 64


@dataclass(frozen=True)
class MeasureSettings:
    """How a variant is measured; part of every cache key."""

    threads: int = 1  # ONNX Runtime intra-op threads for latency, memory and profile
    warmup: int = 10  # untimed runs before timing
    min_runs: int = 100  # timed runs at least (for a meaningful p99)
    min_seconds: float = 0.5  # and timing for at least this long
    profile: bool = True  # time per operator type from ONNX Runtime's profiler
    max_accuracy_drop: float = 1.0  # points lost before the accuracy warning

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 1:
            raise WorkbenchError(
                f"threads {self.threads!r} is not a whole number >= 1", "use 1 or more threads"
            )
        if self.min_runs < 1 or self.warmup < 0 or self.min_seconds < 0:
            raise WorkbenchError(
                "latency settings must be positive", "use min_runs >= 1, warmup >= 0"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("edge-workbench", "torch", "onnx", "onnxruntime", "torch-pruning", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _model_identity(model: Any) -> dict:
    return {
        "fingerprint": model.fingerprint,
        "input_shape": list(model.input_shape),
        "task": model.task.name if model.task else None,
        "preprocessing": model.preprocessing.to_dict() if model.preprocessing else None,
    }


def variant_key(model: Any, recipe: Recipe, settings: MeasureSettings) -> str:
    """The content hash naming a variant's cache entry.

    It covers the model's weights, the recipe, the data, the measurement settings, the
    library versions and the CPU, since latency is only valid on the machine it was
    measured on.
    """
    env = measure.environment(settings.threads)
    payload = {
        "pipeline": PIPELINE_VERSION,
        "model": _model_identity(model),
        "recipe": recipe.to_dict(),
        "settings": settings.to_dict(),
        "versions": _versions(),
        "cpu": [env.get("cpu_model"), env.get("logical_cores")],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def evaluation_inputs(model: Any) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs to measure accuracy and agreement on, their labels, and a description.

    The task's test split when the model has a task; otherwise seeded random normal
    inputs (agreement only).
    """
    if model.task is not None:
        x, y = model.task.arrays("test", model.preprocessing)
        return x, y, f"{len(y)} {model.task.name} test images"
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
# module in place; ONNX steps write a new file from an old one.
def _prune_step(module: Any, config: StepConfig, model: Any) -> dict:
    from workbench.compress import prune_

    return prune_(module, config, model.example_input()).to_dict()


def _quantize_step(src: Path, dst: Path, config: StepConfig, model: Any) -> dict:
    from workbench.compress import quantize

    calib = (
        calibration_inputs(model, config.calibration_samples) if config.scheme == "int8" else None
    )
    return quantize(src, dst, config, calib).to_dict()


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
# Steps that train the module: they need a labelled task.
TRAINING_STEPS = (FineTuneConfig, GradualPruneConfig, QATConfig, DistillConfig)
_STEP_NAMES = {
    "prune": "pruning",
    "finetune": "fine-tuning",
    "gradual_prune": "gradual pruning",
    "qat": "quantization-aware training",
    "distill": "distillation",
}
ONNX_STEPS: dict[type, Callable[..., dict]] = {QuantizeConfig: _quantize_step}


_COMPILED = {"onnx": "an ONNX file", "torchscript": "a TorchScript file", "pt2": "a .pt2 program"}


def torch_steps_unavailable(model: Any) -> str:
    """What ``model`` is, when pruning and fine-tuning cannot apply to it; "" when they can.

    They edit and retrain ``nn.Conv2d``/``nn.Linear`` modules: an ONNX file has none,
    and TorchScript and torch.export programs run compiled graphs instead.
    """
    if model.module is None or model.source in _COMPILED:
        return _COMPILED.get(model.source, "not a PyTorch module")
    return ""


def check_applicable(model: Any, recipe: Recipe) -> None:
    """Raise WorkbenchError when ``recipe`` cannot be applied to ``model`` at all.

    Checked before anything is built or measured, so a sweep or an evaluation that
    cannot succeed fails at once.
    """
    why = torch_steps_unavailable(model)
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

    return check_student(model, distill, _teacher(model, distill))


def _artifact_steps(recipe: Recipe) -> tuple[StepConfig, ...]:
    """The steps applied to the exported file: QAT implies its int8 export."""
    qat = recipe.get("qat")
    if isinstance(qat, QATConfig):
        return (qat.quantize_config(), *recipe.onnx_steps())
    return recipe.onnx_steps()


def _build_artifact(
    model: Any,
    recipe: Recipe,
    work: Path,
    parity_inputs: np.ndarray,
    teacher: Any | None = None,
) -> tuple[Path, float | None, Path, list[dict]]:
    """Apply the recipe; returns the artifact, the export parity, the float ONNX file
    and each step's report.

    ``model`` is the subject (the student when the recipe distils, see ``subject_model``);
    ``teacher`` the model the distillation learns from."""
    float_onnx = work / "float.onnx"
    parity = None
    reports: list[dict] = []
    if model.module is not None:
        from workbench.onnx_export import export_onnx

        module = copy.deepcopy(model.module)
        for step in recipe.torch_steps():
            extra = {"teacher": teacher} if isinstance(step, DistillConfig) else {}
            report = TORCH_STEPS[type(step)](module, step, model, **extra)
            reports.append({"kind": step.kind, **report})
        parity = export_onnx(
            module, model.input_shape, float_onnx, parity_inputs=parity_inputs
        ).max_abs_diff
    else:
        _copy_onnx(model, float_onnx)
    artifact = work / ARTIFACT_FILE
    src = float_onnx
    for step in _artifact_steps(recipe):
        reports.append({"kind": step.kind, **ONNX_STEPS[type(step)](src, artifact, step, model)})
        src = artifact
    if src == float_onnx:
        shutil.copyfile(float_onnx, artifact)
    return artifact, parity, float_onnx, reports


def _copy_onnx(model: Any, dest: Path) -> None:
    """Copy an ONNX source into ``dest`` as one self-contained file.

    Weights kept beside the file (ONNX external data) are read in, so every artifact
    built from it, and every export, carries its weights with it.
    """
    if not model.meta.get("external_data"):
        shutil.copyfile(model.onnx_path, dest)
        return
    import onnx

    proto = onnx.load(str(model.onnx_path), load_external_data=True)
    if proto.ByteSize() >= 2**31:
        raise WorkbenchError(
            f"{model.name} holds over 2 GB of weights, more than one ONNX file can carry",
            "compress a model small enough for an edge device (under 2 GB of weights)",
        )
    onnx.save(proto, str(dest))


def evaluate(
    model: Any,
    recipe: Recipe | None = None,
    *,
    settings: MeasureSettings | None = None,
    cache: Cache | None = None,
) -> Result:
    """Apply ``recipe`` to ``model``, export, and measure the artifact.

    Args:
        model: a ``workbench.models.Model`` or a name/path for ``load_model``.
        recipe: the steps; the empty recipe (default) measures the baseline.
        settings: how to measure (threads, runs, profiling).
        cache: where results are kept; a rerun with the same key is instant.

    Returns:
        The Result, whose artifact lives in the cache entry.
    """
    from workbench.models import load_model

    if isinstance(model, (str, Path)):
        model = load_model(model)
    recipe = recipe or Recipe()
    settings = settings or MeasureSettings()
    cache = cache or Cache()
    check_applicable(model, recipe)
    key = variant_key(model, recipe, settings)
    hit = cache.get(key)
    if hit is not None:
        return hit

    baseline = (
        None if recipe.is_baseline else evaluate(model, Recipe(), settings=settings, cache=cache)
    )
    # "Slower than float" compares a quantized variant with the same model in float:
    # pruned the same way, else the baseline.
    float_reference = None
    if recipe.onnx_steps() and recipe.torch_steps():
        float_variant = Recipe(recipe.torch_steps())
        float_reference = evaluate(model, float_variant, settings=settings, cache=cache).metrics
    # A distilled variant is the student: its input shape and preprocessing.
    subject = subject_model(model, recipe)
    distill = recipe.get("distill")
    teacher = _teacher(model, distill) if isinstance(distill, DistillConfig) else None
    inputs, labels, basis = evaluation_inputs(subject)
    with cache.building(key) as work:
        artifact, parity, float_onnx, reports = _build_artifact(
            subject, recipe, work, inputs[:16], teacher
        )
        float_onnx.unlink()
        census = conv_census(artifact)
        # One input at a time, as the latency is measured and a device runs it: dynamic
        # quantization scales activations over the whole batch it is given, so a batched
        # run would measure predictions the batch-1 artifact never makes.
        logits = measure.predict(artifact, inputs, batch_size=1)
        preds = np.argmax(logits.reshape(len(inputs), -1), axis=1)
        np.save(work / PREDICTIONS_FILE, preds)
        base_preds = preds if baseline is None else np.load(cache.predictions_path(baseline.key))
        size, compressed = measure.file_sizes(artifact)
        stats = measure.graph_stats(artifact)
        shape = subject.input_shape
        with _MEASURE_LOCK:
            latency = measure.measure_latency(
                artifact,
                shape,
                threads=settings.threads,
                warmup=settings.warmup,
                min_runs=settings.min_runs,
                min_seconds=settings.min_seconds,
            )
            memory = measure.measure_memory(artifact, shape, threads=settings.threads)
            ops = (
                measure.profile_operators(artifact, shape, threads=settings.threads)
                if settings.profile
                else {}
            )
        metrics = Metrics(
            accuracy=None if labels is None else measure.accuracy(preds, labels),
            agreement=measure.agreement(preds, base_preds),
            agreement_basis=basis,
            size_bytes=size,
            compressed_bytes=compressed,
            params=stats.params,
            nonzero_params=stats.nonzero_params,
            macs=stats.macs,
            latency=latency,
            memory=memory,
            operator_ms=ops,
            parity_max_abs_diff=parity,
            environment=measure.environment(settings.threads),
        )
        warnings = honesty_warnings(
            recipe,
            metrics,
            baseline.metrics if baseline else None,
            census,
            measure.has_int8_dot_product(),
            settings.max_accuracy_drop,
            float_reference=float_reference,
        )
        # A step that could not do all it was asked says so in its report.
        shortfalls = [
            f"{r['kind']}: {note}"
            for r in reports
            for note in [*r.get("notes", []), *r.get("fallbacks", [])]
            if r["kind"] == "quantize" or any(marker in note for marker in _SHORTFALLS)
        ]
        result = Result(
            model.name, recipe, artifact, metrics, warnings + tuple(shortfalls), key, tuple(reports)
        )
        Cache.write_result(work, result)
    stored = cache.get(key)
    if stored is None:
        raise WorkbenchError(
            f"the cache entry for {recipe.name} vanished right after it was written",
            f"check that {cache.root} is writable and not cleaned by another process",
        )
    return stored

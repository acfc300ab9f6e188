"""The ``workbench`` command: a thin front end over the Python API.

Every subcommand has ``--json`` for scripts and CI. Bad input exits with status 2 and
one line saying what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.results import NO_LATENCY

__all__ = ["main"]

PRUNE_CHOICES = ("none", "unstructured", "structured")
QUANT_CHOICES = ("none", "dynamic", "int8", "fp16")
LOCAL_CLUSTER = "<local>"  # --ray without an address: a cluster of this machine alone


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


# The digits preprocessing's settings (workbench.data.Preprocessing), as --preprocess keys.
PREPROCESS_KEYS = ("size", "channels", "divisor", "mean", "std", "layout")


def _preprocess(text: str) -> dict:
    out: dict = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in PREPROCESS_KEYS:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not KEY=VALUE with KEY one of {', '.join(PREPROCESS_KEYS)} "
                "(e.g. mean=0.5,std=0.5)"
            )
        if key == "layout":
            out[key] = value.strip().upper()
            continue
        try:
            out[key] = int(value) if key in ("size", "channels") else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: {value!r} is not a number") from None
    if not out:
        raise argparse.ArgumentTypeError("give at least one KEY=VALUE, e.g. mean=0.5,std=0.5")
    return out


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape such as 1,3,224,224") from None


class _Parser(argparse.ArgumentParser):
    """argparse, but a malformed command line gets one line (exit status 2), not the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}. run `{self.prog} --help` for the options\n")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="a name from `workbench models`, or a model file (.onnx, TorchScript, .pt2, "
        "state_dict, .keras, .h5, a SavedModel folder, .tflite)",
    )
    p.add_argument(
        "--arch", help="architecture for a state_dict file, e.g. digits-cnn or torchvision:resnet18"
    )
    p.add_argument("--task", help="the labelled task of a user model (digits)")
    p.add_argument(
        "--preprocess",
        type=_preprocess,
        metavar="KEY=VALUE,...",
        help="how the task's images become a user model's inputs, e.g. mean=0.5,std=0.5 "
        f"(keys: {', '.join(PREPROCESS_KEYS)}; default: size, channels and layout from the "
        "input shape, divisor=16, mean=0, std=1; layout NCHW or NHWC)",
    )
    p.add_argument("--input-shape", type=_shape, help="batch-1 input shape, e.g. 1,3,224,224")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="torchvision architectures: random weights instead of pretrained",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the runtime's intra-op threads for timing (default 1)",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the per-operator profile")
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        help="the runtime the artifact is built for and measured in (default onnxruntime); "
        "sweep takes several, comma-separated, and measures every variant in each",
    )
    p.add_argument(
        "--cache-dir", type=Path, help="where variants are cached (default ~/.cache/edge-workbench)"
    )
    p.add_argument("--no-cache", action="store_true", help="measure afresh in a temporary cache")
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="time cached variants again (latency, memory, profile; nothing is rebuilt)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    from workbench.recipe import CALIBRATIONS, IO_TYPES, OVERFLOW_FIXES, QuantizeConfig

    p.add_argument(
        "--per-tensor", action="store_true", help="one int8 scale per tensor instead of per channel"
    )
    p.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        help="int8 calibration method (default minmax)",
    )
    p.add_argument(
        "--calibration-samples",
        type=int,
        help="training images used to calibrate int8 (default 128)",
    )
    p.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="NODE_OR_OP",
        help="node name or op type to leave in float (repeatable)",
    )
    p.add_argument(
        "--overflow-fix",
        choices=OVERFLOW_FIXES,
        default=None,  # None: not given (refused without int8); the config's default applies
        help="int8: 7-bit weights where 8-bit ones could saturate on x86 CPUs without VNNI "
        f"(default {QuantizeConfig().overflow_fix}: the layers reading the model input)",
    )
    p.add_argument(
        "--bias-correction",
        action=argparse.BooleanOptionalAction,
        default=None,  # None: not given (refused without int8); the config's default applies
        help="int8: shift each Conv/Gemm bias by its output's mean error on the calibration "
        f"images (default {'on' if QuantizeConfig().bias_correction else 'off'})",
    )
    p.add_argument(
        "--io-type",
        choices=IO_TYPES,
        help="int8 in LiteRT: the file's input and output type, int8 (what a microcontroller "
        "feeds) or float (default)",
    )
    p.add_argument(
        # not --max-accuracy-drop: the device gate's flag of that name is a pass/fail limit
        "--accuracy-aware",
        dest="quant_max_drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="int8: keep the most sensitive layers in float until accuracy on held-out "
        "training images is within POINTS of float",
    )


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    from workbench.recipe import PRUNE_IMPORTANCES

    p.add_argument(
        "--scope",
        choices=("global", "layer"),
        default="global",
        help="one threshold for all layers, or each layer alone",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="LAYER",
        help="layer never pruned (repeatable)",
    )
    p.add_argument(
        "--prune-first-last", action="store_true", help="also prune the first and last layers"
    )
    p.add_argument(
        "--max-layer-sparsity",
        type=float,
        metavar="F",
        help="no layer loses more than this fraction (e.g. 0.98); the rest of a global "
        "request goes to the other layers (default: no cap)",
    )
    p.add_argument(
        "--prune-importance",
        choices=PRUNE_IMPORTANCES,
        default=None,
        help="unstructured: rank weights by |w| (magnitude, the default) or by |w| times "
        "the scale of the batch norm after the layer (bn-scaled)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        metavar="N",
        help="retrain N epochs after pruning (default 0: none)",
    )
    p.add_argument(
        "--teacher",
        metavar="MODEL",
        help="distil from this model while retraining, e.g. digits-resnet18",
    )


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prune-steps",
        type=int,
        default=1,
        metavar="N",
        help="prune gradually in N steps, fine-tuning after each (default 1: one shot)",
    )
    p.add_argument(
        "--schedule",
        choices=("cubic", "linear"),
        default="cubic",
        help="how gradual pruning raises the sparsity (default cubic)",
    )
    p.add_argument(
        "--step-epochs",
        type=int,
        default=1,
        metavar="N",
        help="fine-tuning epochs after each gradual pruning step (default 1)",
    )
    p.add_argument(
        "--macs-ratio",
        type=float,
        metavar="F",
        help="gradual structured pruning: keep this fraction of the MACs (0.5 halves them), "
        "each step's channel sparsity searched on the model as the earlier steps left it "
        "(instead of --sparsity)",
    )
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=0,
        metavar="N",
        help="quantization-aware training for N epochs, exported as int8 (replaces --quantize)",
    )
    p.add_argument(
        "--student",
        metavar="MODEL",
        help="distil the model into this sample (e.g. digits-cnn); 'self' for its own architecture",
    )
    p.add_argument(
        "--student-width",
        type=float,
        default=1.0,
        metavar="W",
        help="channel multiplier of the student's architecture (DigitsCNN, MobileNetV2)",
    )
    p.add_argument(
        "--student-init",
        choices=("scratch", "pretrained"),
        default="scratch",
        help="start the student from random weights or its own trained ones",
    )
    p.add_argument(
        "--distill-epochs",
        type=int,
        default=10,
        metavar="N",
        help="epochs of training the student (default 10)",
    )


def _training_steps(args: argparse.Namespace, prune: Any) -> tuple[Any, Any, Any]:
    """The distillation, (gradual) pruning and QAT steps the evaluate flags ask for."""
    from workbench.recipe import DistillConfig, GradualPruneConfig, QATConfig

    distill = None
    if args.student is not None or args.student_width != 1.0:
        distill = DistillConfig(
            student="" if args.student in (None, "self") else args.student,
            width=args.student_width,
            teacher=args.teacher,
            init=args.student_init,
            epochs=args.distill_epochs,
        )
    if args.macs_ratio is not None and (prune is None or args.prune_steps == 1):
        raise WorkbenchError(
            "--macs-ratio sets the target of gradual structured pruning",
            "add --prune structured --prune-steps N (e.g. 3)",
        )
    if args.prune_steps != 1:
        if prune is None:
            raise WorkbenchError(
                "--prune-steps sets gradual pruning", "add --prune unstructured|structured"
            )
        fields = {k: v for k, v in prune.to_dict().items() if k != "kind"}
        if args.macs_ratio is not None:
            # the config refuses a --sparsity given too, naming both
            fields.update(sparsity=args.sparsity, macs_ratio=args.macs_ratio)
        prune = GradualPruneConfig(
            **fields,
            steps=args.prune_steps,
            schedule=args.schedule,
            epochs_per_step=args.step_epochs,
            teacher=args.teacher,
        )
    qat = QATConfig(epochs=args.qat_epochs, teacher=args.teacher) if args.qat_epochs else None
    return distill, prune, qat


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="workbench",
        description="Compress neural networks for edge devices and measure what each setting costs and buys.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the models the registry knows")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. 'digits-*'")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "evaluate", help="apply a recipe, export for the runtime and measure the artifact"
    )
    _add_model_args(p)
    p.add_argument("--prune", choices=PRUNE_CHOICES, default="none")
    p.add_argument(
        "--sparsity",
        type=float,
        help="fraction pruned, 0 to 0.99 unstructured, 0.95 structured (default 0.5)",
    )
    _add_prune_args(p)
    p.add_argument("--quantize", choices=QUANT_CHOICES, default="none")
    _add_quant_args(p)
    _add_training_args(p)
    p.add_argument(
        "--out", type=Path, help="keep the artifact, the baseline and manifest.json in this folder"
    )
    p.add_argument(
        "--hold-out-validation",
        action="store_true",
        help="train and calibrate without the task's validation images, as `workbench "
        "search` builds its candidates (the variant a search chose; accuracy is still the "
        "test split's)",
    )

    p = sub.add_parser("sweep", help="evaluate a grid of recipes and print the Pareto frontier")
    _add_model_args(p)
    p.add_argument("--prune", choices=PRUNE_CHOICES, default="unstructured")
    p.add_argument("--sparsity", type=_floats, help="comma-separated, e.g. 0,0.5,0.8 (default 0)")
    _add_prune_args(p)
    p.add_argument("--quantize", default="none", help="comma-separated from none,dynamic,int8,fp16")
    _add_quant_args(p)
    p.add_argument("--out", type=Path, required=True, help="the study JSON file to write")
    p.add_argument("--csv", type=Path, help="also write the variants as CSV")
    p.add_argument(
        "--objectives",
        default="accuracy:max,latency_p50_ms:min,size_bytes:min",
        help="frontier objectives as column:min|max,...",
    )
    p.add_argument(
        "--frontier-per-runtime",
        action="store_true",
        help="with several runtimes: a frontier per runtime (recorded in the study and CSV) "
        "instead of one across them",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_CLUSTER,
        metavar="ADDRESS",
        help="run the variants on a Ray cluster: 'auto' joins the one started on this machine, "
        "host:port another; no address starts one here (pip install 'edge-workbench[ray]')",
    )
    p.add_argument(
        "--device",
        action="append",
        metavar="NAME[,NAME...]",
        help="target devices, comma-separated (host,raspberry-pi-4,cortex-m4,...): a variants x "
        "devices matrix of fit (pass/fail with the deciding figure) and the frontier within each "
        "budget, printed and written to the study JSON and CSV; with --ray, one device: also "
        "measure on the nodes started with the resource device:NAME",
    )
    p.add_argument("--devices-file", type=Path, help="TOML file of your own [[device]] profiles")

    p = sub.add_parser(
        "parity",
        help="build one variant for two runtimes and compare the files' predictions",
    )
    _add_model_args(p)
    p.add_argument(
        "--runtimes",
        default="onnxruntime,litert",
        help="the two runtimes compared, comma-separated (default onnxruntime,litert)",
    )
    p.add_argument("--prune", choices=PRUNE_CHOICES, default="none")
    p.add_argument(
        "--sparsity",
        type=float,
        help="fraction pruned, 0 to 0.99 unstructured, 0.95 structured (default 0.5)",
    )
    _add_prune_args(p)
    p.add_argument("--quantize", choices=QUANT_CHOICES, default="none")
    _add_quant_args(p)
    _add_training_args(p)

    p = sub.add_parser("report", help="write a self-contained HTML report of a study")
    p.add_argument("study", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument(
        "--frontier-per-runtime",
        action="store_true",
        help="a frontier per runtime on the charts and in the table",
    )
    p.add_argument(
        "--device",
        action="append",
        metavar="NAME[,NAME...]",
        help="target devices, comma-separated: a section each saying which variants fit "
        "(with the deciding figure) and their latency there (measured there if imported with "
        "`workbench import`, else a labelled estimate)",
    )
    p.add_argument("--devices-file", type=Path, help="TOML file of your own [[device]] profiles")
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="where device measurements were imported (default ~/.cache/edge-workbench)",
    )
    from workbench.cli_devices import add_device_commands
    from workbench.cli_search import add_search_command

    add_device_commands(sub)
    add_search_command(sub)
    return parser


def _load(args: argparse.Namespace) -> Any:
    from workbench.data import Preprocessing
    from workbench.models import load_model

    prep = None
    if args.preprocess is not None:
        if args.task is None and not _is_sample(args.model):
            raise WorkbenchError(
                "--preprocess says how a task's images become inputs", "add --task digits"
            )
        # Keys not given keep the defaults a task would get: size and channels from the
        # input shape (or the model's), the others from Preprocessing.
        shape = args.input_shape
        base = _geometry(shape, _layout_of_file(args.model, shape)) if shape else {}
        if not {"size", "channels", "layout"} <= set(args.preprocess):
            if not base:
                base = _default_geometry(args)
        prep = Preprocessing(**{**base, **args.preprocess})
    model = load_model(
        args.model,
        arch=args.arch,
        pretrained=not args.random_init,
        task=args.task,
        input_shape=args.input_shape,
        preprocessing=prep,
    )
    if getattr(args, "hold_out_validation", False):
        if model.task is None:
            raise WorkbenchError(
                "--hold-out-validation leaves a task's validation images out, and "
                f"{model.name} has no labelled task",
                "add --task digits, or drop --hold-out-validation",
            )
        model = dataclasses.replace(model, task=model.task.fitting())
    return model


def _is_sample(name: str) -> bool:
    from workbench.models._keras import keras_sample_names
    from workbench.models._sample import sample_names

    return name in sample_names() or name in keras_sample_names()


def _geometry(shape: Sequence[int], layout: str) -> dict:
    """Size, channels and layout of a 4-D image input ``shape`` ({} for another shape)."""
    if len(shape) != 4:
        return {}
    size, channels = (shape[1], shape[3]) if layout == "NHWC" else (shape[-1], shape[1])
    return {"size": size, "channels": channels, "layout": layout}


def _layout_of_file(model: str, shape: Sequence[int]) -> str:
    """The input layout of the model named ``model`` with input ``shape``, without loading
    it: Keras and TFLite files take NHWC unless the shape says channels first."""
    from workbench.models._keras import guess_layout, keras_sample_names

    path = Path(model)
    if (
        model in keras_sample_names()
        or path.suffix.lower() in (".keras", ".h5", ".hdf5", ".tflite")
        or path.is_dir()
    ):
        return guess_layout(tuple(shape), "NHWC")
    return "NCHW"


def _default_geometry(args: argparse.Namespace) -> dict:
    """Size, channels and layout of the model's own input, loading it once without a task."""
    from workbench.models import load_model
    from workbench.models.registry import input_layout

    model = load_model(args.model, arch=args.arch, pretrained=not args.random_init)
    return _geometry(model.input_shape, input_layout(model))


def _settings(args: argparse.Namespace) -> Any:
    from workbench.pipeline import MeasureSettings

    runtimes = _runtime_names(args)
    if len(runtimes) > 1 and args.command != "sweep":
        raise WorkbenchError(
            f"--runtime {args.runtime} names {len(runtimes)} runtimes; {args.command} "
            "measures in one",
            f"pass one (e.g. --runtime {runtimes[0]}), or use `workbench sweep` to span several",
        )
    return MeasureSettings(threads=args.threads, profile=not args.no_profile, runtime=runtimes[0])


def _runtime_names(args: argparse.Namespace) -> list[str]:
    """--runtime's comma-separated names, in order, without repeats; each one known."""
    from workbench.runtimes import get_runtime

    names = list(dict.fromkeys(n.strip() for n in args.runtime.split(",") if n.strip()))
    if not names:
        raise WorkbenchError(
            f"--runtime {args.runtime!r} names no runtime",
            "give one or more runtime names, comma-separated, e.g. --runtime onnxruntime",
        )
    for name in names:
        get_runtime(name)  # an unknown name fails here, listing the known ones
    return names


def _prune_config(args: argparse.Namespace, method: str, sparsity: float) -> Any:
    from workbench.recipe import PruneConfig

    if method == "none":
        return None
    return PruneConfig(
        method=method,
        sparsity=sparsity,
        scope=args.scope,
        keep_first_last=not args.prune_first_last,
        exclude=tuple(args.exclude),
        max_layer_sparsity=args.max_layer_sparsity,
        importance=args.prune_importance or "magnitude",
    )


def _finetune_config(args: argparse.Namespace, trains: bool = False) -> Any:
    from workbench.recipe import FineTuneConfig

    if args.finetune_epochs == 0:
        if args.teacher and not trains:
            raise WorkbenchError("--teacher needs retraining", "add --finetune-epochs N (e.g. 3)")
        return None
    return FineTuneConfig(epochs=args.finetune_epochs, teacher=args.teacher)


def _quant_config(args: argparse.Namespace, scheme: str) -> Any:
    from workbench.recipe import QuantizeConfig

    if scheme == "none":
        return None
    if scheme not in QUANT_CHOICES:
        raise WorkbenchError(
            f"quantization {scheme!r} is not supported", f"use one of: {', '.join(QUANT_CHOICES)}"
        )
    defaults = QuantizeConfig()
    return QuantizeConfig(
        scheme=scheme,
        per_channel=not args.per_tensor,
        calibration=args.calibration or defaults.calibration,
        calibration_samples=(
            defaults.calibration_samples
            if args.calibration_samples is None
            else args.calibration_samples
        ),
        keep_float=tuple(args.keep_float),
        # The sweep builds one config per scheme; these three only mean something for
        # int8 (QuantizeConfig refuses them for the other schemes).
        bias_correction=(
            args.bias_correction
            if scheme == "int8" and args.bias_correction is not None
            else defaults.bias_correction
        ),
        overflow_fix=(args.overflow_fix if scheme == "int8" else None) or defaults.overflow_fix,
        max_accuracy_drop=args.quant_max_drop if scheme == "int8" else None,
        io_type=(args.io_type or defaults.io_type) if scheme == "int8" else defaults.io_type,
    )


def _refuse_idle_settings(args: argparse.Namespace, prunes: bool, schemes: list[str]) -> None:
    """Raise WorkbenchError for a setting that would change nothing: a user who gave it
    expects it to act, and a figure measured without it would be taken as measured with it."""
    if not prunes and args.sparsity is not None:
        raise WorkbenchError(
            "--sparsity has no effect without pruning", "add --prune unstructured|structured"
        )
    if not prunes and args.max_layer_sparsity is not None:
        raise WorkbenchError(
            "--max-layer-sparsity has no effect without pruning",
            "add --prune unstructured|structured",
        )
    if not prunes and args.prune_importance is not None:
        raise WorkbenchError(
            "--prune-importance has no effect without pruning", "add --prune unstructured"
        )
    if "int8" not in schemes:
        for flag, value in (
            ("--calibration-samples", args.calibration_samples),
            ("--calibration", args.calibration),
        ):
            if value is not None:
                raise WorkbenchError(
                    f"{flag} applies to static int8 quantization only", "add --quantize int8"
                )
        # int8's refinements: the other schemes would ignore them silently
        bias_flag = "--bias-correction" if args.bias_correction else "--no-bias-correction"
        for flag, value in (
            (bias_flag, args.bias_correction),
            ("--overflow-fix", args.overflow_fix),
            ("--accuracy-aware", args.quant_max_drop),
            ("--io-type", args.io_type),
        ):
            if value is not None:
                raise WorkbenchError(
                    f"{flag} applies to static int8 quantization only", "add --quantize int8"
                )
    if not any(s in ("int8", "dynamic") for s in schemes) and args.per_tensor:
        raise WorkbenchError(
            "--per-tensor applies to int8 and dynamic quantization only", "add --quantize int8"
        )
    if not any(s != "none" for s in schemes) and args.keep_float:
        raise WorkbenchError("--keep-float applies to quantization only", "add --quantize int8")


def result_json(result: Any) -> dict:
    """The flat JSON object `workbench evaluate --json` prints."""
    m = result.metrics
    lat = m.latency
    return {
        "model": result.model,
        "runtime": result.runtime,
        "recipe": result.name,
        "steps": result.recipe.to_dict(),
        "accuracy": m.accuracy,
        "agreement": m.agreement,
        "agreement_basis": m.agreement_basis,
        "size_bytes": m.size_bytes,
        "compressed_bytes": m.compressed_bytes,
        "params": m.params,
        "nonzero_params": m.nonzero_params,
        "macs": m.macs,
        # None for a runtime that times nothing here (TFLite Micro); latency_note says why.
        "latency_ms": None
        if lat is None
        else {
            "p50": lat.p50,
            "p90": lat.p90,
            "p99": lat.p99,
            "mean": lat.mean,
            "min": lat.min,
            "max": lat.max,
            "n": lat.n,
            "warmup": lat.warmup,
            "threads": lat.threads,
        },
        "latency_note": NO_LATENCY if lat is None else None,
        "speedup": [c.to_dict() for c in m.comparisons],
        "latency_noise": None if m.noise is None else m.noise.to_dict(),
        "peak_memory_bytes": m.memory.peak_bytes,
        "process_peak_memory_bytes": m.memory.process_peak_bytes,
        "tensor_arena": m.arena,
        "operator_ms": m.operator_ms,
        "parity_max_abs_diff": m.parity_max_abs_diff,
        "delegation": m.delegation,
        "cross_runtime": [p.to_dict() for p in m.cross_runtime],
        "artifact": str(result.artifact),
        "warnings": list(result.warnings),
        "step_reports": list(result.steps),
        "environment": m.environment,
    }


def _fmt_pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _latency_line(m: Any) -> str:
    lat = m.latency
    if lat is None:
        return f"  latency         {NO_LATENCY}"
    return (
        f"  latency         p50 {lat.p50:.3f} ms  p90 {lat.p90:.3f}  p99 {lat.p99:.3f}  "
        f"mean {lat.mean:.3f} (n={lat.n}, {lat.threads} thread(s))"
    )


def _memory_line(m: Any) -> str:
    a = m.arena
    if a is not None:
        return (
            f"  tensor arena    {a['firmware_bytes']:,} B for ARENA_SIZE ({a['activations_bytes']:,} B "
            f"activations + {a['persistent_bytes']:,} B persistent; smallest that runs "
            f"{a['arena_bytes']:,} B), found by the TFLite Micro interpreter; flash "
            f"{a['flash_bytes']:,} B (the model)"
        )
    return (
        f"  peak memory     {m.memory.peak_bytes:,} B added by the model "
        f"({m.memory.process_peak_bytes:,} B process)"
    )


def _text(result: Any) -> str:
    from workbench.formatting import format_speedup
    from workbench.measure.artifact import COMPRESSION_LEVEL
    from workbench.measure.environment import environment_line

    m = result.metrics
    lines = [
        f"{result.model}  [{result.name}]",
        f"  accuracy        {_fmt_pct(m.accuracy)}   agreement {_fmt_pct(m.agreement)} ({m.agreement_basis})",
        f"  size            {m.size_bytes:,} B on disk, {m.compressed_bytes:,} B deflated "
        f"(zlib level {COMPRESSION_LEVEL})",
        f"  params          {m.params:,} ({m.nonzero_params:,} non-zero), {m.macs:,} MACs",
        _latency_line(m),
        *[f"  speed           {format_speedup(c)}" for c in m.comparisons],
        _memory_line(m),
        f"  artifact        {result.artifact}",
    ]
    if m.operator_ms:
        top = ", ".join(f"{k} {v:.3f}" for k, v in list(m.operator_ms.items())[:5])
        lines.append(f"  time by op (ms) {top}")
    lines.append(f"  environment     {environment_line(m.environment, m.delegation)}")
    lines += [f"  parity          {p.text()} ({p.detail()})" for p in m.cross_runtime]
    if m.noise is not None and m.noise.noisy:
        lines.append("  noise           noisy: " + "; ".join(m.noise.reasons))
    lines += [f"  warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _cmd_models(args: argparse.Namespace) -> int:
    from workbench.models import list_models

    names = list_models(args.pattern)
    print(json.dumps(names) if args.json else "\n".join(names))
    return 0


def _cache(args: argparse.Namespace, scratch: list[Path]) -> Any:
    from workbench.cache import Cache

    if args.no_cache:
        scratch.append(Path(tempfile.mkdtemp(prefix="workbench-cache-")))
        return Cache(scratch[-1])
    return Cache(args.cache_dir)


def _evaluate_recipe(args: argparse.Namespace) -> Any:
    """The one recipe the evaluate (and parity) flags describe."""
    from workbench.recipe import Recipe

    _refuse_idle_settings(args, args.prune != "none", [args.quantize])
    prune = _prune_config(args, args.prune, 0.5 if args.sparsity is None else args.sparsity)
    distill, prune, qat = _training_steps(args, prune)
    trains = distill is not None or qat is not None or args.prune_steps != 1
    finetune = _finetune_config(args, trains)
    if finetune is not None and prune is None and distill is None:
        raise WorkbenchError(
            "--finetune-epochs retrains after pruning", "add --prune unstructured|structured"
        )
    steps = (distill, prune, finetune, qat, _quant_config(args, args.quantize))
    return Recipe(tuple(s for s in steps if s is not None))


def _cmd_parity(args: argparse.Namespace, scratch: list[Path]) -> int:
    from workbench.runtimes.parity import cross_runtime_parity

    recipe = _evaluate_recipe(args)
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    settings = _settings(args)
    model = _load(args)
    parity = cross_runtime_parity(
        model, recipe, settings, cache=_cache(args, scratch), runtimes=runtimes
    )
    print(json.dumps(parity.to_dict(), indent=1) if args.json else parity.text())
    return 0


def _cmd_evaluate(args: argparse.Namespace, scratch: list[Path]) -> int:
    from workbench.pipeline import evaluate

    recipe = _evaluate_recipe(args)
    settings = _settings(args)  # checked before the model is loaded: bad input fails fast
    if args.out:
        from workbench.export import check_export_folder  # onnx and the export code: only here

        check_export_folder(args.out)
    model = _load(args)
    cache = _cache(args, scratch)
    result = evaluate(model, recipe, settings=settings, cache=cache, remeasure=args.remeasure)
    out = result_json(result)
    # What the accuracy was scored on: a user model's figures mean little without it.
    out["preprocessing"] = model.preprocessing.to_dict() if model.preprocessing else None
    if args.out:
        from workbench.export import export_variant

        manifest = export_variant(result, model, args.out, settings=settings, cache=cache)
        out["artifact"] = str(manifest.parent / result.artifact.name)
        out["manifest"] = str(manifest)
    text = _text(result)  # the preprocessing is in the accuracy line's basis
    print(
        json.dumps(out, indent=1)
        if args.json
        else text + (f"\n  manifest        {out['manifest']}" if args.out else "")
    )
    return 0


def _check_output_file(flag: str, path: Path) -> None:
    """Raise WorkbenchError unless ``path`` can be written as a file.

    Missing parent folders are fine: they are created when the file is written, as
    ``evaluate --out`` and ``report -o`` do, so every ``--out`` behaves alike.
    """
    if path.is_dir():
        raise WorkbenchError(
            f"{flag} {path} is a folder", f"give a file name, e.g. {path / 'study.json'}"
        )
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WorkbenchError(
            f"{flag} {path}: {folder} is a file, not a folder", "write the file elsewhere"
        )
    try:  # os.access can say yes where a write fails (/proc, read-only mounts)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise WorkbenchError(
            f"{flag} {path}: cannot write in {folder} ({exc.strerror})", "write the file elsewhere"
        ) from None


def _executor(args: argparse.Namespace) -> dict:
    """sweep()'s executor arguments from --ray [ADDRESS] and --device (with --ray, the
    one device whose nodes measure)."""
    from workbench.devices.gate import parse_device_names

    if args.ray is None:
        return {}
    names = parse_device_names(args.device)
    if len(names) > 1:
        raise WorkbenchError(
            f"with --ray, --device names the one device whose nodes measure, not {len(names)}",
            "give one device with --ray, or sweep here (no --ray) for a matrix of several",
        )
    address = None if args.ray == LOCAL_CLUSTER else args.ray
    return {"executor": "ray", "ray_address": address, "device": names[0] if names else None}


def _matrix_devices(args: argparse.Namespace) -> list[str]:
    """The devices of sweep's device matrix, checked before anything is measured: every
    name must be a known device (an unknown one lists them), except with --ray, where
    the name may label cluster nodes only (then there is no matrix for it)."""
    from workbench.devices.gate import parse_device_names
    from workbench.devices.registry import get_device, list_devices, load_profiles

    if args.devices_file:
        load_profiles(args.devices_file)
    names = parse_device_names(args.device)
    if args.ray is not None:
        return [n for n in names if n in list_devices()]
    return [get_device(n).name for n in names]


def _print_device_matrix(report: Any, record: dict) -> None:
    """The sweep's variants x devices table, the deciding figures, the frontiers within."""
    print(
        f"\ndevice matrix ({len(report.variants)} variants x {len(report.devices)} devices; "
        "pass: peak memory within the budget and the file within the storage)"
    )
    print(report.grid())
    width = max(len(v) for v in report.variants)
    for device in report.devices:
        print(f"\n{device}")
        for variant in report.variants:
            print(f"  {variant:<{width}}  {report.cell(variant, device)}")
        front = record["frontiers"][device]["recipes"]
        print(
            f"  frontier within the {device} budget: "
            + (", ".join(front) if front else "none (no variant fits)")
        )


def _cmd_sweep(args: argparse.Namespace, scratch: list[Path]) -> int:
    from workbench.study import FIGURES, OBJECTIVE_COLUMNS, grid, machine_of, sweep

    schemes = [q.strip() for q in args.quantize.split(",") if q.strip()]
    if not schemes:
        raise WorkbenchError(
            f"--quantize {args.quantize!r} names no scheme",
            f"give one or more of {', '.join(QUANT_CHOICES)}, comma-separated",
        )
    if args.sparsity == []:
        raise WorkbenchError(
            "--sparsity names no sparsity", "give one or more fractions, e.g. --sparsity 0,0.5,0.8"
        )
    _refuse_idle_settings(args, args.prune != "none", schemes)
    prune = [_prune_config(args, args.prune, s) for s in (args.sparsity or [0.0])] or [None]
    quant = [_quant_config(args, q) for q in schemes]
    objectives = {}
    for item in args.objectives.split(","):
        col, _, sense = item.partition(":")
        if col not in OBJECTIVE_COLUMNS:
            raise WorkbenchError(
                f"unknown objective {col!r}", f"use one of: {', '.join(OBJECTIVE_COLUMNS)}"
            )
        if sense not in ("", "min", "max"):
            raise WorkbenchError(
                f"objective {item!r} has the direction {sense!r}",
                f"write {col}:min or {col}:max (or just {col})",
            )
        objectives[col] = sense or OBJECTIVE_COLUMNS[col]
    # Checked before the sweep: hours of measuring must not end in an unwritable path.
    for flag, path in (("--out", args.out), ("--csv", args.csv)):
        if path is not None:
            _check_output_file(flag, Path(path))
    settings = _settings(args)
    executor = _executor(args)
    devices = _matrix_devices(args)
    runtimes = _runtime_names(args)
    per_runtime = args.frontier_per_runtime
    model = _load(args)
    cache = _cache(args, scratch)
    study = sweep(
        model,
        grid(prune, quant, _finetune_config(args)),
        settings=settings,
        cache=cache,
        progress=not args.json,
        remeasure=args.remeasure,
        runtimes=runtimes,
        **executor,
    )
    report, record = None, None
    if devices and study.results:
        from workbench.devices.gate import study_device_record

        report, record = study_device_record(study, devices, objectives, cache=cache)
    study.save(args.out, objectives, per_runtime=per_runtime, devices=record)
    if args.csv:
        study.to_csv(args.csv, objectives, per_runtime=per_runtime, devices=record)
    front = study.frontier(objectives, per_runtime=per_runtime)
    if args.json:
        print(
            json.dumps(
                {
                    "study": str(args.out),
                    "variants": len(study.results),
                    "machines": study.machines(),
                    "runtimes": study.runtimes(),
                    "frontier_per_runtime": per_runtime,
                    "frontier": [result_json(r) for r in front],
                    "failures": study.failures,
                    **({"devices": record} if record is not None else {}),
                },
                indent=1,
            )
        )
    else:
        df = study.to_dataframe()
        keys = {r.key for r in front}
        df.insert(0, "frontier", ["*" if k in keys else "" for k in df["key"]])
        # The terminal is narrow: quality, speed, size and memory; the CSV has them all.
        shown = ("accuracy", "agreement", "latency_p50_ms", "size_bytes", "compressed_bytes")
        cols = [
            "frontier",
            "recipe",
            *(f.column for f in FIGURES if f.column in shown or f.unit == "bytes"),
            "warnings",
        ]
        if len(study.runtimes()) > 1:  # the same recipe appears once per runtime
            cols.insert(2, "runtime")
        machines = study.machines()
        if len(machines) > 1:  # a cluster of unlike machines: timings compare within one
            df.insert(2, "machine", [machines.index(m) + 1 for m in map(machine_of, study.results)])
            cols.insert(2, "machine")
        print(df[cols].to_string(index=False))
        for failure in study.failures:
            where = f" in {failure['runtime']}" if len(runtimes) > 1 else ""
            print(f"failed: {failure['recipe_name']}{where}: {failure['error']}")
        if len(study.runtimes()) > 1:
            print(
                "\neach runtime's variants were timed interleaved with its own baseline; "
                "runtimes were timed in separate runs, so compare their latencies with care "
                "(a rerun shows the spread)"
            )
        if len(machines) > 1:
            print(
                f"\nmeasured on {len(machines)} unlike machines; each has its own frontier: "
                + "; ".join(f"{i} = {m}" for i, m in enumerate(machines, 1))
            )
        print(
            f"\n{len(front)} of {len(study.results)} variants on the frontier"
            + f" of {study.objectives_used(objectives)}"
            + (", one frontier per runtime" if per_runtime else "")
            + (f"; {len(study.failures)} failed (kept in the study)" if study.failures else "")
            + f"; study written to {args.out}"
        )
        if report is not None:
            _print_device_matrix(report, record)
    return 0


def _holds_search(path: Path) -> bool:
    """Whether the study file holds a search path (Study.load has read it already)."""
    try:
        return isinstance(json.loads(Path(path).read_text()).get("search"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def _cmd_report(args: argparse.Namespace) -> int:
    from workbench.cache import Cache
    from workbench.devices.gate import parse_device_names
    from workbench.devices.registry import get_device, load_profiles
    from workbench.report import write_report
    from workbench.study import Study

    if args.devices_file:
        load_profiles(args.devices_file)
    devices = [get_device(n).name for n in parse_device_names(args.device)]
    study = Study.load(args.study)
    search = None
    if _holds_search(args.study):  # a `workbench search --out` file: draw its path too
        from workbench.search import SearchResult

        search = SearchResult.load(args.study)
    path = write_report(
        study,
        args.output,
        per_runtime=args.frontier_per_runtime,
        search=search,
        devices=devices,
        cache=Cache(args.cache_dir),
    )
    print(path)
    return 0


def _run_command(args: argparse.Namespace, scratch: list[Path]) -> int:
    if args.command == "models":
        return _cmd_models(args)
    if args.command == "evaluate":
        return _cmd_evaluate(args, scratch)
    if args.command == "sweep":
        return _cmd_sweep(args, scratch)
    if args.command == "parity":
        return _cmd_parity(args, scratch)
    if getattr(args, "device_command", None) is not None:  # workbench/cli_devices.py
        return args.device_command(args, scratch)
    if getattr(args, "search_command", None) is not None:  # workbench/cli_search.py
        return args.search_command(args, scratch)
    return _cmd_report(args)


class _Stopped(KeyboardInterrupt):
    """Ctrl-C or ``kill``, raised where Python was, so clean-up code still runs.

    A subclass on purpose: when a plain KeyboardInterrupt passes through a string
    ``exec`` (dataclasses and torch generate code that way), CPython remembers it and
    makes ``python -m workbench`` die by SIGINT at exit even after it was handled.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Signals received, kept beside the raise: a signal that lands while Python runs a
# callback whose exceptions are ignored (importlib's module-lock clean-up during a lazy
# import) loses the raise, but not this record, which main() checks when the command ends.
_SIGNALS_RECEIVED: list[int] = []


def _raise_stopped(signum: int, frame: Any) -> None:
    _SIGNALS_RECEIVED.append(signum)
    raise _Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, 128+N on signal N)."""
    args = build_parser().parse_args(argv)
    scratch: list[Path] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # Without this `kill` (SIGTERM) would end Python without running the clean-up
        # below and in the cache; with it no half-built entry or temp folder is left.
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _raise_stopped)
    _SIGNALS_RECEIVED.clear()
    try:
        status = _run_command(args, scratch)
        if _SIGNALS_RECEIVED:  # the raise was swallowed on the way: stop as it would have
            raise _Stopped(_SIGNALS_RECEIVED[0])
        sys.stdout.flush()  # a closed pipe shows here, not at exit as an ignored exception
        return status
    except BrokenPipeError:
        # The reader went away (`workbench models | head -1`): like any Unix tool, stop
        # quietly; stdout goes to /dev/null so Python's flush at exit does not complain.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refused (permissions, a full disk, /proc...)
        print(
            f"workbench: error: {exc.strerror or exc}: {exc.filename or ''}. check the path, "
            "its permissions and the free space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as exc:
        print(
            "workbench: interrupted; finished variants are cached and a rerun resumes",
            file=sys.stderr,
        )
        return 128 + getattr(exc, "signum", signal.SIGINT)
    finally:
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())

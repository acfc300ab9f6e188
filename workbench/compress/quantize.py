"""Quantization of an exported ONNX file with ONNX Runtime's own tools.

Every scheme first runs ONNX Runtime's recommended pre-processing
(``quant_pre_process``: symbolic shape inference, ORT basic graph optimisation -- which
folds BatchNorm into Conv -- and ONNX shape inference). If that fails on a model, plain
ONNX shape inference is used instead and the report says so.

Schemes (dispatched through ``_SCHEMES``, keyed by ``QuantizeConfig.scheme``):

- ``int8``: ``quantize_static`` in QDQ format, calibrated on the given images.
- ``dynamic``: ``quantize_dynamic``; weights int8 ahead of time, activations (uint8)
  at run time. Conv becomes ``ConvInteger``, which ONNX Runtime's CPU provider runs
  slowly (the workbench warns about it elsewhere); ``Gemm`` (a torch ``Linear``) is
  rewritten by ORT as ``MatMul`` + ``Add`` and becomes ``MatMulInteger``.
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32
  inputs and outputs kept, so callers feed the same arrays.

ONNX Runtime settings for ``int8``, and the facts they rest on (ONNX Runtime docs, "Quantize
ONNX models", onnxruntime.ai/docs/performance/model-optimizations/quantization.html, and
the ``quantize_static`` docstring of onnxruntime 1.32):

- QDQ format: "S8S8 with QDQ is the default setting and balances performance and
  accuracy. It should be the first choice"; "S8S8 with QOperator will be slow on x86-64
  CPUs"; the CPU kernels are optimised for the QDQ representation since ORT 1.11.
- Signedness comes from the config. The docs page calls S8S8 the first choice; the
  ``quantize_static`` docstring recommends U8S8 for x86-64 (with or without VNNI) and
  S8S8 for Arm; U8U8 is the docs' fallback when U8S8 saturates. Measured here (ORT 1.32,
  Xeon with AVX-512 VNNI, 1 thread, batch 1, 32x32): resnet18 float 0.97 ms, S8S8 2.6 ms,
  U8S8 0.58 ms; mobilenet_v2 float 0.47 ms, S8S8 0.57 ms, U8S8 0.28 ms. With int8
  activations the x86 CPU provider fused only 9 of resnet18's 20 Convs into QLinearConv
  and none of its Adds; with uint8 activations it fused all of them (QLinearConv,
  QLinearAdd, QGemm). So on x86-64 choose ``activation_type="uint8"``.
- ``reduce_range=False``: 7-bit weights exist to avoid U8S8 saturation of VPMADDUBSW on
  AVX2/AVX-512 machines *without* VNNI; "this is not needed on machines supporting VNNI".
  The artifact must not depend on the machine that built it (the cache is keyed by the
  recipe), so the flag is fixed; the workbench flags int8 on CPUs without VNNI instead.
  ``QuantizeConfig.overflow_fix`` (default ``first_layer``, as NNCF's ``OverflowFix``)
  gives 7-bit weights (per-tensor ``reduce_range`` overrides) to the layers reading the
  model input only: raw inputs span the whole uint8 range there, so those sums are the
  likeliest to saturate. Later layers keep 8 bits.
- ``WeightSymmetric=True`` (ORT's default): int8 weights with zero point 0, the form
  the integer GEMM kernels take directly. ``ActivationSymmetric=False`` (ORT's default):
  asymmetric activations use the whole 8-bit range on post-ReLU tensors, and let the QDQ
  quantizer drop the Relu/Clip that the quantized range already implies
  (``QDQKeepRemovableActivations`` docs: removed "if activations are asymmetrically
  quantized").
- ``CalibMovingAverage=False``: MinMax keeps the true extremes over all calibration
  images; the moving average (constant 0.01) is meant for long calibration runs with
  outliers, and the config's ``percentile`` method is the outlier-robust choice here.
- ``CalibPercentile=99.999``: ORT's default, clipping the top 0.001% of |values|.
- Calibration is fed in batches of up to ``CALIBRATION_BATCH`` images when the model's
  batch dimension is dynamic (one ``session.run`` per batch rather than per image keeps
  a variant quick to build), else in batches of the model's fixed batch size.
  ``meanminmax`` feeds one image per run with ``CalibMovingAverage=True``: ORT then
  averages the per-run minima and maxima, NNCF's default range for per-tensor
  activations.

Opt-in int8 refinements (``QuantizeConfig``), measured on the three digits samples
(ORT 1.32, AVX-512 VNNI, 1 thread; test split, 540 images, one image = 0.185 point):
float 98.52 / 98.70 / 99.63% (cnn / mobilenetv2 / resnet18); minmax 98.33 / 98.52 /
99.63; meanminmax 98.15 / 98.70 / 99.63; percentile 98.15 / 98.70 / 99.63; entropy
98.33 / 98.52 / 99.63; minmax + bias correction 98.33 / 98.33 / 99.63. None is better
on all three, so ``minmax`` without bias correction stays the default. (All with 8-bit
first-layer weights; 7-bit first-layer weights, now the default: 98.33 / 98.89 / 99.63.)
Those were the samples as first trained, on the whole training part. Retrained without
the search's validation images: float 99.07 / 99.26 / 99.63%; the default 99.07 / 99.07
/ 99.63; bias correction, percentile and 8-bit first-layer weights the same as the
default; meanminmax 99.07 / 99.26 / 99.63; 7-bit weights in every layer 99.07 / 98.89 /
99.63: still none better on all three by more than one image.

- ``bias_correction``: per quantized Conv/Gemm, in graph order, the bias moves by the
  mean (per output channel, over the calibration images) of float output minus
  quantized output. One layer at a time, each measured after the layers before it.
- ``max_accuracy_drop``: greedy accuracy-aware int8 on held-out *training* images
  (``validation``): each weight layer's sensitivity is measured by keeping it alone
  in float; the most sensitive are kept in float until the drop is within the limit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from workbench.errors import WorkbenchError
from workbench.measure.artifact import sort_topologically
from workbench.recipe import QuantizeConfig

__all__ = ["CALIBRATION_BATCH", "INT8_EXTRA_OPTIONS", "QuantizeReport", "quantize"]

CALIBRATION_BATCH = 32  # images per calibration run when the batch dimension is dynamic

INT8_EXTRA_OPTIONS: dict[str, Any] = {
    "WeightSymmetric": True,
    "ActivationSymmetric": False,
    "CalibMovingAverage": False,
    "CalibPercentile": 99.999,
}

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Ops ORT's dynamic quantizer emits in place of float ones, and the glue around them.
_DYNAMIC_QUANT_OPS = {
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "QAttention",
    "DynamicQuantizeLSTM",
}
_DYNAMIC_GLUE = {"DynamicQuantizeLinear", "Cast", "Mul", "Add"}
# The layers that carry weights and most of the arithmetic: what "kept in float" lists.
_WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Attention"}


@dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize`` wrote, and how.

    ``quantized_ops`` counts, per op type, the nodes that now run quantized: for ``int8``
    the nodes fed only by DequantizeLinear (QDQ); for ``dynamic`` the integer ops ORT
    emitted (``ConvInteger``, ``MatMulInteger``, ...); for ``fp16`` the nodes computing in
    float16. ``float_nodes`` lists ``"name (OpType)"`` of nodes still computing in float32
    (for ``dynamic``: weight-carrying layers only, since its run-time glue is float).
    """

    scheme: str
    label: str
    quantized_ops: dict[str, int]
    float_nodes: tuple[str, ...]
    excluded_nodes: tuple[str, ...]  # node names keep_float left in float32
    preprocessing: str
    settings: dict[str, Any] = field(default_factory=dict)  # the ONNX Runtime settings used
    fallbacks: tuple[str, ...] = ()  # anything that did not go as planned, and what was done
    calibration_samples: int = 0
    seconds: float = 0.0  # wall-clock time of the whole step
    # bias_correction: per corrected layer, the largest |bias shift| applied; and skips
    bias_correction: dict[str, Any] = field(default_factory=dict)
    # max_accuracy_drop: held-out accuracy float/int8, layers kept in float, each
    # candidate layer's measured sensitivity (what keeping it in float alone bought)
    accuracy_aware: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("float_nodes", "excluded_nodes", "fallbacks"):
            d[k] = list(d[k])
        return d


@dataclass
class _Work:
    """What the scheme handlers share: the pre-processed model and the resolved keep_float."""

    src: Path
    pre: Path
    out: Path
    model: onnx.ModelProto  # the pre-processed model
    config: QuantizeConfig
    exclude_names: list[str]
    exclude_ops: list[str]
    fallbacks: list[str]
    validation: tuple[np.ndarray, np.ndarray] | None = None
    bias_report: dict[str, Any] = field(default_factory=dict)
    accuracy_report: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------- pre-processing


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0])


def _counted(lines: list[str]) -> list[str]:
    """``lines`` without repeats, in first-seen order; a repeated line says how often
    (ONNX Runtime's quantizer logs the same line once per node: 23 of 25 on ConvNeXt)."""
    counts = Counter(lines)
    return [line if counts[line] == 1 else f"{line} (×{counts[line]})" for line in counts]


@contextlib.contextmanager
def _quantizer_warnings(fallbacks: list[str]):
    """Keep ONNX Runtime quantizer warnings (logged on the root logger) in the report.

    They would otherwise reach stderr in the middle of a CLI run or a notebook; in the
    report they reach the Result's warnings. Only this thread's records are taken.
    """
    thread = threading.get_ident()

    def take(record: logging.LogRecord) -> bool:
        if record.thread == thread and record.levelno >= logging.WARNING:
            fallbacks.append(f"ONNX Runtime's quantizer: {record.getMessage().splitlines()[0]}")
            return False
        return True

    root = logging.getLogger()
    root.addFilter(take)
    try:
        yield
    finally:
        root.removeFilter(take)


def _preprocess(src: Path, dst: Path, fallbacks: list[str]) -> str:
    """ORT's quant_pre_process into ``dst``; plain ONNX shape inference if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # quant_pre_process logs (not raises) a failed ORT optimisation and carries on.
    collector = _ErrorCollector()
    logger = logging.getLogger("onnxruntime.quantization.shape_inference")
    logger.addHandler(collector)
    try:
        quant_pre_process(str(src), str(dst))
    except Exception as err:
        onnx.shape_inference.infer_shapes_path(str(src), str(dst))
        fallbacks.append(
            f"ONNX Runtime pre-processing failed ({type(err).__name__}: {err}); "
            "used plain ONNX shape inference instead"
        )
        return "onnx shape inference (fallback)"
    finally:
        logger.removeHandler(collector)
    if collector.messages:
        fallbacks.append(
            "ONNX Runtime graph optimisation failed during pre-processing "
            f"({collector.messages[0]}); shape inference only"
        )
        return "symbolic + onnx shape inference (ORT optimisation failed)"
    return (
        "quant_pre_process: symbolic shape inference, ORT basic optimisation, onnx shape inference"
    )


# --------------------------------------------------------------------------- keep_float


def _resolve_keep_float(
    entries: Sequence[str],
    src_model: onnx.ModelProto,
    pre_model: onnx.ModelProto,
    fallbacks: list[str],
) -> tuple[list[str], list[str]]:
    """Split keep_float into node names and op types of the pre-processed model."""
    pre_names = {n.name for n in pre_model.graph.node if n.name}
    pre_ops = {n.op_type for n in pre_model.graph.node}
    src_names = {n.name for n in src_model.graph.node if n.name}
    src_ops = {n.op_type for n in src_model.graph.node}
    names: list[str] = []
    ops: list[str] = []
    for entry in entries:
        if entry in pre_names:
            names.append(entry)
        if entry in pre_ops:
            ops.append(entry)
        if entry in pre_names or entry in pre_ops:
            continue
        if entry in src_names or entry in src_ops:
            # e.g. a BatchNormalization folded into its Conv: nothing left to keep in float.
            fallbacks.append(
                f"keep_float {entry!r} was folded away by pre-processing; nothing to keep"
            )
            continue
        listed = sorted(src_names)
        shown = ", ".join(listed[:30]) + (
            f", ... ({len(listed)} in all)" if len(listed) > 30 else ""
        )
        raise WorkbenchError(
            f"keep_float entry {entry!r} matches no node name or op type of the model",
            f"use an op type ({', '.join(sorted(src_ops))}) or a node name ({shown})",
        )
    return names, ops


# ------------------------------------------------------------------------- calibration


def _input_info(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise WorkbenchError(
            f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})",
            "quantize a model with one image input",
        )
    return inputs[0]


def _dims(info: onnx.ValueInfoProto) -> list[int | None]:
    """Each dimension's fixed size, or None where it is symbolic or unknown."""
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in info.type.tensor_type.shape.dim
    ]


def _check_calibration(calibration: Any, info: onnx.ValueInfoProto, n_max: int) -> np.ndarray:
    fix = (
        "pass training images of the model's input shape (N, C, H, W) as float32, e.g. 128 of them"
    )
    if calibration is None or len(calibration) == 0:
        raise WorkbenchError("calibration needs at least one sample", fix)
    data = np.asarray(calibration)
    dims = _dims(info)
    if data.ndim != len(dims):
        raise WorkbenchError(
            f"calibration data has shape {data.shape} but the model input {info.name!r} "
            f"has {len(dims)} dimensions",
            fix,
        )
    for axis, (want, got) in enumerate(zip(dims[1:], data.shape[1:], strict=True), start=1):
        if want is not None and want != got:
            expected = tuple(
                "N" if i == 0 else (d if d is not None else "?") for i, d in enumerate(dims)
            )
            raise WorkbenchError(
                f"calibration data has shape {data.shape} (dimension {axis} is {got}) "
                f"but the model expects {expected}",
                fix,
            )
    if not np.issubdtype(data.dtype, np.number):
        raise WorkbenchError(f"calibration data has dtype {data.dtype}, not numbers", fix)
    data = np.ascontiguousarray(data[:n_max], dtype=np.float32)
    if not np.isfinite(data).all():
        raise WorkbenchError(
            "calibration data contains NaN or infinite values", "pass finite, preprocessed images"
        )
    return data


def _check_validation(validation: Any, info: onnx.ValueInfoProto) -> tuple[np.ndarray, np.ndarray]:
    fix = "pass (images, labels) held out from the training split, e.g. a few hundred"
    try:
        x, y = validation
    except (TypeError, ValueError):
        raise WorkbenchError("validation is not an (images, labels) pair", fix) from None
    x = _check_calibration(x, info, len(x) if x is not None else 0)
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise WorkbenchError(
            f"validation labels have shape {y.shape} and dtype {y.dtype} for {len(x)} images",
            fix,
        )
    return x, y


def _calibration_reader(name: str, data: np.ndarray, batch: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayCalibrationReader(CalibrationDataReader):
        """Feeds ``data`` in batches of ``batch`` images under the input name."""

        def __init__(self) -> None:
            self._starts = list(range(0, len(data) - batch + 1, batch))
            self._pos = 0

        def get_next(self) -> dict | None:
            if self._pos >= len(self._starts):
                return None
            s = self._starts[self._pos]
            self._pos += 1
            return {name: data[s : s + batch]}

        def __len__(self) -> int:
            return len(self._starts)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._starts = self._starts[start_index:end_index]
            self._pos = 0

    return ArrayCalibrationReader()


# --------------------------------------------------------------------------- summaries


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a summary must not fail the step; unknown types count as float
        pass
    types: dict[str, int] = {}
    g = model.graph
    for vi in [*g.input, *g.output, *g.value_info]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def _label(node: onnx.NodeProto) -> str:
    return f"{node.name or '<unnamed>'} ({node.op_type})"


def _summarise_qdq(model: onnx.ModelProto) -> tuple[Counter, list[str]]:
    producer = {o: n for n in model.graph.node for o in n.output}
    types = _elem_types(model)
    quantized: Counter = Counter()
    floats = []
    for node in model.graph.node:
        if node.op_type in _QDQ_OPS:
            continue
        from_dq = [
            i for i in node.input if i in producer and producer[i].op_type == "DequantizeLinear"
        ]
        other_float = [
            i
            for i in node.input
            if i and i not in from_dq and types.get(i, TensorProto.FLOAT) == TensorProto.FLOAT
        ]
        if from_dq and not other_float:
            quantized[node.op_type] += 1
        elif other_float:
            floats.append(_label(node))
    return quantized, floats


def _summarise_dynamic(model: onnx.ModelProto) -> tuple[Counter, list[str]]:
    quantized = Counter(n.op_type for n in model.graph.node if n.op_type in _DYNAMIC_QUANT_OPS)
    floats = [_label(n) for n in model.graph.node if n.op_type in _WEIGHT_OPS]
    return quantized, floats


def _summarise_fp16(model: onnx.ModelProto) -> tuple[Counter, list[str]]:
    types = _elem_types(model)
    quantized: Counter = Counter()
    floats = []
    for node in model.graph.node:
        if node.op_type == "Cast":
            continue
        seen = {types.get(t) for t in [*node.input, *node.output] if t}
        if TensorProto.FLOAT16 in seen and TensorProto.FLOAT not in seen:
            quantized[node.op_type] += 1
        elif TensorProto.FLOAT in seen:
            floats.append(_label(node))
    return quantized, floats


# ----------------------------------------------------------------------- scheme handlers


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _excluded(work: _Work) -> list[str]:
    by_op = [n.name for n in work.model.graph.node if n.op_type in work.exclude_ops and n.name]
    return sorted(set(work.exclude_names) | set(by_op))


def _calibration_batch(info: onnx.ValueInfoProto, data: np.ndarray) -> int:
    fixed_batch = _dims(info)[0]
    batch = fixed_batch if fixed_batch is not None else min(CALIBRATION_BATCH, len(data))
    if len(data) < batch:
        raise WorkbenchError(
            f"the model's batch dimension is fixed at {batch} but only {len(data)} "
            "calibration samples were given",
            f"pass at least {batch} calibration samples, or export the model with a dynamic batch",
        )
    return batch


def _static(work: _Work, data: np.ndarray, batch: int, exclude: list[str]) -> dict:
    """One quantize_static run of the pre-processed model into ``work.out``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    info = _input_info(work.model)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "meanminmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[work.config.calibration]
    extra = dict(INT8_EXTRA_OPTIONS)
    seven_bit = _overflow_fix_overrides(
        work.model, work.config.overflow_fix, exclude, work.config.per_channel
    )
    if seven_bit:
        extra["TensorQuantOverrides"] = seven_bit
    calibration_batch = batch
    if work.config.calibration == "meanminmax":
        # ORT's MinMax calibrator with CalibMovingAverage averages the per-run minima and
        # maxima of one collection pass: fed one image per run (when the batch dimension
        # allows), that is the mean over images of each image's min and max.
        extra["CalibMovingAverage"] = True
        if _dims(info)[0] is None:
            calibration_batch = 1
    # The histogram calibrators print progress to stdout; an engine call stays quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(work.pre),
            str(work.out),
            _calibration_reader(info.name, data, calibration_batch),
            quant_format=QuantFormat.QDQ,
            per_channel=work.config.per_channel,
            reduce_range=False,
            activation_type=_quant_type(work.config.activation_type),
            weight_type=_quant_type(work.config.weight_type),
            nodes_to_exclude=exclude,
            calibrate_method=method,
            extra_options=extra,
        )
    if work.config.bias_correction:
        work.bias_report = _correct_biases(work, data, batch)
    return {
        "quant_format": "QDQ",
        "activation_type": work.config.activation_type,
        "weight_type": work.config.weight_type,
        "per_channel": work.config.per_channel,
        "reduce_range": False,
        "calibrate_method": method.name,
        "calibration_batch": calibration_batch,
        "calibration_samples": len(data),
        "extra_options": extra,
        "bias_correction": work.config.bias_correction,
        "overflow_fix": work.config.overflow_fix,
        "seven_bit_weights": sorted(seven_bit),
    }


def _overflow_fix_overrides(
    model: onnx.ModelProto, fix: str, exclude: list[str], per_channel: bool
) -> dict[str, list[dict]]:
    """ORT TensorQuantOverrides giving 7-bit weights where ``fix`` (OVERFLOW_FIXES) says.

    ``first_layer``: the Conv/Gemm/MatMul layers that read the model input directly,
    where raw inputs span the uint8 range and meet large weights (NNCF's default).
    A per-channel weight needs its channel ``axis`` in the override, else ORT quantizes
    it per tensor.
    """
    if fix == "none":
        return {}
    inits = {i.name for i in model.graph.initializer}
    graph_input = _input_info(model).name
    overrides: dict[str, list[dict]] = {}
    for n in model.graph.node:
        if (
            n.op_type not in ("Conv", "Gemm", "MatMul")
            or n.name in exclude
            or len(n.input) < 2
            or n.input[1] not in inits
            or (fix == "first_layer" and n.input[0] != graph_input)
        ):
            continue
        override: dict[str, Any] = {"reduce_range": True}
        if per_channel:
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            override["axis"] = {"Conv": 0, "Gemm": 0 if trans_b else 1, "MatMul": 1}[n.op_type]
        overrides[n.input[1]] = [override]
    return overrides


def _int8(work: _Work, calibration: np.ndarray | None) -> tuple[dict, Callable]:
    info = _input_info(work.model)
    data = _check_calibration(calibration, info, work.config.calibration_samples)
    batch = _calibration_batch(info, data)
    used = len(data) - len(data) % batch
    if used < len(data):
        work.fallbacks.append(
            f"dropped {len(data) - used} calibration samples to fill whole batches of {batch}"
        )
    if work.config.max_accuracy_drop is None:
        settings = _static(work, data[:used], batch, _excluded(work))
    else:
        settings = _accuracy_aware(work, data[:used], batch)
        settings["max_accuracy_drop"] = work.config.max_accuracy_drop
    return settings, _summarise_qdq


# ------------------------------------------------------------ bias correction, sensitivity


def _session(model: onnx.ModelProto, outputs: Sequence[str] = ()) -> Any:
    """A 1-thread CPU session of ``model`` that also returns the tensors ``outputs``."""
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in model.graph.output}
    for name in outputs:
        if name not in have:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _batches(data: np.ndarray, batch: int):
    """``data`` in runs of ``batch`` rows; the last run padded (by repeats) to a full batch."""
    for s in range(0, len(data), batch):
        chunk = data[s : s + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        yield chunk, n


def _channel_means(
    model: onnx.ModelProto, names: list[str], data: np.ndarray, batch: int
) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) mean of each tensor ``names`` over ``data``."""
    sess = _session(model, names)
    feed = sess.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for chunk, n in _batches(data, batch):
        outs = sess.run(names, {feed: chunk})
        for name, value in zip(names, outs, strict=True):
            value = np.asarray(value, dtype=np.float64)[:n]
            axes = tuple(a for a in range(value.ndim) if a != 1)
            sums[name] = sums.get(name, 0) + value.sum(axis=axes)
            counts[name] = counts.get(name, 0) + value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in names}


def _logits(model: onnx.ModelProto, data: np.ndarray, batch: int) -> np.ndarray:
    sess = _session(model)
    feed = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {feed: c})[0][:n] for c, n in _batches(data, batch)])


def _correct_biases(work: _Work, data: np.ndarray, batch: int) -> dict[str, Any]:
    """Shift each quantized Conv/Gemm bias in ``work.out`` by its output's mean error.

    Per output channel, ``bias += mean(float output) - mean(quantized output)`` over the
    calibration images (empirical bias correction, Nagel et al. 2019, "Data-Free
    Quantization", section 4.2 -- here with data). The quantized output is the layer's
    own float-computed output in the QDQ model (before its QuantizeLinear), so the
    shift covers the weight and input rounding of that layer and everything upstream.
    An int32 bias moves by whole steps of its scale.
    """
    qmodel = onnx.load(str(work.out))
    inits = {i.name: i for i in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    float_nodes = {n.name: n for n in work.model.graph.node if n.name}
    layers = []  # (name, quantized output, float output, bias initializer, scale or None)
    skipped: list[str] = []
    for node in qmodel.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.name not in float_nodes:
            continue
        weight = node.input[1] if len(node.input) > 1 else ""
        if producer.get(weight) is None or producer[weight].op_type != "DequantizeLinear":
            continue  # kept in float
        if len(node.input) < 3 or not node.input[2]:
            skipped.append(f"{node.name}: no bias")
            continue
        bias = node.input[2]
        dq = producer.get(bias)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            scale = onnx.numpy_helper.to_array(inits[dq.input[1]]).astype(np.float64)
            layers.append(
                (node.name, node.output[0], float_nodes[node.name].output[0], dq.input[0], scale)
            )
        elif bias in inits:
            layers.append((node.name, node.output[0], float_nodes[node.name].output[0], bias, None))
        else:
            skipped.append(f"{node.name}: bias is computed, not a constant")
    if not layers:
        return {"layers": {}, "skipped": skipped}
    float_means = _channel_means(work.model, [f for _, _, f, _, _ in layers], data, batch)
    shifts: dict[str, float] = {}
    # One layer at a time, in graph order: each layer is measured with every layer
    # before it already corrected. Correcting all layers from one measurement
    # over-corrects, since a layer's error then also counts upstream errors that the
    # upstream corrections remove (measured on the first digits-mobilenetv2 weights: 98.70% float, 95.19%
    # corrected all at once, 98.33% for one pass).
    for name, q_out, f_out, bias_name, scale in layers:
        q_mean = _channel_means(qmodel, [q_out], data, batch)[q_out]
        delta = float_means[f_out] - q_mean
        init = next(i for i in qmodel.graph.initializer if i.name == bias_name)
        value = onnx.numpy_helper.to_array(init)
        flat = value.reshape(-1)
        if flat.size != delta.size:
            skipped.append(f"{name}: bias of {flat.size} values for {delta.size} channels")
            continue
        if scale is None:
            new = (flat.astype(np.float64) + delta).astype(value.dtype)
        else:
            info = np.iinfo(value.dtype)
            steps = np.rint(delta / np.broadcast_to(scale.reshape(-1), delta.shape))
            new = np.clip(flat.astype(np.int64) + steps.astype(np.int64), info.min, info.max)
            new = new.astype(value.dtype)
        init.CopyFrom(onnx.numpy_helper.from_array(new.reshape(value.shape), bias_name))
        shifts[name] = float(np.abs(delta).max())
    onnx.save(qmodel, str(work.out))
    return {
        "layers": {k: round(v, 6) for k, v in shifts.items()},
        "skipped": sorted(set(skipped)),
    }


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean() * 100.0)


def _accuracy_aware(work: _Work, data: np.ndarray, batch: int) -> dict:
    """int8 with the fewest, most sensitive weight layers kept in float (greedy).

    Sensitivity of a layer: quantize everything else, keep it alone in float, and measure
    on the held-out images how much that reduces the mean squared error of the logits
    against the float model (and the accuracy it gains). Layers are then kept in float in
    that order, one more at a time, until the held-out accuracy is within
    ``max_accuracy_drop`` points of float. Everything is measured on ``work.validation``
    (a held-out part of the training split); the test split is never read here.
    """
    if work.validation is None:
        raise WorkbenchError(
            "max_accuracy_drop needs labelled held-out images to measure accuracy on",
            "load the model with a labelled task (e.g. --task digits), or leave "
            "max_accuracy_drop unset",
        )
    x_val, y_val = work.validation
    drop_allowed = float(work.config.max_accuracy_drop)
    base_exclude = _excluded(work)
    float_logits = _logits(work.model, x_val, batch)
    float_acc = _accuracy(float_logits, y_val)

    def build(exclude: list[str]) -> tuple[float, float, dict]:
        settings = _static(work, data, batch, sorted(set(exclude)))
        logits = _logits(onnx.load(str(work.out)), x_val, batch)
        error = float(np.mean((logits - float_logits) ** 2))
        return _accuracy(logits, y_val), error, settings

    int8_acc, int8_error, settings = build(base_exclude)
    report: dict[str, Any] = {
        "held_out_images": len(y_val),
        "held_out_source": "training split, images not used for calibration",
        "float_accuracy": round(float_acc, 4),
        "all_int8_accuracy": round(int8_acc, 4),
        "max_accuracy_drop": drop_allowed,
        "kept_float": [],
        "sensitivity": [],
    }
    final_acc = int8_acc
    if float_acc - int8_acc > drop_allowed:
        candidates = [
            n.name
            for n in work.model.graph.node
            if n.op_type in _WEIGHT_OPS and n.name and n.name not in base_exclude
        ]
        ranking = []
        for name in candidates:
            acc, error, _ = build([*base_exclude, name])
            ranking.append(
                {
                    "layer": name,
                    "accuracy_gain_points": round(acc - int8_acc, 4),
                    "logit_error_reduction": round(1.0 - error / int8_error, 4)
                    if int8_error > 0
                    else 0.0,
                }
            )
        ranking.sort(key=lambda r: (-r["logit_error_reduction"], -r["accuracy_gain_points"]))
        report["sensitivity"] = ranking
        kept: list[str] = []
        for r in ranking:
            kept.append(r["layer"])
            final_acc, _, settings = build([*base_exclude, *kept])
            if float_acc - final_acc <= drop_allowed:
                break
        report["kept_float"] = kept
        if float_acc - final_acc > drop_allowed:
            work.fallbacks.append(
                f"max_accuracy_drop {drop_allowed:g}: even with every weight layer in float the "
                f"held-out accuracy is {final_acc:.2f}% vs float {float_acc:.2f}%"
            )
    report["final_accuracy"] = round(final_acc, 4)
    report["final_drop_points"] = round(float_acc - final_acc, 4)
    work.accuracy_report = report
    work.exclude_names = sorted(set(work.exclude_names) | set(report["kept_float"]))
    return settings


def _dynamic(work: _Work, calibration: np.ndarray | None) -> tuple[dict, Callable]:
    from onnxruntime.quantization import quantize_dynamic

    keep = _excluded(work)
    # quantize_dynamic rewrites each Gemm as MatMul (named "<gemm>_MatMul") + Add before
    # quantizing, so a Gemm kept in float must be excluded under its new name too.
    gemms = {n.name for n in work.model.graph.node if n.op_type == "Gemm"}
    keep += [f"{name}_MatMul" for name in keep if name in gemms]
    quantize_dynamic(
        str(work.pre),
        str(work.out),
        per_channel=work.config.per_channel,
        reduce_range=False,
        weight_type=_quant_type(work.config.weight_type),
        nodes_to_exclude=keep,
        extra_options={"WeightSymmetric": True},
    )
    settings = {
        "weight_type": work.config.weight_type,
        "per_channel": work.config.per_channel,
        "reduce_range": False,
        "activations": "uint8, quantized at run time (DynamicQuantizeLinear)",
    }
    return settings, _summarise_dynamic


def _fp16(work: _Work, calibration: np.ndarray | None) -> tuple[dict, Callable]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    op_block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(work.exclude_ops))
    model = convert_float_to_float16(
        onnx.load(str(work.pre)),
        keep_io_types=True,
        op_block_list=op_block,
        node_block_list=list(work.exclude_names),
    )
    # The converter appends its Cast nodes after the nodes that read them.
    sort_topologically(model.graph)
    onnx.save(model, str(work.out))
    settings = {
        "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True,
        "op_block_list_added": sorted(work.exclude_ops),
        "node_block_list": sorted(work.exclude_names),
    }
    return settings, _summarise_fp16


_SCHEMES: dict[str, Callable[[_Work, np.ndarray | None], tuple[dict, Callable]]] = {
    "int8": _int8,
    "dynamic": _dynamic,
    "fp16": _fp16,
}


# ------------------------------------------------------------------------------ public


def _load_source(src: Path) -> onnx.ModelProto:
    if not src.is_file():
        raise WorkbenchError(f"no ONNX file at {src}", "check the path, or export the model first")
    try:
        model = onnx.load(str(src))
        onnx.checker.check_model(model)
    except Exception as err:
        raise WorkbenchError(
            f"{src} is not a valid ONNX model ({type(err).__name__}: {err})",
            "re-export the model; the file may be truncated or not an ONNX file",
        ) from err
    return model


def _check_runs(path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize(
    src: str | Path,
    dst: str | Path,
    config: QuantizeConfig,
    calibration: np.ndarray | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> QuantizeReport:
    """Quantize the ONNX file ``src`` as ``config`` says and write the result to ``dst``.

    ``dst`` is written atomically (temp file beside it, then ``os.replace``); on any
    failure nothing is left behind and an existing ``dst`` is untouched. The result is
    checked to load in an ONNX Runtime CPU session before it is moved into place.

    Args:
        src: a float32 ONNX model with one input.
        dst: where to write the quantized model.
        config: scheme (int8/dynamic/fp16), per-channel, calibration method, signedness,
            keep_float (node names or op types left in float32).
        calibration: int8 only: float32 images shaped like the model input, (N, C, H, W);
            the first ``config.calibration_samples`` are used.
        validation: ``max_accuracy_drop`` only: (images, integer labels) held out from
            the training split (never the test split), disjoint from ``calibration``;
            the accuracy drop is measured on these.

    Raises:
        WorkbenchError: a missing or invalid ``src``, empty or misshapen calibration data,
            a keep_float entry that names nothing in the model, or a model ONNX Runtime
            cannot quantize.
    """
    started = time.perf_counter()
    if not isinstance(config, QuantizeConfig):
        raise WorkbenchError(
            f"quantize needs a QuantizeConfig, got {type(config).__name__}",
            "pass QuantizeConfig(...)",
        )
    src, dst = Path(src), Path(dst)
    src_model = _load_source(src)
    if config.scheme == "int8":  # fail fast, before any work, on the commonest mistake
        _check_calibration(calibration, _input_info(src_model), config.calibration_samples)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        fallbacks: list[str] = []
        pre = tmp / "preprocessed.onnx"
        preprocessing = _preprocess(src, pre, fallbacks)
        pre_model = onnx.load(str(pre))
        names, ops = _resolve_keep_float(config.keep_float, src_model, pre_model, fallbacks)
        work = _Work(src, pre, tmp / "quantized.onnx", pre_model, config, names, ops, fallbacks)
        if config.max_accuracy_drop is not None and validation is not None:
            work.validation = _check_validation(validation, _input_info(pre_model))
        try:
            with _quantizer_warnings(fallbacks):
                settings, summarise = _SCHEMES[config.scheme](work, calibration)
            _check_runs(work.out)
        except WorkbenchError:
            raise
        except Exception as err:
            raise WorkbenchError(
                f"ONNX Runtime could not apply {config.label()} to {src.name} "
                f"({type(err).__name__}: {err})",
                "keep the failing node or op type in float with keep_float, "
                "or choose another scheme",
            ) from err
        result = onnx.load(str(work.out))
        quantized, floats = summarise(result)
        excluded = _excluded(work)
        os.replace(work.out, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return QuantizeReport(
        scheme=config.scheme,
        label=config.label(),
        quantized_ops=dict(sorted(quantized.items())),
        float_nodes=tuple(floats),
        excluded_nodes=tuple(excluded),
        preprocessing=preprocessing,
        settings=settings,
        fallbacks=tuple(_counted(fallbacks)),
        calibration_samples=int(settings.get("calibration_samples", 0)),
        seconds=time.perf_counter() - started,
        bias_correction=work.bias_report,
        accuracy_aware=work.accuracy_report,
    )

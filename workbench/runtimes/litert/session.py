"""LiteRT interpreters, batch-1 prediction and latency of one inference of a ``.tflite`` file.

Every interpreter the workbench runs is made by :func:`make_interpreter`, so latency,
memory and accuracy all measure the same configuration: ``ai_edge_litert``'s
``Interpreter`` with its default op resolver, which applies the XNNPACK delegate to
the operators it supports, exactly as a user who writes
``Interpreter(model_path=..., num_threads=N)`` gets it; ``num_threads`` is fixed and
recorded. The delegation actually applied (how many XNNPACK partitions, which
operators stayed on LiteRT's own kernels) is read back from the interpreter.

LiteRT 2.3's Python API has no per-operator profiler (the interpreter wrapper exposes
no profiler, and ``CompiledModel`` none either), so :func:`operator_profile` says so
instead of guessing: per-operator time is not available for this runtime.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from workbench.errors import WorkbenchError
from workbench.measure.timing import gc_paused, latency_stats, time_runs
from workbench.results import LatencyStats
from workbench.runtimes.litert.flatbuffer import read_tflite

__all__ = [
    "Delegation",
    "delegation",
    "delegation_of",
    "dequantize",
    "litert_version",
    "make_interpreter",
    "measure_latency",
    "operator_profile",
    "predict",
    "quantize",
    "versions",
]


def litert_version() -> str:
    """The installed ``ai-edge-litert`` version, for the environment record and cache key."""
    import ai_edge_litert

    return str(ai_edge_litert.__version__)


# The packages a LiteRT file and its measurement depend on.
LITERT_PACKAGES = (
    "ai-edge-litert",
    ("tensorflow", ("tensorflow-cpu", "tensorflow")),  # the converter
    "keras",
)


def versions() -> dict[str, str]:
    """Library versions that decide a LiteRT artifact and its measurement (cache key,
    environment record), read from package metadata without importing TensorFlow."""
    from workbench.runtimes import package_versions

    return package_versions(LITERT_PACKAGES)


def _check_threads(threads: int) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise WorkbenchError(
            f"threads must be a whole number >= 1, got {threads!r}", "use threads=1 or more"
        )


def make_interpreter(path: str | os.PathLike, threads: int = 1):
    """A LiteRT interpreter for the ``.tflite`` at ``path``, tensors allocated.

    XNNPACK is on as LiteRT applies it by default; ``threads`` is passed as
    ``num_threads``.

    Raises:
        WorkbenchError: missing, truncated or corrupt file, or an operator LiteRT's
            built-in resolver cannot run.
    """
    _check_threads(threads)
    model = read_tflite(path)  # clear errors for a bad file, before the C++ side sees it
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(model.path), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        detail = next((s.strip() for s in str(e).splitlines() if s.strip()), "no detail")
        if "valid Flatbuffer" in detail:
            raise WorkbenchError(
                f"{model.path.name} is a truncated or corrupt TFLite model ({detail})",
                "re-export the model; the file may have been cut short or altered",
            ) from e
        raise WorkbenchError(
            f"LiteRT {litert_version()} cannot run {model.path.name}: {detail[:300]}",
            "convert with TFLite builtin operators only (no Select TF ops or custom ops)",
        ) from e
    return interpreter


# The op name the interpreter gives a node that a delegate put in place of a partition.
_DELEGATE_OP = "DELEGATE"
# The delegate ai_edge_litert's default op resolver applies (BuiltinOpResolver: the
# interpreter wrapper's kBuiltinOpResolver, whose lazy delegate provider is XNNPACK).
DEFAULT_DELEGATE = "XNNPACK"


@dataclass(frozen=True)
class Delegation:
    """How LiteRT ran the graph: the XNNPACK partitions, the nodes they took, and the
    operators left on LiteRT's own kernels.

    Read back from the allocated interpreter: its node list holds the model's nodes,
    then one ``DELEGATE`` node per partition XNNPACK took. The Python API exposes neither
    the execution plan nor a delegate's node list, so the nodes a partition took are
    found from the graph: walking back from the ``DELEGATE`` node's outputs through the
    nodes that produce them, stopping at its inputs (a node whose output nothing reads
    would be missed; converted models have none).
    """

    xnnpack_partitions: int  # DELEGATE nodes (0: XNNPACK not applied)
    nodes: int  # operators in the model
    op_counts: dict[str, int]  # operator name -> nodes, before delegation
    delegated_nodes: int = 0  # of ``nodes``, those inside an XNNPACK partition
    undelegated_ops: dict[str, int] = field(default_factory=dict)  # left on LiteRT's kernels
    delegate: str = DEFAULT_DELEGATE

    @property
    def applied(self) -> bool:
        """Whether XNNPACK took any part of the graph."""
        return self.xnnpack_partitions > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "applied": self.applied}


def delegation(interpreter) -> Delegation:
    """Read back what the default delegate did to an allocated interpreter."""
    ops = interpreter._get_ops_details()
    partitions = [d for d in ops if d["op_name"] == _DELEGATE_OP]
    original = [d for d in ops if d["op_name"] != _DELEGATE_OP]
    producer = {int(t): d["index"] for d in original for t in d["outputs"]}
    by_index = {d["index"]: d for d in original}
    taken: set[int] = set()
    for part in partitions:
        stop = {int(t) for t in part["inputs"]}
        todo, seen = [int(t) for t in part["outputs"]], set()
        while todo:
            tensor = todo.pop()
            if tensor in stop or tensor in seen or tensor < 0:
                continue
            seen.add(tensor)
            node = producer.get(tensor)
            if node is None or node in taken:
                continue
            taken.add(node)
            todo.extend(int(t) for t in by_index[node]["inputs"])
    left = Counter(d["op_name"] for d in original if d["index"] not in taken)
    return Delegation(
        xnnpack_partitions=len(partitions),
        nodes=len(original),
        op_counts=dict(Counter(d["op_name"] for d in original)),
        delegated_nodes=len(taken),
        undelegated_ops=dict(left),
    )


def delegation_of(path: str | os.PathLike, threads: int = 1) -> Delegation:
    """The delegation LiteRT applies to the ``.tflite`` at ``path`` with ``threads``, as
    every interpreter the workbench makes gets it (:func:`make_interpreter`)."""
    return delegation(make_interpreter(path, threads))


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Real values -> integers of ``dtype``: ``round(x / scale) + zero_point``, clipped."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integers -> float32 real values: ``scale * (q - zero_point)``."""
    return ((np.asarray(q, dtype=np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(
        np.float32
    )


def _quant(detail: dict) -> tuple[float, int] | None:
    scale, zero_point = detail["quantization"]
    return (float(scale), int(zero_point)) if scale else None


def _check_shape(expected: np.ndarray, got: tuple[int, ...], name: str) -> None:
    if tuple(int(d) for d in expected[1:]) != tuple(got[1:]):
        raise WorkbenchError(
            f"the model's input {name!r} expects shape {[int(d) for d in expected]} per batch "
            f"of 1 but got rows of shape {list(got[1:])}",
            "pass inputs in the model's layout (a converted Keras model takes NHWC)",
        )


def predict(
    path: str | os.PathLike, inputs: np.ndarray, *, threads: int = 1, raw: bool = False
) -> np.ndarray:
    """The first output for every row of ``inputs``, run one row at a time (batch 1).

    Float ``inputs`` are quantized for an integer input with the input's own scale and
    zero-point, and integer outputs are dequantized to float32 (unless ``raw``), so an
    int8 model's outputs compare with a float model's.
    """
    interpreter = make_interpreter(path, threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    x = np.asarray(inputs)
    _check_shape(inp["shape"], x.shape, inp["name"])
    in_q, out_q = _quant(inp), _quant(out)
    if np.issubdtype(inp["dtype"], np.integer) and not np.issubdtype(x.dtype, np.integer):
        if in_q is None:
            raise WorkbenchError(
                f"the model's input {inp['name']!r} is {np.dtype(inp['dtype']).name} without "
                "quantization parameters, so float inputs cannot be converted",
                "pass integer inputs, or convert the model with a float or int8 input",
            )
        x = quantize(x, *in_q, inp["dtype"])
    x = x.astype(inp["dtype"], copy=False)
    rows = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].copy())
    y = np.stack(rows) if rows else np.zeros((0, *out["shape"][1:]), out["dtype"])
    if not raw and out_q is not None and np.issubdtype(out["dtype"], np.integer):
        return dequantize(y, *out_q)
    return y


def _random_input(detail: dict, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


def measure_latency(
    path: str | os.PathLike,
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 0.5,
    max_runs: int = 5000,
) -> LatencyStats:
    """Wall-clock latency of one inference (batch 1) of the ``.tflite`` at ``path`` in LiteRT.

    The same procedure and statistics as the ONNX Runtime measurement
    (:func:`workbench.measure.measure_latency`): ``warmup`` untimed runs, then runs timed
    one by one with ``perf_counter_ns`` until ``min_runs`` runs and ``min_seconds``
    seconds are reached (at most ``max_runs``), garbage collector paused. The timed call
    is ``set_tensor`` + ``invoke``, as an application feeds a new input each time.
    """
    if warmup < 0 or min_runs < 1 or max_runs < min_runs or min_seconds < 0:
        raise WorkbenchError(
            f"invalid run counts (warmup={warmup}, min_runs={min_runs}, max_runs={max_runs}, "
            f"min_seconds={min_seconds})",
            "use warmup >= 0, 1 <= min_runs <= max_runs and min_seconds >= 0",
        )
    interpreter = make_interpreter(path, threads)
    inp = interpreter.get_input_details()[0]
    feed = _random_input(inp)
    index = inp["index"]
    set_tensor, invoke = interpreter.set_tensor, interpreter.invoke
    for _ in range(warmup):
        set_tensor(index, feed)
        invoke()

    def run() -> None:
        set_tensor(index, feed)
        invoke()

    with gc_paused():
        ms = time_runs(run, min_runs=min_runs, min_seconds=min_seconds, max_runs=max_runs)
    return latency_stats(ms, warmup, threads)


def operator_profile(path: str | os.PathLike, threads: int = 1) -> None:
    """Per-operator time in LiteRT: not offered by LiteRT's Python API, so always raises.

    Raises:
        WorkbenchError: always, naming the reason and what is available instead.
    """
    make_interpreter(path, threads)  # a bad file still gets its own, more useful error
    raise WorkbenchError(
        f"LiteRT {litert_version()}'s Python API offers no per-operator profiler, so "
        "per-operator time is not measured for .tflite files",
        "see the operator counts and MACs in graph_stats, or profile the same model's ONNX "
        "export in ONNX Runtime",
    )


def input_shape(path: str | os.PathLike) -> Sequence[int]:
    """The first input's concrete shape (batch 1) as LiteRT allocates it."""
    return [int(d) for d in make_interpreter(path).get_input_details()[0]["shape"]]

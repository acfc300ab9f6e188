"""ONNX Runtime sessions, batched prediction and latency of one inference.

Every session the workbench runs is made by :func:`make_session`, so latency, memory,
the operator profile and accuracy all measure the same runtime configuration:
CPU execution provider, all graph optimisations (as a deployment would run it),
``intra_op_num_threads=threads``, ``inter_op_num_threads=1``, sequential execution.

Thread spinning is left at ONNX Runtime's default (on). With one thread there is no
pool, so it does not matter; with more, spinning workers answer back-to-back runs
sooner, which is what a deployment with default settings sees when it runs
inferences back to back. A model called at long intervals may be slower than
reported by the pool's wake-up time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from workbench.errors import WorkbenchError
from workbench.measure.artifact import require_file
from workbench.measure.timing import (  # noqa: F401 (MIN_RUNS_PER_ROUND: re-exported)
    MIN_RUNS_PER_ROUND,
    InterleavedTiming,
    gc_paused,
    latency_stats,
    time_interleaved,
    time_runs,
)
from workbench.results import LatencyStats

__all__ = [
    "InterleavedTiming",
    "ModelInput",
    "check_threads",
    "check_input_shape",
    "make_session",
    "measure_latency",
    "measure_latency_interleaved",
    "model_input",
    "predict",
    "random_input",
]

# ONNX Runtime's element type names -> numpy dtypes the workbench can feed.
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


# Phrases in ONNX Runtime's load errors that mean "valid file, operator not supported".
_UNSUPPORTED_MARKERS = (
    "NOT_IMPLEMENTED",
    "Could not find an implementation",
    "is not a registered function/op",
)


@dataclass(frozen=True)
class ModelInput:
    """The first input of a session: its name, shape (None for a symbolic dim) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with every symbolic dimension set to ``batch``."""
        return tuple(batch if d is None else d for d in self.shape)


def make_session(
    path: str | os.PathLike, threads: int = 1, *, profile_prefix: str | None = None
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session for the model at ``path`` with ``threads`` intra-op threads.

    Args:
        profile_prefix: when given, ONNX Runtime's profiler is on and writes its JSON
            file under this prefix (see :func:`workbench.measure.profile_operators`).

    Raises:
        WorkbenchError: the file is missing, is not a loadable ONNX model, or uses an
            operator ONNX Runtime cannot run.
    """
    check_threads(threads)
    p = require_file(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: warnings would clutter notebooks and the CLI
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = str(e)
        detail = _first_line(msg)
        too_new = too_new_for_runtime(p.name, msg)
        if too_new is not None:
            raise too_new from e
        if any(m in msg for m in _UNSUPPORTED_MARKERS):
            raise WorkbenchError(
                f"ONNX Runtime {ort.__version__} cannot run {p.name}: {detail}",
                "export with a supported opset (17) or choose a compression setting this "
                "runtime supports",
            ) from e
        raise WorkbenchError(
            f"{p} is not a loadable ONNX model ({detail})",
            "re-export the model; the file may be truncated, corrupt or not an ONNX file",
        ) from e


def check_threads(threads: int) -> None:
    """Raise a WorkbenchError unless ``threads`` is a whole number >= 1."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise WorkbenchError(
            f"threads must be a whole number >= 1, got {threads!r}", "use threads=1 or more"
        )


def model_input(session: ort.InferenceSession) -> ModelInput:
    """Name, shape and numpy dtype of the session's first input."""
    inp = session.get_inputs()[0]
    dtype = _ORT_DTYPES.get(inp.type)
    if dtype is None:
        raise WorkbenchError(
            f"the model's input {inp.name!r} has type {inp.type}, which the workbench cannot feed",
            "export the model with a float32 or float16 input",
        )
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape)
    return ModelInput(inp.name, shape, np.dtype(dtype))


def check_input_shape(inp: ModelInput, shape: Sequence[int], *, ignore_batch: bool = False) -> None:
    """Raise a WorkbenchError when ``shape`` cannot be fed to ``inp``.

    Args:
        ignore_batch: accept any first dimension (:func:`predict` splits into batches).
    """
    shape = tuple(int(s) for s in shape)
    expected = "[" + ",".join("N" if d is None else str(d) for d in inp.shape) + "]"
    got = "[" + ",".join(str(s) for s in shape) + "]"
    ok = len(shape) == len(inp.shape) and all(
        d is None or d == s or (ignore_batch and i == 0)
        for i, (d, s) in enumerate(zip(inp.shape, shape, strict=True))
    )
    if not ok or any(s < 1 for s in shape):
        raise WorkbenchError(
            f"model expects input of shape {expected} but got {got}",
            f"pass input_shape={inp.concrete_shape()} (N is any batch size), or pick the "
            "task the model was trained for",
        )


def random_input(inp: ModelInput, shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A seeded random tensor of ``shape`` in the input's dtype (latency ignores the values)."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(inp.dtype, np.floating):
        return rng.standard_normal(tuple(shape), dtype=np.float32).astype(inp.dtype)
    return rng.integers(0, 2, size=tuple(shape)).astype(inp.dtype)


def predict(
    path: str | os.PathLike, inputs: np.ndarray, *, threads: int = 1, batch_size: int = 256
) -> np.ndarray:
    """Outputs of the model's first output for every row of ``inputs``, run in batches.

    ``inputs`` is cast to the model's input dtype (float16 models take float16). A
    model whose batch dimension is fixed (e.g. 1) is run that many rows at a time.
    Returns the outputs concatenated along the first axis, in the model's output dtype.
    """
    if batch_size < 1:
        raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}", "use batch_size=1+")
    session = make_session(path, threads)
    inp = model_input(session)
    x = np.asarray(inputs)
    check_input_shape(inp, x.shape if x.shape[0] else (1, *x.shape[1:]), ignore_batch=True)
    x = x.astype(inp.dtype, copy=False)
    fixed = inp.shape[0]
    step = fixed if fixed is not None else batch_size
    out_name = session.get_outputs()[0].name
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        n = len(chunk)
        if fixed is not None and n < fixed:  # pad the last chunk to the fixed batch
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        y = session.run([out_name], {inp.name: chunk})[0]
        if y.ndim == 0 or y.shape[0] != len(chunk):
            raise WorkbenchError(
                f"the model's first output {out_name!r} has shape {list(y.shape)} for a batch "
                f"of {len(chunk)}: its first dimension is not the batch, so there is no "
                "prediction per input to score",
                "export the model with the batch as the first dimension of its first output "
                "(e.g. [N, classes])",
            )
        outs.append(y[:n])
    if not outs:
        shape = session.get_outputs()[0].shape
        return np.zeros((0, *[d if isinstance(d, int) else 0 for d in shape[1:]]), np.float32)
    return np.concatenate(outs)


def measure_latency(
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    *,
    threads: int = 1,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 0.5,
    max_runs: int = 5000,
) -> LatencyStats:
    """Wall-clock latency of one inference of the model at ``path`` in ONNX Runtime.

    After ``warmup`` untimed runs, runs are timed one by one with ``perf_counter_ns``
    until both ``min_runs`` runs and ``min_seconds`` seconds are reached (at most
    ``max_runs``). The input is seeded random data of the model's dtype; the time
    includes ``session.run``'s Python binding, as an application would call it.
    Python's garbage collector is paused while timing so its pauses are not charged
    to the model.

    Args:
        input_shape: the full input shape, batch included, e.g. ``(1, 1, 8, 8)``;
            None takes the model's own shape with a symbolic batch of 1.
    """
    if warmup < 0 or min_runs < 1 or max_runs < min_runs or min_seconds < 0:
        raise WorkbenchError(
            f"invalid run counts (warmup={warmup}, min_runs={min_runs}, max_runs={max_runs}, "
            f"min_seconds={min_seconds})",
            "use warmup >= 0, 1 <= min_runs <= max_runs and min_seconds >= 0",
        )
    session = make_session(path, threads)
    inp = model_input(session)
    shape = inp.concrete_shape() if input_shape is None else tuple(input_shape)
    check_input_shape(inp, shape)
    feed = {inp.name: random_input(inp, shape)}
    run = session.run
    for _ in range(warmup):
        run(None, feed)

    with gc_paused():
        ms = time_runs(
            lambda: run(None, feed), min_runs=min_runs, min_seconds=min_seconds, max_runs=max_runs
        )
    return latency_stats(ms, warmup, threads)


_OPSET_TOO_NEW = re.compile(r"Opset (\d+) is under development.*?till opset (\d+)", re.S)
_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def too_new_for_runtime(name: str, msg: str) -> WorkbenchError | None:
    """The error for a model stamped with an opset (or IR version) newer than this ONNX
    Runtime supports, read from ONNX Runtime's load message; None for other failures.

    ORT's own text is a C++ signature hundreds of characters long that, cut to one
    line, never reaches the point: say it, with the number to re-export with.
    """
    found = _OPSET_TOO_NEW.search(msg)
    if found:
        opset, most = found.groups()
        return WorkbenchError(
            f"{name} uses opset {opset}, newer than ONNX Runtime {ort.__version__} supports "
            f"(max {most})",
            f"re-export the model with opset <= {most} (torch.onnx.export(..., "
            f"opset_version={min(int(most), 17)}))",
        )
    found = _IR_TOO_NEW.search(msg)
    if found:
        ir, most = found.groups()
        return WorkbenchError(
            f"{name} has ONNX IR version {ir}, newer than ONNX Runtime {ort.__version__} "
            f"supports (max {most})",
            f"re-export the model with an older onnx package, or set model.ir_version = {most}",
        )
    return None


def measure_latency_interleaved(
    paths: Sequence[str | os.PathLike],
    input_shape: Sequence[int] | None = None,
    *,
    input_shapes: Sequence[Sequence[int] | None] | None = None,
    threads: int = 1,
    warmup: int = 10,
    rounds: int = 9,
    min_runs: int = 50,
    min_seconds: float = 0.5,
    max_runs: int = 5000,
) -> InterleavedTiming:
    """Latency of each model in ``paths``, timed in interleaved rounds in one run.

    Every session is made and warmed up first; then each of ``rounds`` rounds times
    every model in turn, in alternating order (A, B, then B, A, ...), so that whatever
    else the machine does slows all of them alike and their ratios stay meaningful. Each
    model gets at least ``min_runs`` runs and ``min_seconds`` seconds over all rounds
    (at least MIN_RUNS_PER_ROUND per round, at most ``max_runs``), timed one by one as
    :func:`measure_latency` does.

    Args:
        paths: the models, e.g. a variant and its baseline.
        input_shape: full input shape, batch included, shared by every model; None takes
            each model's own shape with a symbolic batch of 1.
        input_shapes: instead of ``input_shape``, one shape per model in ``paths`` (an
            entry None: that model's own shape), e.g. a distilled student timed beside
            its teacher, which takes larger inputs.
    """
    if not paths or rounds < 1 or warmup < 0 or min_runs < 1 or max_runs < min_runs:
        raise WorkbenchError(
            f"invalid timing request ({len(paths)} model(s), rounds={rounds}, warmup={warmup}, "
            f"min_runs={min_runs}, max_runs={max_runs})",
            "give one or more models, rounds >= 1, warmup >= 0 and 1 <= min_runs <= max_runs",
        )
    if input_shapes is None:
        input_shapes = [input_shape] * len(paths)
    elif input_shape is not None or len(input_shapes) != len(paths):
        raise WorkbenchError(
            f"invalid timing request: {len(input_shapes)} input shape(s) for {len(paths)} "
            f"model(s){' and input_shape too' if input_shape is not None else ''}",
            "give input_shapes one shape (or None) per model, or input_shape for all of them",
        )
    runners = []
    for path, given in zip(paths, input_shapes, strict=True):
        session = make_session(path, threads)
        inp = model_input(session)
        shape = inp.concrete_shape() if given is None else tuple(given)
        check_input_shape(inp, shape)
        feed = {inp.name: random_input(inp, shape)}
        for _ in range(warmup):
            session.run(None, feed)
        runners.append((session.run, feed))

    return time_interleaved(
        [lambda run=run, feed=feed: run(None, feed) for run, feed in runners],
        warmup=warmup,
        threads=threads,
        rounds=rounds,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_runs=max_runs,
    )


def _first_line(msg: str) -> str:
    line = next((s.strip() for s in msg.splitlines() if s.strip()), "no detail")
    return line if len(line) <= 300 else line[:297] + "..."

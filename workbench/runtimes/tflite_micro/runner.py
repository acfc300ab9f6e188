"""TensorFlow Lite Micro: run an int8 ``.tflite`` in TFLM's Python interpreter, find its arena.

TFLM is what runs on a microcontroller; the ``tflite-micro`` package runs the same
interpreter with its reference kernels on this machine, so accuracy and agreement
measured here are TFLM's. Its speed here says nothing about a microcontroller's, so
no latency is measured for this runtime.

Every TFLM call runs in a worker process (``_worker``): TFLM reports its arena use
and its errors on the C stderr only, and a failed allocation can crash a later
interpreter in the same process.

The tensor arena (the one block of RAM TFLM needs, ``ARENA_SIZE`` in firmware) is
found by the interpreter itself: its recording allocator reports the bytes used,
split into the head (non-persistent: activations and scratch buffers, reused across
operators by the memory planner) and the tail (persistent: tensor and node
structures, quantization data, kernels' persistent buffers). The smallest arena the
interpreter accepts is then found by a binary search over arena sizes, each probe a
fresh interpreter running one inference, and verified: it runs with that size and
fails with 1 KiB less.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.runtimes.litert.flatbuffer import TFLiteModel, io_signature, read_tflite
from workbench.runtimes.litert.session import dequantize, quantize

__all__ = [
    "ArenaReport",
    "check_integer_model",
    "predict",
    "tensor_arena",
    "tflm_version",
]

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
_KIB = 1024
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
_ALLOC_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_RECORD_LINE = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead")
# Operators that only convert at the model's edges: an int8 model with float I/O
# quantizes its input and dequantizes its output, and still computes in integers.
_EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
_FLOAT_TYPES = {0: "float32", 1: "float16", 10: "float64"}  # TFLite TensorType codes


def tflm_version() -> str:
    """The installed ``tflite-micro`` package version (a dated development build)."""
    import importlib.metadata

    return importlib.metadata.version("tflite-micro")


def _default_arena(model: TFLiteModel) -> int:
    # Generous for a first run: TFLM's own default heuristic is 10x the model's bytes.
    return max(10 * len(model.data), 256 * _KIB)


def check_integer_model(path: str | os.PathLike) -> TFLiteModel:
    """The parsed model, if every operator computes in integers; else a WorkbenchError.

    A float, float16 or dynamic-range model would run on TFLM's float reference
    kernels, which is not what a microcontroller deployment runs; it is refused with
    the fix (full-integer int8 conversion).
    """
    model = read_tflite(path)
    sub = model.subgraph
    for op in sub.operators or []:
        name = model.op_name(op)
        if name in _EDGE_OPS:
            continue
        for i in [*(op.inputs if op.inputs is not None else []), *(op.outputs or [])]:
            if int(i) < 0:
                continue
            t = sub.tensors[int(i)]
            if int(t.type) in _FLOAT_TYPES:
                raise WorkbenchError(
                    f"{model.path.name} computes in floating point (its {name} operator "
                    f"uses a {_FLOAT_TYPES[int(t.type)]} tensor); TensorFlow Lite Micro runs "
                    "full-integer int8 models here",
                    "export the model as full-integer int8 (scheme 'int8' with a "
                    "representative dataset) and measure that file in tflite-micro",
                )
    return model


def _run_worker(
    model: TFLiteModel,
    arena_size: int,
    *,
    inputs: Path | None = None,
    outputs: Path | None = None,
    print_allocations: bool = False,
    timeout: float = 300.0,
) -> tuple[dict, str]:
    args = {
        "path": str(model.path.resolve()),
        "arena_size": int(arena_size),
        "inputs": None if inputs is None else str(inputs),
        "outputs": None if outputs is None else str(outputs),
        "print_allocations": print_allocations,
    }
    cmd = [sys.executable, "-m", "workbench.runtimes.tflite_micro._worker", json.dumps(args)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise WorkbenchError(
            f"TensorFlow Lite Micro took longer than {timeout:g} s on {model.path.name}",
            "run fewer inputs, or a smaller model",
        ) from e
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    try:
        out = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, dict):
        # A crash (e.g. a segmentation fault) counts as "does not run with this arena".
        out = {"ok": False, "stage": "crash", "error": f"exit status {proc.returncode}"}
    missing = _MISSING_OP.search(proc.stderr)
    if missing:
        raise WorkbenchError(
            f"TensorFlow Lite Micro ({tflm_version()}) has no kernel for the operator "
            f"{missing.group(1)} used by {model.path.name}",
            "replace the layer that produces it with one TFLM supports (see TFLM's "
            "all_ops_resolver), or run the model in LiteRT instead",
        )
    return out, proc.stderr


@dataclass(frozen=True)
class ArenaReport:
    """The tensor arena TFLM needs for one model, found by the interpreter itself.

    ``arena_bytes`` is the smallest ``arena_size`` the interpreter accepts (it runs
    one inference with it); ``verified`` says it failed with 1 KiB less.
    ``recorded_bytes`` is what TFLM's recording allocator reports as used, split into
    ``activations_bytes`` (head: non-persistent, planned) and ``persistent_bytes``
    (tail). The two totals can differ by a few bytes of start alignment.
    ``flash_bytes`` is the model's size: a microcontroller keeps it in flash.
    """

    arena_bytes: int
    recorded_bytes: int
    activations_bytes: int
    persistent_bytes: int
    flash_bytes: int
    verified: bool
    probes: int
    records: dict[str, int] = field(default_factory=dict)  # allocator record -> bytes used
    method: str = (
        "TFLM RecordingMicroAllocator report (print_allocations), then a binary search over "
        "arena_size for the smallest size that allocates and runs one inference, each probe "
        "a fresh interpreter; verified to fail with 1 KiB less"
    )

    @property
    def firmware_bytes(self) -> int:
        """What to give ``ARENA_SIZE`` on a device: the larger of the two totals, rounded
        up to 16 bytes, since the smallest accepted size depends on where the arena
        starts in memory and a device's arena may start less favourably than here."""
        return -(-max(self.arena_bytes, self.recorded_bytes) // 16) * 16

    def to_dict(self) -> dict:
        d = asdict(self)
        d["firmware_bytes"] = self.firmware_bytes
        return d


def _parse_allocations(stderr: str) -> tuple[dict[str, int], dict[str, int]]:
    totals = {k: int(v) for k, v in _ALLOC_LINE.findall(stderr)}
    records = {k: int(v) for k, v in _RECORD_LINE.findall(stderr)}
    return totals, records


def tensor_arena(path: str | os.PathLike) -> ArenaReport:
    """Find the exact tensor arena of an int8 ``.tflite`` in TFLM (see :class:`ArenaReport`).

    Raises:
        WorkbenchError: a float model, an operator TFLM lacks, or a model that does not
            run even with a generous arena.
    """
    model = check_integer_model(path)
    generous = _default_arena(model)
    out, stderr = _run_worker(model, generous, print_allocations=True)
    if not out["ok"]:
        raise WorkbenchError(
            f"TensorFlow Lite Micro cannot run {model.path.name} even with a {generous}-byte "
            f"arena ({out.get('error')}; {stderr.strip()[-300:]})",
            "check that the model is a full-integer int8 TFLite model with static shapes",
        )
    totals, records = _parse_allocations(stderr)
    if "total" not in totals:
        raise WorkbenchError(
            f"TensorFlow Lite Micro printed no arena report for {model.path.name}",
            "report this: the tflite-micro package's print_allocations output changed",
        )
    probes = 0

    def runs(size: int) -> bool:
        nonlocal probes
        probes += 1
        return size > 0 and bool(_run_worker(model, size)[0]["ok"])

    # The smallest accepted size lies near the recorded total; bracket it, then bisect.
    hi = totals["total"]
    while hi < generous and not runs(hi):
        hi = min(2 * hi, generous)  # generous is known to run
    lo = max(hi - _KIB, 0)
    while lo > 0 and runs(lo):
        hi, lo = lo, max(lo - _KIB, 0)
    while hi - lo > 1:  # invariant: lo fails (or is 0), hi runs
        mid = (lo + hi) // 2
        if runs(mid):
            hi = mid
        else:
            lo = mid
    verified = runs(hi) and not runs(hi - _KIB)
    return ArenaReport(
        arena_bytes=hi,
        recorded_bytes=totals["total"],
        activations_bytes=totals.get("head", 0),
        persistent_bytes=totals.get("tail", 0),
        flash_bytes=len(model.data),
        verified=verified,
        probes=probes,
        records=records,
    )


def predict(
    path: str | os.PathLike,
    inputs: np.ndarray,
    *,
    arena_size: int | None = None,
    raw: bool = False,
) -> np.ndarray:
    """The first output for every row of ``inputs`` in TFLM (batch 1, reference kernels).

    Float ``inputs`` are quantized with the model input's scale and zero-point when the
    input is int8; int8 outputs are dequantized to float32 unless ``raw``.

    Args:
        arena_size: bytes of tensor arena; None uses a generous size (10x the model).
    """
    model = check_integer_model(path)
    (inp, *_), (out, *_) = io_signature(model)
    x = np.asarray(inputs)
    expected = tuple(d for d in inp.shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise WorkbenchError(
            f"the model's input {inp.name!r} expects rows of shape {list(expected)}, got "
            f"{list(x.shape[1:])}",
            "pass inputs in the model's layout (a converted Keras model takes NHWC)",
        )
    in_dtype = np.dtype(inp.dtype)
    if np.issubdtype(in_dtype, np.integer) and not np.issubdtype(x.dtype, np.integer):
        x = quantize(x, inp.scale, inp.zero_point, in_dtype)
    x = x.astype(in_dtype, copy=False)
    size = _default_arena(model) if arena_size is None else int(arena_size)
    with tempfile.TemporaryDirectory(prefix="tflm-") as tmp:
        in_path, out_path = Path(tmp) / "in.npy", Path(tmp) / "out.npy"
        np.save(in_path, x)
        result, stderr = _run_worker(model, size, inputs=in_path, outputs=out_path)
        if not result["ok"]:
            raise WorkbenchError(
                f"TensorFlow Lite Micro could not run {model.path.name} with a {size}-byte "
                f"arena ({result.get('error')}; {stderr.strip()[-300:]})",
                "use the arena size from tensor_arena(), or a larger one",
            )
        y = np.load(out_path)
    if not raw and out.quantized and np.issubdtype(y.dtype, np.integer):
        return dequantize(y, out.scale, out.zero_point)
    return y

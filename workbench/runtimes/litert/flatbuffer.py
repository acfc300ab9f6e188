"""What a ``.tflite`` file is made of, read from its flatbuffer: weights, MACs, I/O signature.

Everything here is read from the file with LiteRT's own generated schema
(``ai_edge_litert.schema_py_generated``, pure Python over ``flatbuffers``), without
creating an interpreter, so it works for any TFLite model (float32, float16 weights
behind DEQUANTIZE, dynamic-range int8, full-integer int8) and for the ones TFLite
Micro runs. No TensorFlow import.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

__all__ = [
    "TensorSpec",
    "TFLiteGraphStats",
    "TFLiteModel",
    "graph_stats",
    "io_signature",
    "read_tflite",
]

_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of every TFLite model (bytes 4..8)

# TFLite TensorType -> numpy dtype (the types weights and I/O use in practice).
_NUMPY_DTYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
    12: np.uint64,
    15: np.uint32,
    16: np.uint16,
}

# Compute ops counted for weights and MACs: op name -> input slots holding weights
# (filter, bias), as in the TFLite schema.
_WEIGHT_SLOTS = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (1, 3),
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, shape (None for a dynamic dim), dtype, int8 scaling.

    ``scale`` and ``zero_point`` are set for quantized tensors: real value =
    ``scale * (q - zero_point)``.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class TFLiteGraphStats:
    """Weights and compute of one TFLite model's main subgraph, counted from the file.

    Same meaning as the ONNX ``GraphStats``: ``params`` counts the elements of the
    filter and bias tensors of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
    TRANSPOSE_CONV (per layer using them; quantization scales and zero-points are not
    parameters); ``nonzero_params`` those not zero once dequantized (an int8 weight is
    zero when it equals its zero-point); ``macs`` the multiply-accumulates of those ops
    at the model's batch size (1 for a converted Keras model).
    """

    params: int
    nonzero_params: int
    macs: int
    weight_dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> weight elements
    op_counts: dict[str, int] = field(default_factory=dict)  # op name -> nodes
    macs_by_op: dict[str, int] = field(default_factory=dict)
    # Compute ops whose shapes are not static in the file: their MACs are missing.
    uncounted_ops: tuple[str, ...] = ()

    @property
    def sparsity(self) -> float:
        """Fraction of weight elements that are zero."""
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["uncounted_ops"] = list(self.uncounted_ops)
        return d


@dataclass
class TFLiteModel:
    """A parsed TFLite model: the schema's object tree plus the raw bytes it came from."""

    path: Path
    data: bytes
    model: object  # schema_py_generated.ModelT
    op_names: dict[int, str]  # BuiltinOperator code -> name

    @property
    def subgraph(self):
        """The main subgraph (index 0), the one an interpreter runs by default."""
        return self.model.subgraphs[0]

    def op_name(self, op) -> str:
        """The operator name (e.g. ``CONV_2D``) of a node of the main subgraph."""
        code = self.model.operatorCodes[op.opcodeIndex]
        # Builtin codes above 127 live in builtinCode; deprecatedBuiltinCode holds the rest.
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if builtin == 32 and code.customCode:  # CUSTOM
            return f"CUSTOM:{code.customCode.decode(errors='replace')}"
        return self.op_names.get(builtin, f"BUILTIN_{builtin}")

    def buffer_array(self, tensor_index: int) -> np.ndarray | None:
        """The constant data of a tensor as a numpy array, or None if it has none."""
        t = self.subgraph.tensors[tensor_index]
        if t.buffer <= 0 or t.buffer >= len(self.model.buffers):
            return None
        buf = self.model.buffers[t.buffer]
        if buf.data is not None and len(buf.data):
            raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
        elif buf.offset > 1 and buf.size:  # large models keep buffers after the flatbuffer
            raw = self.data[buf.offset : buf.offset + buf.size]
        else:
            return None
        dtype = _NUMPY_DTYPES.get(int(t.type))
        if dtype is None:
            return None
        arr = np.frombuffer(raw, dtype=dtype)
        shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
        return arr.reshape(shape) if int(np.prod(shape, dtype=np.int64)) == arr.size else arr


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read_tflite(path: str | os.PathLike) -> TFLiteModel:
    """Parse the ``.tflite`` file at ``path``.

    Raises:
        WorkbenchError: the file is missing, is not a TFLite flatbuffer (wrong file
            identifier), or is truncated or corrupt.
    """
    p = Path(path)
    if not p.is_file():
        raise WorkbenchError(f"{p} does not exist or is not a file", "check the path")
    data = p.read_bytes()
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise WorkbenchError(
            f"{p.name} is not a TFLite model (no 'TFL3' flatbuffer identifier)",
            "pass a .tflite file written by the TFLite converter; the file may be truncated "
            "or another format",
        )
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        if not model.subgraphs:
            raise ValueError("the model has no subgraph")
        sub = model.subgraphs[0]
        n_tensors = len(sub.tensors or [])
        for op in sub.operators or []:
            if not 0 <= op.opcodeIndex < len(model.operatorCodes):
                raise ValueError(f"operator code index {op.opcodeIndex} out of range")
            for i in [*(op.inputs if op.inputs is not None else []), *(op.outputs or [])]:
                if i >= n_tensors:
                    raise ValueError(f"tensor index {i} out of range")
        for t in sub.tensors or []:
            if t.buffer >= len(model.buffers or []):
                raise ValueError(f"buffer index {t.buffer} out of range")
            b = model.buffers[t.buffer]
            if b.offset > 1 and b.offset + b.size > len(data):
                raise ValueError("a buffer lies beyond the end of the file")
    except WorkbenchError:
        raise
    except Exception as e:  # flatbuffers raises IndexError/struct.error on bad offsets
        raise WorkbenchError(
            f"{p.name} is a truncated or corrupt TFLite model ({type(e).__name__}: {e})",
            "re-export the model; the file may have been cut short or altered",
        ) from e
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return TFLiteModel(path=p, data=data, model=model, op_names=names)


def _tensor_spec(m: TFLiteModel, index: int) -> TensorSpec:
    t = m.subgraph.tensors[index]
    sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
    shape = tuple(None if int(d) < 0 else int(d) for d in (sig if sig is not None else ()))
    dtype = np.dtype(_NUMPY_DTYPES.get(int(t.type), np.void)).name
    q = t.quantization
    scale = zero_point = None
    if q is not None and q.scale is not None and len(q.scale) == 1:
        scale = float(q.scale[0])
        zero_point = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
    name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
    return TensorSpec(name=name, shape=shape, dtype=dtype, scale=scale, zero_point=zero_point)


def io_signature(
    model: TFLiteModel | str | os.PathLike,
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The main subgraph's inputs and outputs, with int8 scale and zero-point where quantized."""
    m = model if isinstance(model, TFLiteModel) else read_tflite(model)
    sub = m.subgraph
    return (
        [_tensor_spec(m, int(i)) for i in sub.inputs],
        [_tensor_spec(m, int(i)) for i in sub.outputs],
    )


def _weight_source(m: TFLiteModel, index: int, producers: dict[int, object]) -> int | None:
    """The constant tensor behind a weight input: itself, or a DEQUANTIZE's constant input."""
    if index < 0:
        return None
    if m.buffer_array(index) is not None:
        return index
    op = producers.get(index)
    if op is not None and m.op_name(op) == "DEQUANTIZE":
        src = int(op.inputs[0])
        return src if m.buffer_array(src) is not None else None
    return None


def _nonzero(m: TFLiteModel, index: int, values: np.ndarray) -> int:
    t = m.subgraph.tensors[index]
    q = t.quantization
    zp = q.zeroPoint if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else None
    if zp is None or not np.issubdtype(values.dtype, np.integer):
        return int(np.count_nonzero(values))
    zp = np.asarray(zp, dtype=np.int64)
    if zp.size == 1 or values.ndim == 0:
        return int(np.count_nonzero(values.astype(np.int64) != int(zp.reshape(-1)[0])))
    # Per-channel: the zero-point varies along quantizedDimension.
    axis = int(q.quantizedDimension)
    shape = [1] * values.ndim
    shape[axis] = zp.size
    return int(np.count_nonzero(values.astype(np.int64) != zp.reshape(shape)))


def _macs(m: TFLiteModel, name: str, op, filter_index: int | None) -> int | None:
    sub = m.subgraph
    out = sub.tensors[int(op.outputs[0])]
    if out.shape is None or filter_index is None:
        return None
    out_elems = int(np.prod(out.shape, dtype=np.int64))
    w = sub.tensors[filter_index].shape
    if w is None or len(w) < 2 or out_elems <= 0:
        return None
    w = [int(d) for d in w]
    if name == "CONV_2D":  # filter [Cout, kh, kw, Cin/groups]
        return out_elems * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]
        return out_elems * w[1] * w[2]
    if name == "FULLY_CONNECTED":  # weights [units, in]
        return out_elems * w[-1]
    if name == "TRANSPOSE_CONV":  # filter [Cout, kh, kw, Cin]: each input pixel scatters
        inp = sub.tensors[int(op.inputs[2])].shape
        if inp is None:
            return None
        return int(np.prod(inp, dtype=np.int64)) * w[0] * w[1] * w[2]
    return None


def graph_stats(model: TFLiteModel | str | os.PathLike) -> TFLiteGraphStats:
    """Weights, non-zero weights and MACs of a TFLite model, counted from its flatbuffer."""
    m = model if isinstance(model, TFLiteModel) else read_tflite(model)
    sub = m.subgraph
    producers = {int(o): op for op in sub.operators or [] for o in (op.outputs or [])}
    op_counts: Counter[str] = Counter()
    macs_by_op: Counter[str] = Counter()
    dtypes: Counter[str] = Counter()
    uncounted: list[str] = []
    params = nonzero = 0
    for op in sub.operators or []:
        name = m.op_name(op)
        op_counts[name] += 1
        slots = _WEIGHT_SLOTS.get(name)
        if slots is None:
            continue
        inputs = [int(i) for i in op.inputs]
        sources = [
            _weight_source(m, inputs[s], producers) if s < len(inputs) else None for s in slots
        ]
        for src in sources:
            if src is None:
                continue
            values = m.buffer_array(src)
            params += int(values.size)
            nonzero += _nonzero(m, src, values)
            dtypes[values.dtype.name] += int(values.size)
        macs = _macs(m, name, op, sources[0] if sources[0] is not None else inputs[slots[0]])
        if macs is None:
            uncounted.append(name)
        else:
            macs_by_op[name] += macs
    return TFLiteGraphStats(
        params=params,
        nonzero_params=nonzero,
        macs=int(sum(macs_by_op.values())),
        weight_dtypes=dict(dtypes),
        op_counts=dict(op_counts),
        macs_by_op=dict(macs_by_op),
        uncounted_ops=tuple(uncounted),
    )

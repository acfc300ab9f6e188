"""What an exported ONNX file is made of: bytes on disk, weights and multiply-accumulates.

Everything here is read from the file itself, so it works for any artifact the
workbench (or a user) produced: float32, float16, static QDQ int8, dynamic
quantization (ConvInteger/MatMulInteger) and QOperator graphs (QLinearConv,
QLinearMatMul, com.microsoft QGemm).
"""

from __future__ import annotations

import math
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.errors import WorkbenchError

if TYPE_CHECKING:  # onnx is imported inside the functions: see _load_onnx
    import onnx

__all__ = ["COMPRESSION_LEVEL", "GraphStats", "file_sizes", "graph_stats", "sort_topologically"]

_CHUNK = 1 << 20  # compress in 1 MiB pieces so a large artifact is never held twice
# zlib's default level, the one zip and gzip use unless told otherwise, so the figure is
# what a user gets zipping the file. Measured on a 44.7 MB digits-resnet18 pruned 70%
# (unstructured) on a busy 2-core machine, median of 3 interleaved rounds: level 9
# 16.69 MB in 89 s, level 6 17.37 MB (+4%) in 9.3 s, level 1 20.30 MB (+22%) in 3.3 s.
COMPRESSION_LEVEL = 6


@dataclass(frozen=True)
class GraphStats:
    """Weights and compute of one ONNX graph, counted from the graph itself."""

    params: int  # elements of weight and bias tensors, per layer using them (not scales, zero-points, shapes)
    nonzero_params: int  # of which not zero once dequantized (int8: value != zero-point)
    macs: int  # multiply-accumulates of Conv/ConvTranspose/Gemm/MatMul (+ int8 forms), batch 1
    weight_dtypes: dict[str, int] = field(default_factory=dict)  # dtype -> weight elements
    op_counts: dict[str, int] = field(default_factory=dict)  # op type -> nodes in the graph
    macs_by_op: dict[str, int] = field(default_factory=dict)  # op type -> its MACs
    # Compute ops whose shapes shape inference could not resolve: their MACs are
    # missing from ``macs``, so a caller can say the figure is a lower bound.
    uncounted_ops: tuple[str, ...] = ()

    @property
    def sparsity(self) -> float:
        """Fraction of weight elements that are zero."""
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["uncounted_ops"] = list(self.uncounted_ops)
        return d


def file_sizes(path: str | os.PathLike) -> tuple[int, int]:
    """Bytes of ``path`` on disk, and of its bytes deflate-compressed (zlib at
    :data:`COMPRESSION_LEVEL`, the level zip and gzip use by default).

    The compressed size is where unstructured sparsity pays off: zeroed weights do not
    shrink a dense file, but they compress.
    """
    p = require_file(path)
    compressor = zlib.compressobj(COMPRESSION_LEVEL)
    compressed = 0
    with p.open("rb") as f:
        while chunk := f.read(_CHUNK):
            compressed += len(compressor.compress(chunk))
    compressed += len(compressor.flush())
    return p.stat().st_size, compressed


# Where each compute op takes its weights: op type -> (weight input slots, zero-point
# slot for each of them or None). Slots are positions in node.input.
_WEIGHT_SLOTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "Conv": ((1, None), (2, None)),
    "ConvTranspose": ((1, None), (2, None)),
    "Gemm": ((0, None), (1, None), (2, None)),
    "MatMul": ((0, None), (1, None)),
    "ConvInteger": ((1, 3),),
    "MatMulInteger": ((0, 2), (1, 3)),
    "QLinearConv": ((3, 5), (8, None)),
    "QLinearMatMul": ((0, 2), (3, 5)),
    "QGemm": ((0, 2), (3, 5), (6, None)),  # com.microsoft, from QOperator Gemm
    "BatchNormalization": ((1, None), (2, None)),  # scale and shift; running stats are buffers
    "InstanceNormalization": ((1, None), (2, None)),
    "LayerNormalization": ((1, None), (2, None)),
    "GroupNormalization": ((1, None), (2, None)),
    "PRelu": ((1, None),),
    "Gather": ((0, None),),  # an embedding table
}
# Ops a weight passes through on its way from its initializer to the op using it.
# For DequantizeLinear the zero-point (input 2) is remembered so a pruned int8 weight
# (stored as its zero-point) counts as zero.
_PASS_THROUGH = {
    "DequantizeLinear",
    "Cast",
    "Transpose",
    "Reshape",
    "Identity",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "CastLike",
}
# A bias added after a matrix product (MatMul + Add, or the Cast/Mul scaling that
# dynamic quantization puts after MatMulInteger/ConvInteger) is a weight too.
_BIAS_PRODUCERS = {"MatMul", "MatMulInteger", "ConvInteger", "Conv", "Gemm", "QLinearMatMul"}
# Static int8 (QDQ) puts a QuantizeLinear/DequantizeLinear pair on the product's output
# before the bias Add: the bias is still the layer's, in float as in int8 (ConvNeXt's
# MatMul + Add layers lost 33,120 biases under int8 without these).
_SCALING = {"Cast", "Mul", "Reshape", "QuantizeLinear", "DequantizeLinear"}


def graph_stats(path: str | os.PathLike) -> GraphStats:
    """Count weights, non-zero weights and batch-1 MACs of the ONNX model at ``path``.

    A symbolic batch dimension is taken as 1. Only the main graph is counted (not
    If/Loop bodies). MACs cover Conv/ConvTranspose/Gemm/MatMul and their integer and
    QLinear forms: element-wise ops, pooling and normalisation are not counted.
    """
    model = _load_onnx(path)
    graph = model.graph
    consts = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}

    # Weights are counted per use: (node index, input slot) -> (its values, its zero-point
    # or None, the zero-point's axis). Exporters store identical constants once (zero
    # biases, a layer pruned to all zeros), so counting per constant would make the count
    # change with the values; a tensor shared by several layers counts once per layer.
    weights: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None, int]] = {}

    def record(use: tuple[int, int], name: str, zp_name: str | None, axis: int) -> None:
        src = _source_constant(name, producer, consts)
        if src is not None:
            const, dq_zp, dq_axis = src
            if dq_zp is not None:  # dequantized on the way: its zero-point applies
                zp_name, axis = dq_zp, dq_axis
            weights[use] = (consts[const], consts.get(zp_name) if zp_name else None, axis)

    for index, node in enumerate(graph.node):
        for slot, zp_slot in _WEIGHT_SLOTS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot]:
                has_zp = zp_slot is not None and zp_slot < len(node.input)
                zp_name = node.input[zp_slot] if has_zp else None
                # Integer ops quantize weights per output channel: axis 0 for conv
                # weights, the last axis (columns) for matrix operands.
                axis = 0 if "Conv" in node.op_type else -1
                record((index, slot), node.input[slot], zp_name or None, axis)
        if node.op_type == "Add" and _follows_product(node, producer, consts):
            for slot, name in enumerate(node.input):
                record((index, slot), name, None, 0)

    params = nonzero = 0
    dtypes: Counter[str] = Counter()
    for values, zp, axis in weights.values():
        params += values.size
        nonzero += _count_nonzero(values, zp, axis)
        dtypes[str(values.dtype)] += values.size

    macs_by_op, uncounted = _count_macs(model)
    return GraphStats(
        params=int(params),
        nonzero_params=int(nonzero),
        macs=int(sum(macs_by_op.values())),
        weight_dtypes=dict(dtypes),
        op_counts=dict(Counter(node.op_type for node in graph.node)),
        macs_by_op=macs_by_op,
        uncounted_ops=tuple(uncounted),
    )


def _source_constant(name: str, producer: dict, consts: dict) -> tuple[str, str | None, int] | None:
    """The constant ``name`` is computed from through pass-through ops, or None.

    Returns the constant's name and, if a DequantizeLinear was on the way, the name
    of its zero-point input and its axis.
    """
    zp_name, axis = None, 1
    for _ in range(8):  # the chains are short; the bound guards against odd graphs
        if name in consts:
            return name, zp_name, axis
        node = producer.get(name)
        if node is None or node.op_type not in _PASS_THROUGH or not node.input:
            return None
        if node.op_type == "DequantizeLinear":
            zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            axis = _attr(node, "axis", 1)
        name = node.input[0]
    return None


def _follows_product(node, producer: dict, consts: dict) -> bool:
    """True if the Add ``node`` adds a bias to the result of a matrix product or conv."""
    if len(node.input) != 2:
        return False
    for const_in, other in ((node.input[1], node.input[0]), (node.input[0], node.input[1])):
        if _source_constant(const_in, producer, consts) is None:
            continue
        src = producer.get(other)
        for _ in range(4):  # through the Cast/Mul that rescale an integer product
            if src is None:
                break
            if src.op_type in _BIAS_PRODUCERS:
                return True
            if src.op_type not in _SCALING:
                break
            src = producer.get(src.input[0])
    return False


def _count_nonzero(values: np.ndarray, zp: np.ndarray | None, axis: int) -> int:
    """Elements whose dequantized value is not zero (== zero-point for quantized ones)."""
    if zp is None or not np.any(zp):
        return int(np.count_nonzero(values))
    if zp.size == 1:
        return int(np.count_nonzero(values != zp.reshape(())))
    if values.ndim == 0:
        return int(np.count_nonzero(values))
    ax = axis % values.ndim
    if zp.ndim == 1 and zp.shape[0] == values.shape[ax]:
        shape = [1] * values.ndim
        shape[ax] = zp.shape[0]
        return int(np.count_nonzero(values != zp.reshape(shape)))
    if zp.shape == values.shape:
        return int(np.count_nonzero(values != zp))
    return int(np.count_nonzero(values))  # blocked zero-points: count against 0


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes so each comes after the nodes producing its inputs.

    ONNX requires this order, and shape inference depends on it; some converters (e.g.
    ONNX Runtime's float16 converter, which appends its Cast nodes) do not keep it.
    Nodes in a cycle or fed by unknown names keep their relative order at the end.
    """
    import onnx

    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            ordered.extend(pending)
            break
        for n in ready:
            available.update(n.output)
        ordered.extend(ready)
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _count_macs(model: onnx.ModelProto) -> tuple[dict[str, int], list[str]]:
    """MACs per op type of a batch-1 inference, and the compute nodes left uncounted."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    # Shape inference needs concrete sizes: a symbolic (batch) dimension becomes 1.
    # Stored value_info keeps the symbolic dimension (converters such as float16 leave
    # it there), so it is dropped and inferred afresh from the fixed input.
    del fixed.graph.value_info[:]
    sort_topologically(fixed.graph)
    for inp in fixed.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # a graph onnx cannot infer (e.g. contrib ops): count what is known
        inferred = fixed
    g = inferred.graph
    shapes: dict[str, list[int] | None] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            shapes[vi.name] = None if None in dims else dims
    for name, value in _constants(g).items():
        shapes[name] = list(value.shape)

    def shape(name: str) -> list[int] | None:
        return shapes.get(name)

    macs: Counter[str] = Counter()
    uncounted: list[str] = []
    for node in g.node:
        op = node.op_type
        n: int | None = None
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape(node.input[3 if op == "QLinearConv" else 1])
            y = shape(node.output[0])
            if w and y:  # out elements x (Cin/groups x kH x kW)
                n = math.prod(y) * math.prod(w[1:])
        elif op == "ConvTranspose":
            x, w = shape(node.input[0]), shape(node.input[1])
            if x and w:  # every input element meets (Cout/groups x kH x kW) weights
                n = math.prod(x) * math.prod(w[1:])
        elif op in ("Gemm", "QGemm"):
            a, y = shape(node.input[0]), shape(node.output[0])
            if a is not None and y is None and len(a) == 2:
                b = shape(node.input[3 if op == "QGemm" else 1])
                if b and len(b) == 2:  # contrib QGemm has no ONNX shape inference
                    m = a[1] if _attr(node, "transA", 0) else a[0]
                    y = [m, b[0] if _attr(node, "transB", 0) else b[1]]
            if a and y and len(a) == 2:
                n = math.prod(y) * (a[0] if _attr(node, "transA", 0) else a[1])
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a, y = shape(node.input[0]), shape(node.output[0])
            if a and y is not None:  # out elements x K (M*N*K for 2-D)
                n = math.prod(y) * a[-1]
        else:
            continue
        if n is None:
            uncounted.append(node.name or op)
        else:
            macs[op] += n
    return dict(macs), uncounted


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node tensors of ``graph``, by name."""
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _attr(node, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def require_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a WorkbenchError if no such file exists."""
    p = Path(path)
    if not p.is_file():
        raise WorkbenchError(
            f"no artifact file at {p}", "check the path, or export the model first"
        )
    return p


def _load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX model with its weights, or raise a WorkbenchError saying why not."""
    # onnx is imported here, not at the top: the memory worker imports this package
    # and must start fast (it runs once per variant), and it never needs onnx.
    import onnx

    p = require_file(path)
    try:
        model = onnx.load(str(p))
        detail = ""
    except Exception as e:  # DecodeError, truncated file, missing external data ...
        model, detail = None, f"{type(e).__name__}: {(str(e).splitlines() or ['no detail'])[0]}"
    # Protobuf happily parses an empty or lucky file into an empty model: a model
    # without an opset or nodes is not one the workbench can measure either.
    if model is not None and (not model.opset_import or not model.graph.node):
        model, detail = None, "no graph nodes or opset in the file"
    if model is None:
        raise WorkbenchError(
            f"{p} is not a loadable ONNX model ({detail})",
            "re-export the model; the file may be truncated, corrupt or not an ONNX file",
        )
    return model

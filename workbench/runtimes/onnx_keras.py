"""ONNX -> Keras 3: the route PyTorch models take to TFLite.

A PyTorch model is exported to ONNX (:func:`workbench.onnx_export.export_onnx`), the
ONNX graph is rebuilt here as a Keras functional model layer by layer with the file's
weights (read with ``onnx.numpy_helper``), and the TFLite converter
(:mod:`workbench.runtimes.litert.export`) converts that Keras model like any other.

Why an in-project rebuild and not a converter package: ``onnx2tf``, ``nobuco`` and
``onnx-tf`` do not work with the TensorFlow 2.21 / Keras 3 / torch 2.14.1 installed
here, and ``litert-torch`` (which does convert the samples) adds about 0.9 GB of
dependencies and pins package versions the workbench uses, so it is not used. The
operators of the workbench's samples and of common torchvision classifiers are few and
well defined; rebuilding them keeps the route small, inspectable and tested against
ONNX Runtime on every model.

Layout. The Keras model keeps the ONNX file's input and output layout: an NCHW input
is a Keras ``Input`` of shape ``(C, H, W)`` followed at once by ``Permute((2, 3, 1))``,
everything after it runs channels-last (what TFLite's kernels want), and the outputs
have the file's shapes. So the ``.tflite`` file takes exactly the inputs the ONNX file
takes. Every tensor carries whether it is channels-last; operators whose meaning
depends on an axis (Concat, Flatten, Reshape, ReduceMean, element-wise constants,
Gemm after a Flatten) map the axis or transpose back where ONNX's NCHW semantics
need it. A Flatten of a channels-last feature map that feeds only Gemm/MatMul layers
flattens in channels-last order and permutes the dense layer's weight rows instead,
so no TRANSPOSE operator lands in the TFLite file.

Supported operators: see :data:`SUPPORTED_OPS`. Shape, Gather, Unsqueeze, Squeeze,
Cast, Slice, Transpose and ConstantOfShape are folded where they act on shapes and
constants (PyTorch exports ``x.view(x.size(0), -1)`` and ``F.pad`` that way) and are
refused, with the node named, on computed tensors. Any other operator raises one
:class:`~workbench.errors.WorkbenchError` naming every unsupported operator type.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from workbench._tf import keras
from workbench.errors import WorkbenchError

__all__ = ["SUPPORTED_OPS", "custom_objects", "keras_for", "onnx_to_keras"]

SUPPORTED_OPS = (
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
)
# Shape arithmetic (PyTorch's ``x.view(x.size(0), -1)`` exports as Shape -> Gather ->
# Unsqueeze -> Concat -> Reshape) is folded to constants; the batch size, unknown until
# run time, is this sentinel. Gather/Unsqueeze/Squeeze/Concat/Cast carry it unchanged and
# Reshape reads it as "the batch"; any arithmetic on it gives another number, which no
# Reshape accepts, so a wrong fold fails with a message instead of a wrong model.
_BATCH = -987_654_321

# NCHW axis -> NHWC axis, for a 4-D tensor held channels-last.
_NCHW_TO_NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}
_SOURCE_ONNX = "keras_source.onnx"


# ------------------------------------------------------------------ custom layers

_LAYERS: dict[str, type] = {}


def custom_objects() -> dict[str, type]:
    """The Keras layers this module defines, by name, for ``keras.models.load_model``.

    The rebuild uses Keras' own layers wherever one computes the ONNX operator exactly
    (the digits samples, ResNet, MobileNetV2 and V3 need nothing else); these few cover
    the rest: an element-wise operation with a constant, a division of two tensors,
    Clip with bounds other than (0, max), HardSigmoid with other than PyTorch's
    parameters, padding with the lowest float before a max pool over negative values.
    They are registered with Keras when this function first runs, so a saved rebuild
    that uses them loads in a process that has called it (or pass its result as
    ``custom_objects``).
    """
    if _LAYERS:
        return dict(_LAYERS)
    k = keras()
    ops = k.ops
    register = k.saving.register_keras_serializable(package="workbench_onnx")

    @register
    class OnnxConstantOp(k.layers.Layer):
        """``x <op> constant`` (or ``constant <op> x``), the constant broadcast NumPy-style."""

        def __init__(self, op: str, value, constant_first: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.op = op
            self.value = np.asarray(value, dtype=np.float32)
            self.constant_first = bool(constant_first)

        def call(self, x):
            c = ops.convert_to_tensor(self.value, dtype=x.dtype)
            a, b = (c, x) if self.constant_first else (x, c)
            return getattr(ops, self.op)(a, b)

        def get_config(self):
            return {
                **super().get_config(),
                "op": self.op,
                "value": self.value.tolist(),
                "constant_first": self.constant_first,
            }

    @register
    class OnnxDivide(k.layers.Layer):
        """Element-wise ``a / b`` of two tensors (Keras has no Divide merge layer)."""

        def call(self, inputs):
            return ops.divide(inputs[0], inputs[1])

    @register
    class OnnxClip(k.layers.Layer):
        """ONNX Clip with any bounds (``None`` for an open side)."""

        def __init__(self, low=None, high=None, **kwargs):
            super().__init__(**kwargs)
            self.low = None if low is None else float(low)
            self.high = None if high is None else float(high)

        def call(self, x):
            if self.low is not None:
                x = ops.maximum(x, self.low)
            if self.high is not None:
                x = ops.minimum(x, self.high)
            return x

        def get_config(self):
            return {**super().get_config(), "low": self.low, "high": self.high}

    @register
    class OnnxHardSigmoid(k.layers.Layer):
        """ONNX HardSigmoid: ``max(0, min(1, alpha * x + beta))``."""

        def __init__(self, alpha: float = 0.2, beta: float = 0.5, **kwargs):
            super().__init__(**kwargs)
            self.alpha = float(alpha)
            self.beta = float(beta)

        def call(self, x):
            return ops.clip(x * self.alpha + self.beta, 0.0, 1.0)

        def get_config(self):
            return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}

    @register
    class OnnxMaxPoolPad(k.layers.Layer):
        """Pad H and W (channels-last) with the lowest float32, as a max pool pads."""

        def __init__(self, pads, **kwargs):
            super().__init__(**kwargs)
            self.pads = [[int(a), int(b)] for a, b in pads]

        def call(self, x):
            lowest = float(np.finfo(np.float32).min)
            return ops.pad(x, [[0, 0], *self.pads, [0, 0]], constant_values=lowest)

        def get_config(self):
            return {**super().get_config(), "pads": self.pads}

    for cls in (
        OnnxConstantOp,
        OnnxDivide,
        OnnxClip,
        OnnxHardSigmoid,
        OnnxMaxPoolPad,
    ):
        _LAYERS[cls.__name__] = cls
    return dict(_LAYERS)


# ------------------------------------------------------------------ values


@dataclass(frozen=True)
class _Value:
    """One ONNX tensor during the rebuild: a constant array or a Keras tensor.

    ``channels_last``: a 4-D Keras tensor held as NHWC while ONNX means NCHW.
    ``nonneg``: every element is >= 0 (after Relu, ReLU6, ...), so zero padding equals
    a max pool's -inf padding. ``flat_source``: this 2-D tensor is a Flatten of the
    channels-last 4-D tensor ``flat_source`` in NHWC order (ONNX's order is NCHW);
    consumers must permute their weights or materialise the NCHW order.
    """

    tensor: Any = None
    const: np.ndarray | None = None
    channels_last: bool = False
    nonneg: bool = False
    flat_source: Any = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def rank(self) -> int:
        return self.const.ndim if self.is_const else len(self.tensor.shape)

    def onnx_shape(self) -> tuple:
        """The shape as ONNX sees it (NCHW for a channels-last tensor)."""
        if self.is_const:
            return tuple(self.const.shape)
        shape = tuple(self.tensor.shape)
        if self.channels_last:
            n, h, w, c = shape
            return (n, c, h, w)
        return shape


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _short(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "op"


class _Builder:
    """Walks the ONNX graph in order, turning each node into Keras layers."""

    def __init__(self, graph, path: Path) -> None:
        self.graph = graph
        self.path = path
        self.k = keras()
        self.layers = custom_objects()
        self.values: dict[str, _Value] = {}
        self.names: set[str] = {"input_to_nhwc"}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    # -------------------------------------------------------------- helpers

    def name(self, node, suffix: str = "") -> str:
        """A unique Keras layer name from the ONNX node's name (for exclude lists)."""
        base = _short(node.name or node.op_type) + (f"_{suffix}" if suffix else "")
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def get(self, name: str) -> _Value:
        if name not in self.values:
            raise WorkbenchError(
                f"{self.path.name}: tensor {name!r} is used before it is produced (the graph "
                "is not in topological order or refers to a missing input)",
                "re-export the model with torch.onnx.export or check the file with onnx.checker",
            )
        return self.values[name]

    def const(self, node, i: int, what: str) -> np.ndarray:
        if i >= len(node.input) or not node.input[i]:
            raise WorkbenchError(
                f"{self.path.name}: {node.op_type} node {node.name!r} has no {what}",
                "re-export the model with torch.onnx.export (opset 17)",
            )
        v = self.get(node.input[i])
        if not v.is_const:
            raise WorkbenchError(
                f"{self.path.name}: the {what} of {node.op_type} node {node.name!r} is computed "
                "at run time; the ONNX -> Keras rebuild needs it as a constant",
                "export the model with constant weights (eval mode, no weights as inputs)",
            )
        return v.const

    def optional_const(self, node, i: int) -> np.ndarray | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        return self.const(node, i, f"input {i}")

    def unsupported(self, node, detail: str) -> WorkbenchError:
        return WorkbenchError(
            f"{self.path.name}: {node.op_type} node {node.name!r} {detail}, which the ONNX -> "
            "Keras rebuild does not support",
            "change the model to avoid it, or measure the model in ONNX Runtime "
            "(runtime onnxruntime)",
        )

    def to_channels_last(self, v: _Value, node) -> _Value:
        """A 4-D tensor as channels-last (a Permute if it is held NCHW)."""
        v = self.materialise(v, node)
        if v.rank != 4:
            raise self.unsupported(
                node, f"gets a {v.rank}-D input where a 4-D NCHW one is expected"
            )
        if v.channels_last:
            return v
        t = self.k.layers.Permute((2, 3, 1), name=self.name(node, "to_nhwc"))(v.tensor)
        return replace(v, tensor=t, channels_last=True)

    def to_onnx_layout(self, v: _Value, node) -> _Value:
        """The tensor in ONNX's own layout (NCHW for 4-D)."""
        v = self.materialise(v, node)
        if not v.channels_last:
            return v
        t = self.k.layers.Permute((3, 1, 2), name=self.name(node, "to_nchw"))(v.tensor)
        return replace(v, tensor=t, channels_last=False)

    def materialise(self, v: _Value, node) -> _Value:
        """A Flatten held in NHWC order, redone in ONNX's NCHW order."""
        if v.is_const or v.flat_source is None:
            return v
        src = v.flat_source
        t = self.k.layers.Permute((3, 1, 2), name=self.name(node, "to_nchw"))(src)
        t = self.k.layers.Flatten(name=self.name(node, "flatten_nchw"))(t)
        return _Value(tensor=t, nonneg=v.nonneg)

    def const_for(self, c: np.ndarray, like: _Value) -> np.ndarray:
        """An ONNX constant, broadcast against ``like``, in ``like``'s Keras layout."""
        c = np.asarray(c, dtype=np.float32)
        if like.channels_last and c.ndim >= 1:
            if c.ndim > 4:
                raise WorkbenchError(
                    f"a {c.ndim}-D constant cannot broadcast against a 4-D tensor",
                    "re-export the model with torch.onnx.export",
                )
            c = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(0, 2, 3, 1)
        # Keras tensors carry the batch dimension: a constant of full rank whose leading
        # dimension is 1 broadcasts over it either way.
        return c

    # -------------------------------------------------------------- the graph

    def build(self):
        import onnx
        from onnx import numpy_helper

        k = self.k
        for init in self.graph.initializer:
            self.values[init.name] = _Value(const=numpy_helper.to_array(init))
        inits = {i.name for i in self.graph.initializer}
        graph_inputs = [i for i in self.graph.input if i.name not in inits]
        if len(graph_inputs) != 1:
            raise WorkbenchError(
                f"{self.path.name} has {len(graph_inputs)} inputs; the ONNX -> Keras rebuild "
                "handles one",
                "export a model with a single image input",
            )
        gi = graph_inputs[0]
        tt = gi.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise WorkbenchError(
                f"{self.path.name}'s input {gi.name!r} is "
                f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, not float32",
                "export the model with a float32 input",
            )
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
            raise WorkbenchError(
                f"{self.path.name}'s input {gi.name!r} has shape {dims}; the ONNX -> Keras "
                "rebuild needs every dimension but the batch fixed",
                "export the model with a fixed input shape (a dynamic batch is fine)",
            )
        self.names.add(_short(gi.name))
        inp = k.Input(shape=tuple(dims[1:]), name=_short(gi.name), dtype="float32")
        v = _Value(tensor=inp)
        if len(dims) == 4:
            t = k.layers.Permute((2, 3, 1), name="input_to_nhwc")(inp)
            v = _Value(tensor=t, channels_last=True)
        self.values[gi.name] = v

        for node in self.graph.node:
            handler = getattr(self, f"op_{node.op_type}")
            out = handler(node, _attrs(node))
            if isinstance(out, _Value):
                out = [out]
            for name, value in zip(node.output, out, strict=False):
                if name:
                    self.values[name] = value

        outputs = []
        for o in self.graph.output:
            v = self.to_onnx_layout(self.get(o.name), _GraphOutput(o.name))
            if v.is_const:
                raise WorkbenchError(
                    f"{self.path.name}'s output {o.name!r} does not depend on the input",
                    "export the model so that its output is computed from its input",
                )
            outputs.append(v.tensor)
        return k.Model(
            inp, outputs[0] if len(outputs) == 1 else outputs, name=_short(self.path.stem)
        )

    # -------------------------------------------------------------- operators

    def op_Constant(self, node, a):
        from onnx import numpy_helper

        if "value" in a:
            return _Value(const=numpy_helper.to_array(a["value"]))
        for key in ("value_float", "value_int"):
            if key in a:
                return _Value(const=np.asarray(a[key]))
        for key in ("value_floats", "value_ints"):
            if key in a:
                return _Value(const=np.asarray(list(a[key])))
        raise self.unsupported(node, f"holds a {', '.join(a)} attribute")

    # shape arithmetic, folded to constants

    def op_Shape(self, node, a):
        x = self.get(node.input[0])
        if x.is_const:
            shape = np.asarray(x.const.shape, dtype=np.int64)
        else:
            shape = np.asarray([_BATCH, *x.onnx_shape()[1:]], dtype=np.int64)
        start, end = a.get("start", 0), a.get("end")
        return _Value(const=shape[start:end])

    def _const_only(self, node) -> np.ndarray:
        x = self.get(node.input[0])
        if not x.is_const:
            raise self.unsupported(node, "acts on a computed tensor (only on shapes and constants)")
        return x.const

    def op_Gather(self, node, a):
        data = self._const_only(node)
        indices = self.const(node, 1, "indices")
        return _Value(const=np.take(data, indices, axis=int(a.get("axis", 0))))

    def _axes(self, node, a) -> list[int] | None:
        if "axes" in a:
            return [int(v) for v in a["axes"]]
        if len(node.input) > 1 and node.input[1]:
            return [int(v) for v in self.const(node, 1, "axes")]
        return None

    def op_Unsqueeze(self, node, a):
        data = self._const_only(node)
        axes = self._axes(node, a) or []
        rank = data.ndim + len(axes)
        return _Value(const=np.expand_dims(data, tuple(sorted(ax % rank for ax in axes))))

    def op_Squeeze(self, node, a):
        data = self._const_only(node)
        axes = self._axes(node, a)
        return _Value(const=np.squeeze(data, None if axes is None else tuple(axes)))

    def op_Cast(self, node, a):
        from onnx import helper

        data = self._const_only(node)
        return _Value(const=data.astype(helper.tensor_dtype_to_np_dtype(int(a["to"]))))

    def op_ConstantOfShape(self, node, a):
        from onnx import numpy_helper

        shape = [int(d) for d in self.const(node, 0, "shape")]
        value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        return _Value(const=np.full(shape, value.reshape(-1)[0], dtype=value.dtype))

    def op_Slice(self, node, a):
        data = self._const_only(node)
        if "starts" in a:  # opset < 10: attributes
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            starts = self.const(node, 1, "starts")
            ends = self.const(node, 2, "ends")
            axes, steps = self.optional_const(node, 3), self.optional_const(node, 4)
        axes = range(len(starts)) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * data.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            # numpy clamps out-of-range bounds as ONNX does (INT64_MAX = to the end).
            index[int(axis)] = slice(int(start), int(end), int(step))
        return _Value(const=data[tuple(index)])

    def op_Transpose(self, node, a):
        data = self._const_only(node)
        perm = a.get("perm")
        return _Value(const=np.transpose(data, None if perm is None else [int(p) for p in perm]))

    def op_Identity(self, node, a):
        return self.get(node.input[0])

    def op_Dropout(self, node, a):
        return self.get(node.input[0])  # inference: the identity (the mask output is unused)

    def op_Conv(self, node, a):
        k = self.k
        x = self.to_channels_last(self.get(node.input[0]), node)
        w = self.const(node, 1, "weight").astype(np.float32)
        b = self.optional_const(node, 2)
        if w.ndim != 4:
            raise self.unsupported(node, f"is a {w.ndim - 2}-D convolution")
        group = int(a.get("group", 1))
        strides = tuple(a.get("strides", (1, 1)))
        dilations = tuple(a.get("dilations", (1, 1)))
        out_ch, in_per_group, kh, kw = w.shape
        in_ch = int(x.tensor.shape[-1])
        if in_per_group * group != in_ch:
            raise self.unsupported(
                node, f"has weights for {in_per_group * group} input channels but gets {in_ch}"
            )
        t, padding = self.pad_for(node, a, x, (kh, kw), strides, dilations, fill="zero")
        depthwise = group > 1 and in_per_group == 1 and group == in_ch
        if depthwise:
            multiplier = out_ch // group
            layer = k.layers.DepthwiseConv2D(
                (kh, kw),
                strides=strides,
                padding=padding,
                depth_multiplier=multiplier,
                dilation_rate=dilations,
                use_bias=b is not None,
                name=self.name(node),
            )
            t = layer(t)
            # ONNX (O = C*m, 1, kh, kw), output channel c*m + j -> Keras (kh, kw, C, m).
            kernel = w.reshape(group, multiplier, kh, kw).transpose(2, 3, 0, 1)
        else:
            layer = k.layers.Conv2D(
                out_ch,
                (kh, kw),
                strides=strides,
                padding=padding,
                dilation_rate=dilations,
                groups=group,
                use_bias=b is not None,
                name=self.name(node),
            )
            t = layer(t)
            kernel = w.transpose(2, 3, 1, 0)  # (O, I/g, kh, kw) -> (kh, kw, I/g, O)
        layer.set_weights([kernel] if b is None else [kernel, b.astype(np.float32)])
        return _Value(tensor=t, channels_last=True)

    def pad_for(
        self,
        node,
        a,
        x: _Value,
        kernel,
        strides,
        dilations,
        *,
        fill: str | None,
        allow_same: bool = True,
        extra_end: bool = True,
        ceil_mode: bool = False,
    ):
        """Pad ``x`` as the ONNX node says; returns the tensor and the Keras padding.

        Uses Keras' "same" when its padding equals the node's and ``allow_same`` (no
        PAD operator in the TFLite file), else explicit padding filled with zeros
        (``fill="zero"``) or the lowest float (``"lowest"``, for a max pool) and
        "valid"; ``fill=None`` refuses explicit padding, and ``extra_end=False``
        end padding beyond the node's own (which ceil_mode can need). Padding rows no output window
        reaches are dropped (PyTorch's symmetric padding often has one); ``ceil_mode``
        adds the end padding its last window reaches.
        """
        h, w = int(x.tensor.shape[1]), int(x.tensor.shape[2])
        eff = [(kk - 1) * d + 1 for kk, d in zip(kernel, dilations, strict=True)]
        same = []
        for size, e, s in zip((h, w), eff, strides, strict=True):
            total = max((-(-size // s) - 1) * s + e - size, 0)  # TensorFlow's "same"
            same.append((total // 2, total - total // 2))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "SAME_UPPER":
            pads = same
        elif auto == "SAME_LOWER":
            pads = [(end, begin) for begin, end in same]
        elif auto == "VALID":
            pads = [(0, 0), (0, 0)]
        elif auto == "NOTSET":
            p = list(a.get("pads", (0, 0, 0, 0)))
            pads = [(p[0], p[2]), (p[1], p[3])]
        else:
            raise self.unsupported(node, f"has auto_pad={auto}")
        used = []
        for size, e, s, (pb, pe) in zip((h, w), eff, strides, pads, strict=True):
            span = size + pb + pe - e
            if span < 0:
                raise self.unsupported(node, "has a window larger than its padded input")
            out = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (out - 1) * s >= size + pb:
                out -= 1  # ONNX: the last window must start inside the input or left padding
            need = (out - 1) * s + e - size - pb  # end padding the windows actually reach
            used.append((pb, max(need, 0)))
        if all(pb == 0 and pe == 0 for pb, pe in used):
            return x.tensor, "valid"
        # TensorFlow has no "same" for a strided dilated convolution.
        dilated_strided = any(d > 1 for d in dilations) and any(s > 1 for s in strides)
        if allow_same and used == same and not dilated_strided:
            return x.tensor, "same"
        beyond = any(pe > end for (_, pe), (_, end) in zip(used, pads, strict=True))
        if fill is None or (beyond and not extra_end):
            raise self.unsupported(
                node,
                f"pads {[list(p) for p in pads]} (ceil_mode={int(ceil_mode)}, "
                f"count_include_pad={a.get('count_include_pad', 0)}) in a way Keras pooling "
                "cannot reproduce",
            )
        name = self.name(node, "pad")
        if fill == "zero":
            return self.k.layers.ZeroPadding2D(tuple(used), name=name)(x.tensor), "valid"
        return self.layers["OnnxMaxPoolPad"](used, name=name)(x.tensor), "valid"

    def op_Pad(self, node, a):
        x = self.get(node.input[0])
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = [int(p) for p in (a.get("pads") or self.const(node, 1, "pads"))]
        value = self.optional_const(node, 2) if len(node.input) > 2 else None
        if len(node.input) > 3 and node.input[3]:
            raise self.unsupported(node, "pads selected axes only")
        if mode != "constant" or (value is not None and float(np.max(np.abs(value))) != 0.0):
            raise self.unsupported(node, f"pads in mode {mode!r} or with a value other than 0")
        if x.rank != 4 or any(pads[i] for i in (0, 1, 4, 5)):
            raise self.unsupported(node, f"pads {pads} (only H and W of a 4-D tensor)")
        if any(p < 0 for p in pads):
            raise self.unsupported(node, f"crops ({pads})")
        x = self.to_channels_last(x, node)
        t = self.k.layers.ZeroPadding2D(
            ((pads[2], pads[6]), (pads[3], pads[7])), name=self.name(node)
        )(x.tensor)
        return replace(x, tensor=t)

    def _pool_args(self, node, a):
        kernel = tuple(a["kernel_shape"])
        if len(kernel) != 2:
            raise self.unsupported(node, f"pools over {len(kernel)} dimensions")
        dilations = tuple(a.get("dilations", (1, 1)))
        if any(d != 1 for d in dilations):
            raise self.unsupported(node, f"has dilations {dilations}")
        return kernel, tuple(a.get("strides", (1, 1))), dilations, bool(a.get("ceil_mode", 0))

    def op_MaxPool(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            raise self.unsupported(node, "returns indices")
        x = self.to_channels_last(self.get(node.input[0]), node)
        kernel, strides, dilations, ceil_mode = self._pool_args(node, a)
        # Zero padding is a max pool's -inf padding when no input is negative.
        fill = "zero" if x.nonneg else "lowest"
        t, padding = self.pad_for(
            node, a, x, kernel, strides, dilations, fill=fill, ceil_mode=ceil_mode
        )
        t = self.k.layers.MaxPooling2D(kernel, strides, padding=padding, name=self.name(node))(t)
        return _Value(tensor=t, channels_last=True, nonneg=x.nonneg)

    def op_AveragePool(self, node, a):
        x = self.to_channels_last(self.get(node.input[0]), node)
        kernel, strides, dilations, ceil_mode = self._pool_args(node, a)
        # Keras' "same" average excludes the padding (count_include_pad=0); explicit zero
        # padding counts it (count_include_pad=1), except padding ceil_mode adds, which
        # ONNX never counts.
        include = bool(a.get("count_include_pad", 0))
        t, padding = self.pad_for(
            node,
            a,
            x,
            kernel,
            strides,
            dilations,
            fill="zero" if include else None,
            allow_same=not include,
            extra_end=False,
            ceil_mode=ceil_mode,
        )
        t = self.k.layers.AveragePooling2D(kernel, strides, padding=padding, name=self.name(node))(
            t
        )
        return _Value(tensor=t, channels_last=True, nonneg=x.nonneg)

    def op_GlobalAveragePool(self, node, a):
        x = self.to_channels_last(self.get(node.input[0]), node)
        t = self.k.layers.GlobalAveragePooling2D(keepdims=True, name=self.name(node))(x.tensor)
        return _Value(tensor=t, channels_last=True, nonneg=x.nonneg)

    def op_ReduceMean(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        if x.is_const:
            raise self.unsupported(node, "reduces a constant")
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = self.const(node, 1, "axes").tolist()
        keepdims = bool(a.get("keepdims", 1))
        rank = x.rank
        if axes is None:
            raise self.unsupported(node, "reduces over all axes")
        axes = sorted(int(ax) % rank for ax in axes)
        if rank == 4 and axes == [2, 3]:
            x = self.to_channels_last(x, node)
            t = self.k.layers.GlobalAveragePooling2D(keepdims=keepdims, name=self.name(node))(
                x.tensor
            )
            return _Value(tensor=t, channels_last=keepdims, nonneg=x.nonneg)
        raise self.unsupported(node, f"reduces over axes {axes} (only H and W are supported)")

    def op_Relu(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        t = self.k.layers.ReLU(name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=True)

    def op_Clip(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        low, high = a.get("min"), a.get("max")
        if len(node.input) > 1:
            lo = self.optional_const(node, 1)
            hi = self.optional_const(node, 2)
            low = None if lo is None else float(lo)
            high = None if hi is None else float(hi)
        if low == 0.0:
            t = self.k.layers.ReLU(max_value=high, name=self.name(node))(x.tensor)
        else:
            t = self.layers["OnnxClip"](low, high, name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=low is not None and low >= 0)

    def op_Tanh(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        t = self.k.layers.Activation("tanh", name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=False)

    def op_LeakyRelu(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        slope = float(a.get("alpha", 0.01))
        t = self.k.layers.LeakyReLU(negative_slope=slope, name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=False)

    def op_Softmax(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        axis = int(a.get("axis", -1)) % x.rank
        if x.channels_last:
            axis = _NCHW_TO_NHWC_AXIS[axis]
        if axis == 0:
            raise self.unsupported(node, "normalises over the batch axis")
        t = self.k.layers.Softmax(axis=axis, name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=True)

    def op_Sigmoid(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        t = self.k.layers.Activation("sigmoid", name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=True)

    def op_HardSigmoid(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
        if abs(alpha - 1.0 / 6.0) < 1e-7 and beta == 0.5:
            # PyTorch's hardsigmoid: Keras' own relu6(x + 3) / 6, so a saved rebuild of a
            # MobileNetV3 loads without this module's custom layers.
            layer = self.k.layers.Activation("hard_sigmoid", name=self.name(node))
        else:
            layer = self.layers["OnnxHardSigmoid"](alpha, beta, name=self.name(node))
        return replace(x, tensor=layer(x.tensor), nonneg=True)

    def op_HardSwish(self, node, a):
        # Keras' hard_silu is x * relu6(x + 3) / 6, ONNX's HardSwish; TFLite fuses it to
        # HARD_SWISH.
        x = self.materialise(self.get(node.input[0]), node)
        t = self.k.layers.Activation("hard_silu", name=self.name(node))(x.tensor)
        return replace(x, tensor=t, nonneg=False)

    def op_BatchNormalization(self, node, a):
        x = self.materialise(self.get(node.input[0]), node)
        if x.is_const:
            raise self.unsupported(node, "normalises a constant")
        if len(node.output) > 1 and any(node.output[1:]):
            raise self.unsupported(node, "is in training mode")
        scale, bias, mean, var = (
            self.const(node, i, w) for i, w in enumerate(("scale", "bias", "mean", "var"), start=1)
        )
        axis = -1 if x.channels_last or x.rank == 2 else 1
        layer = self.k.layers.BatchNormalization(
            axis=axis, epsilon=float(a.get("epsilon", 1e-5)), name=self.name(node)
        )
        t = layer(x.tensor)
        layer.set_weights([np.asarray(p, np.float32) for p in (scale, bias, mean, var)])
        return replace(x, tensor=t, nonneg=False)

    # element-wise with two inputs

    def _binary(self, node, op: str, keras_layer: str | None):
        a_, b_ = self.get(node.input[0]), self.get(node.input[1])
        if a_.is_const and b_.is_const:
            fn = {
                "add": np.add,
                "subtract": np.subtract,
                "multiply": np.multiply,
                "divide": np.divide,
            }[op]
            return _Value(const=fn(a_.const, b_.const))
        if a_.is_const or b_.is_const:
            x, c = (b_, a_.const) if a_.is_const else (a_, b_.const)
            x = self.materialise(x, node)
            if c.ndim > x.rank:
                raise self.unsupported(
                    node, f"broadcasts a {c.ndim}-D constant over a {x.rank}-D tensor"
                )
            value = self.const_for(c, x)
            layer = self.layers["OnnxConstantOp"](
                op, value, constant_first=a_.is_const, name=self.name(node)
            )
            nonneg = x.nonneg and op in ("multiply", "divide", "add") and bool(np.all(c >= 0))
            return replace(x, tensor=layer(x.tensor), nonneg=nonneg)
        a_, b_ = self.materialise(a_, node), self.materialise(b_, node)
        if a_.rank != b_.rank:
            raise self.unsupported(node, f"combines a {a_.rank}-D and a {b_.rank}-D tensor")
        if a_.channels_last != b_.channels_last:
            a_, b_ = self.to_channels_last(a_, node), self.to_channels_last(b_, node)
        if keras_layer is None:
            t = self.layers["OnnxDivide"](name=self.name(node))([a_.tensor, b_.tensor])
        else:
            t = getattr(self.k.layers, keras_layer)(name=self.name(node))([a_.tensor, b_.tensor])
        nonneg = a_.nonneg and b_.nonneg and op in ("add", "multiply")
        return _Value(tensor=t, channels_last=a_.channels_last, nonneg=nonneg)

    def op_Add(self, node, a):
        return self._binary(node, "add", "Add")

    def op_Sub(self, node, a):
        return self._binary(node, "subtract", "Subtract")

    def op_Mul(self, node, a):
        return self._binary(node, "multiply", "Multiply")

    def op_Div(self, node, a):
        return self._binary(node, "divide", None)

    def op_Concat(self, node, a):
        vals = [self.materialise(self.get(n), node) for n in node.input]
        if any(v.is_const for v in vals):
            if all(v.is_const for v in vals):
                return _Value(const=np.concatenate([v.const for v in vals], axis=int(a["axis"])))
            raise self.unsupported(node, "concatenates a constant with a computed tensor")
        rank = vals[0].rank
        axis = int(a["axis"]) % rank
        if any(v.channels_last for v in vals):
            vals = [self.to_channels_last(v, node) for v in vals]
            axis = _NCHW_TO_NHWC_AXIS[axis]
        if axis == 0:
            raise self.unsupported(node, "concatenates along the batch axis")
        t = self.k.layers.Concatenate(axis=axis, name=self.name(node))([v.tensor for v in vals])
        return _Value(
            tensor=t, channels_last=vals[0].channels_last, nonneg=all(v.nonneg for v in vals)
        )

    # shape

    def _flatten(self, node, x: _Value):
        x = self.materialise(x, node)
        if x.is_const:
            raise self.unsupported(node, "flattens a constant")
        k = self.k
        if x.channels_last:
            _, h, w, _ = x.tensor.shape
            if h * w == 1 or self._feeds_only_dense(node.output[0]):
                # Same order as NCHW when H = W = 1; else the dense layers after it
                # permute their weight rows (no transpose in the file).
                t = k.layers.Flatten(name=self.name(node))(x.tensor)
                src = x.tensor if h * w > 1 else None
                return _Value(tensor=t, nonneg=x.nonneg, flat_source=src)
            x = self.to_onnx_layout(x, node)
        t = k.layers.Flatten(name=self.name(node))(x.tensor) if x.rank > 2 else x.tensor
        return _Value(tensor=t, nonneg=x.nonneg)

    def _feeds_only_dense(self, name: str) -> bool:
        if name in self.outputs:
            return False
        users = self.consumers.get(name, [])
        for user in users:
            if user.op_type in ("Identity", "Dropout"):
                if not self._feeds_only_dense(user.output[0]):
                    return False
            elif user.op_type == "Gemm":
                if user.input[0] != name or _attrs(user).get("transA", 0):
                    return False
            elif user.op_type == "MatMul":
                if user.input[0] != name:
                    return False
            else:
                return False
        return bool(users)

    def op_Flatten(self, node, a):
        x = self.get(node.input[0])
        axis = int(a.get("axis", 1)) % max(x.rank, 1)
        if axis != 1:
            raise self.unsupported(node, f"flattens from axis {axis} (only axis 1 is supported)")
        return self._flatten(node, x)

    def op_Reshape(self, node, a):
        x = self.get(node.input[0])
        shape = [int(d) for d in self.const(node, 1, "target shape")]
        if x.is_const:
            if not a.get("allowzero", 0):  # 0 copies the input's dimension
                shape = [x.const.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return _Value(const=x.const.reshape(shape))
        dims = x.onnx_shape()
        rest = int(np.prod(dims[1:]))
        # (N, -1), (0, -1), (N, C*H*W) and, for a batch of one, (1, -1): a Flatten.
        if (
            len(shape) == 2
            and shape[0] in (0, -1, 1, _BATCH)
            and shape[1] in (-1, rest)
            and (shape[0] != -1 or shape[1] == rest)
        ):
            return self._flatten(node, x)
        shown = ["N" if d == _BATCH else d for d in shape]
        raise self.unsupported(node, f"reshapes {list(dims)} to {shown} (only to (N, -1))")

    # dense

    def _dense(self, node, x: _Value, kernel: np.ndarray, bias: np.ndarray | None):
        """``x @ kernel + bias`` with ``kernel`` (in, out), the rows permuted for a flat input
        held in NHWC order."""
        if x.is_const:
            raise self.unsupported(node, "multiplies two constants")
        if x.rank != 2:
            raise self.unsupported(node, f"multiplies a {x.rank}-D tensor")
        if x.flat_source is not None:
            h, w, c = (int(d) for d in x.flat_source.shape[1:])
            # Keras flat index (h, w, c) holds ONNX flat index (c, h, w).
            order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
            kernel = kernel[order]
        layer = self.k.layers.Dense(
            kernel.shape[1], use_bias=bias is not None, name=self.name(node)
        )
        t = layer(x.tensor)
        weights = [kernel.astype(np.float32)]
        if bias is not None:
            weights.append(np.broadcast_to(bias, (kernel.shape[1],)).astype(np.float32))
        layer.set_weights(weights)
        return _Value(tensor=t)

    def op_Gemm(self, node, a):
        x = self.get(node.input[0])
        if a.get("transA", 0):
            raise self.unsupported(node, "has transA=1")
        w = self.const(node, 1, "weight").astype(np.float64)
        if a.get("transB", 0):
            w = w.T
        c = self.optional_const(node, 2)
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if c is not None and c.ndim == 2 and c.shape[0] != 1:
            raise self.unsupported(node, f"adds a bias of shape {list(c.shape)}")
        bias = None if c is None else beta * np.asarray(c, np.float64).reshape(-1)
        return self._dense(node, x, alpha * w, bias)

    def op_MatMul(self, node, a):
        x = self.get(node.input[0])
        w = self.const(node, 1, "weight")
        if w.ndim != 2:
            raise self.unsupported(node, f"multiplies by a {w.ndim}-D weight")
        return self._dense(node, x, w, None)


@dataclass
class _GraphOutput:
    """Stands in for a node where a graph output needs a layer of its own (the Permute
    back to NCHW): names the layer and the output in messages."""

    name: str
    op_type: str = "output"


def onnx_to_keras(path: str | os.PathLike):
    """A Keras model computing the same function as the ONNX file at ``path``.

    The Keras model keeps the file's input and output layout (see the module
    docstring): an NCHW ONNX model gives a Keras model taking NCHW inputs, channels-last
    inside, with the file's output shape.

    Raises:
        WorkbenchError: a missing or unreadable file, more than one input, an input with
            a dynamic dimension other than the batch, or operators the rebuild does not
            support (all of them named at once).
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise WorkbenchError(f"{p} does not exist", "check the path of the ONNX file")
    try:
        proto = onnx.load(str(p))
    except Exception as e:  # onnx raises DecodeError and others
        detail = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)
        raise WorkbenchError(
            f"{p.name} is not a readable ONNX file ({detail[:200]})",
            "export the model again with torch.onnx.export",
        ) from e
    graph = proto.graph
    unknown = sorted({n.op_type for n in graph.node} - set(SUPPORTED_OPS))
    foreign = sorted({n.domain for n in graph.node if n.domain not in ("", "ai.onnx")})
    if unknown or foreign:
        what = ", ".join(unknown) if unknown else "operators of domain " + ", ".join(foreign)
        raise WorkbenchError(
            f"{p.name} uses ONNX operators the ONNX -> Keras rebuild (the PyTorch -> TFLite "
            f"route) does not support: {what}",
            "measure this model in ONNX Runtime (runtime onnxruntime), or replace those "
            "operators; supported: " + ", ".join(SUPPORTED_OPS),
        )
    return _Builder(graph, p).build()


def keras_for(model, module, workdir: str | os.PathLike):
    """The Keras model a TFLite export of ``model`` converts.

    ``module`` itself when it is a Keras model; a torch module (e.g. a pruned variant)
    is exported to ONNX in ``workdir`` and rebuilt with :func:`onnx_to_keras`; when
    ``module`` is None, the model's own Keras model (``model.keras_model``) or else its
    ONNX file (``model.onnx_path``) rebuilt.

    Raises:
        WorkbenchError: nothing to convert (no module, Keras model or ONNX file), or
            the ONNX rebuild failed (unsupported operators).
    """
    k = keras()
    if isinstance(module, k.Model):
        return module
    if module is not None:
        import torch

        if not isinstance(module, torch.nn.Module):
            raise WorkbenchError(
                f"cannot convert a {type(module).__name__} to Keras",
                "pass a torch.nn.Module or a Keras model",
            )
        from workbench.onnx_export import export_onnx

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        report = export_onnx(module, tuple(model.input_shape), workdir / _SOURCE_ONNX)
        return onnx_to_keras(report.path)
    keras_model = getattr(model, "keras_model", None)
    if keras_model is not None:
        return keras_model
    onnx_path = getattr(model, "onnx_path", None)
    if onnx_path is not None:
        return onnx_to_keras(onnx_path)
    raise WorkbenchError(
        f"{getattr(model, 'name', 'the model')} has no module, Keras model or ONNX file to "
        "convert to TFLite",
        "load the model through workbench.models.load_model",
    )

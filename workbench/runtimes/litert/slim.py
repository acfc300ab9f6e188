"""Re-serialize a ``.tflite`` flatbuffer without its redundant bytes; what runtimes read is unchanged.

The TFLite converter writes every vector on its own, so a full-int8 file holds one
all-zero int64 ``zero_point`` array per quantized weight and bias (8 bytes per output
channel, twice per layer), one empty buffer table per activation tensor, and each
tensor's full fused name (every TensorFlow op folded into it, under the scopes of the
export wrapper). :func:`slim_tflite` writes the same model again with:

- identical vectors and strings stored once and referenced from every table that uses
  them (flatbuffer offsets may point at one object from many places; readers follow
  offsets and never rely on an object being unique). This is most of the gain: the
  zero-point arrays of all layers with the same channel count become one array;
- activation tensors pointing at the canonical empty buffer 0, and the buffers no
  tensor or metadata entry uses any more dropped (indices renumbered);
- constant data 16-byte aligned, as the converter writes it (int32 biases must not be
  read unaligned on a microcontroller);
- tensor names per ``names`` (see ``NAME_MODES``); input and output tensors and the
  signature definitions always keep theirs: the I/O names are what a user looks up.

Not done, because a runtime would read something different: collapsing a per-channel
``zero_point`` array to one value (LiteRT's InterpreterBuilder::ParseQuantization
rejects a file whose zero_point count differs from its scale count), dropping a bias's
quantization parameters (XNNPACK delegates an int8 convolution only when its bias is
per-channel quantized), or changing any scale or weight.

A file this module cannot re-serialize faithfully (constant data stored after the
flatbuffer, external buffers) is returned unchanged.
"""

from __future__ import annotations

import os

import flatbuffers
import numpy as np

__all__ = ["DEFAULT_NAME_MODE", "NAME_MODES", "compact_names", "slim_tflite"]

# How tensor names are written:
#   "keep":    as the converter wrote them (e.g. "functional_1/model_1/conv/BiasAdd;
#              functional_1/model_1/conv/convolution;..." one segment per fused TF op);
#   "compact": the first fused op only, without the scope every inner name shares (the
#              export wrapper's); still the layer's name, so Netron stays readable;
#   "strip":   no names on inner tensors (smallest; Netron draws the same graph, its
#              sidebar shows no tensor names).
NAME_MODES = ("keep", "compact", "strip")
# The export's default. "compact" rather than "strip": the layer names cost ~1-2% of a
# tiny model's file (0.4% of digits-mobilenetv2's) and are the only link from a tensor to
# its layer in Netron's sidebar and LiteRT's tensor details; Netron's graph itself
# (operators, shapes, filter/bias) renders the same either way. "strip" is one argument away.
DEFAULT_NAME_MODE = "compact"
_DATA_ALIGNMENT = 16  # the converter's force_align on Buffer.data


class _SharingBuilder(flatbuffers.Builder):
    """A flatbuffers builder that writes each distinct scalar vector and string once.

    The generated ``...T.Pack`` methods create vectors through ``CreateNumpyVector`` and
    strings through ``CreateString``; returning the offset of an identical object
    written earlier makes every table reference the one copy.
    """

    def __init__(self, size: int):
        super().__init__(size)
        self._vectors: dict[tuple[str, bytes], int] = {}
        self._strings: dict[bytes, int] = {}

    def CreateNumpyVector(self, x: np.ndarray) -> int:  # noqa: N802 - flatbuffers' name
        if x.dtype == np.uint8:
            # Buffer data (and custom options): aligned like the converter's, not shared
            # (a constant's bytes are the model's weights; sharing them is a separate
            # question this module does not decide).
            payload = x.tobytes()
            self.StartVector(1, len(payload), _DATA_ALIGNMENT)
            self.head -= len(payload)
            self.Bytes[self.head : self.head + len(payload)] = payload
            self.vectorNumElems = len(payload)
            return self.EndVector()
        key = (x.dtype.str, x.tobytes())
        if key not in self._vectors:
            self._vectors[key] = super().CreateNumpyVector(x)
        return self._vectors[key]

    def CreateString(self, s, encoding="utf-8", errors="strict") -> int:  # noqa: N802
        key = s.encode(encoding, errors) if isinstance(s, str) else bytes(s)
        if key not in self._strings:
            self._strings[key] = super().CreateString(s, encoding, errors)
        return self._strings[key]


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _faithful(model) -> bool:
    """Whether the object tree holds everything the file does (no data outside it)."""
    if any(int(b.offset or 0) > 1 or int(b.size or 0) for b in model.buffers or []):
        return False
    if getattr(model, "externalBuffers", None) or getattr(model, "externalBufferGroups", None):
        return False
    return not any(
        int(getattr(t, "externalBuffer", 0) or 0)
        for sub in model.subgraphs or []
        for t in sub.tensors or []
    )


def _has_data(buffer) -> bool:
    return buffer.data is not None and len(buffer.data) > 0


def _drop_empty_buffers(model) -> None:
    """Point data-less tensors at buffer 0 and drop the buffers nothing uses."""
    buffers = model.buffers or []
    for sub in model.subgraphs or []:
        for t in sub.tensors or []:
            if 0 < t.buffer < len(buffers) and not _has_data(buffers[t.buffer]):
                t.buffer = 0
    used = {0}
    used |= {int(t.buffer) for sub in model.subgraphs or [] for t in sub.tensors or []}
    used |= {int(m.buffer) for m in model.metadata or []}
    used |= {int(i) for i in (model.metadataBuffer if model.metadataBuffer is not None else [])}
    order = [i for i in range(len(buffers)) if i in used]
    new_index = {old: new for new, old in enumerate(order)}
    model.buffers = [buffers[i] for i in order]
    for sub in model.subgraphs or []:
        for t in sub.tensors or []:
            t.buffer = new_index[int(t.buffer)]
    for m in model.metadata or []:
        m.buffer = new_index[int(m.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = np.asarray(
            [new_index[int(i)] for i in model.metadataBuffer], dtype=np.int32
        )


def _io_tensors(model, sub_index: int, sub) -> set[int]:
    keep = {int(i) for i in (sub.inputs if sub.inputs is not None else [])}
    keep |= {int(i) for i in (sub.outputs if sub.outputs is not None else [])}
    for sig in model.signatureDefs or []:
        if int(sig.subgraphIndex) == sub_index:
            keep |= {int(m.tensorIndex) for m in [*(sig.inputs or []), *(sig.outputs or [])]}
    return keep


def compact_names(names: list[str]) -> list[str]:
    """Each name's first fused op, without the scope all of them share; unique.

    ``"wrap_1/model_1/conv/Relu;wrap_1/model_1/conv/BiasAdd"`` becomes ``"conv/Relu"``
    when every name starts with ``"wrap_1/model_1/"``; a name seen already gets a
    ``_2``, ``_3``... suffix.
    """
    firsts = [n.split(";", 1)[0] for n in names]
    scoped = [n for n in firsts if "/" in n]
    prefix = os.path.commonprefix(scoped) if len(scoped) > 1 else ""
    prefix = prefix[: prefix.rfind("/") + 1]
    out: list[str] = []
    seen: set[str] = set()
    for n in firsts:
        short = n[len(prefix) :] if prefix and n.startswith(prefix) else n
        name, k = short, 1
        while name in seen:
            k += 1
            name = f"{short}_{k}"
        seen.add(name)
        out.append(name)
    return out


def _rename(model, names: str) -> None:
    for index, sub in enumerate(model.subgraphs or []):
        keep = _io_tensors(model, index, sub)
        inner = [i for i, t in enumerate(sub.tensors or []) if i not in keep and t.name]
        if names == "strip":
            for i in inner:
                sub.tensors[i].name = None
            continue
        old = [sub.tensors[i].name.decode("utf-8", "replace") for i in inner]
        reserved = {
            t.name.decode("utf-8", "replace")
            for i, t in enumerate(sub.tensors)
            if i in keep and t.name
        }
        new = compact_names(old)
        for i, name in zip(inner, new, strict=True):
            while name in reserved:  # never take an input's or output's name
                name += "_"
            sub.tensors[i].name = name.encode()


def slim_tflite(data: bytes, *, names: str = DEFAULT_NAME_MODE) -> bytes:
    """The ``.tflite`` bytes ``data`` re-serialized without redundancy (module docstring).

    Args:
        names: one of ``NAME_MODES``: how inner tensors' names are written.

    Returns ``data`` unchanged when the file keeps constant data outside the flatbuffer.
    """
    if names not in NAME_MODES:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(
            f"unknown tensor-name mode {names!r}", f"use one of: {', '.join(NAME_MODES)}"
        )
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    if not _faithful(model):
        return bytes(data)
    _drop_empty_buffers(model)
    if names != "keep":
        _rename(model, names)
    builder = _SharingBuilder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

"""Where the bytes of a ``.tflite`` file go: every byte of the flatbuffer put in one category.

The file is walked at the byte level (tables, vtables, vectors, strings, as the TFLite
schema lays them out), so the categories add up to the file size exactly: what no
object claims is alignment padding (zero bytes) or, if anything non-zero is left,
``unattributed`` (a part of the schema this walker does not itemize, e.g. the vectors
inside the few builtin-option tables that have any). No TensorFlow import.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["FOOTPRINT_CATEGORIES", "Footprint", "footprint"]

# Category -> what it holds. The order is the order of the breakdown.
FOOTPRINT_CATEGORIES = {
    "constants": "constant tensor data: weights, biases, other constant inputs",
    "buffer_entries": "the buffer list: one table per buffer, empty ones included",
    "scale": "quantization scales (float32 per tensor or per channel)",
    "zero_point": "quantization zero points (int64 per tensor or per channel)",
    "min_max": "the converter's optional float min/max ranges (no kernel reads them)",
    "quantization_tables": "the quantization parameter tables themselves",
    "names": "tensor and subgraph names",
    "tensors": "tensor tables: type, shape, shape signature, buffer index",
    "operators": "operator tables, their inputs/outputs and options, operator codes",
    "signature_defs": "signature definitions (input/output names of the model's signature)",
    "metadata": "metadata entries and their buffers (runtime version, conversion metadata)",
    "model": "the header, model and subgraph tables, I/O index lists, description",
    "unreferenced": "buffer data that no tensor and no metadata entry uses",
    "padding": "alignment padding (zero bytes between objects)",
    "unattributed": "non-zero bytes of schema parts not itemized here",
}

# Field slots of the TFLite schema (schema.fbs field order), for the tables walked.
_MODEL = {"operator_codes": 1, "subgraphs": 2, "description": 3, "buffers": 4,
          "metadata_buffer": 5, "metadata": 6, "signature_defs": 7}  # fmt: skip
_SUBGRAPH = {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
_TENSOR = {"shape": 0, "buffer": 2, "name": 3, "quantization": 4, "shape_signature": 7}
_QUANT = {"min": 0, "max": 1, "scale": 2, "zero_point": 3, "details": 5}
_OPERATOR = {"inputs": 1, "outputs": 2, "builtin_options": 4, "custom_options": 5,
             "mutating_variable_inputs": 7, "intermediates": 8, "builtin_options_2": 12}  # fmt: skip
_BUFFER = {"data": 0}
_METADATA = {"name": 0, "buffer": 1}
_SIGNATURE = {"inputs": 0, "outputs": 1, "signature_key": 2}
_TENSOR_MAP = {"name": 0}
# Element sizes of the scalar vectors walked.
_ELEM = {"shape": 4, "shape_signature": 4, "inputs": 4, "outputs": 4, "intermediates": 4,
         "metadata_buffer": 4, "min": 4, "max": 4, "scale": 4, "zero_point": 8,
         "custom_options": 1, "mutating_variable_inputs": 1, "data": 1}  # fmt: skip


@dataclass(frozen=True)
class Footprint:
    """Bytes per category (see ``FOOTPRINT_CATEGORIES``) of one file; they sum to ``total``."""

    total: int
    categories: dict[str, int]

    def line(self) -> str:
        """One printable line: each non-empty category with its bytes and share."""
        parts = [f"{k} {v} B ({v / self.total:.1%})" for k, v in self.categories.items() if v]
        return f"{self.total} B = " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {"total": self.total, "categories": dict(self.categories)}


class _Walk:
    """Marks each byte of the flatbuffer with the category of the object that holds it."""

    def __init__(self, data: bytes):
        self.data = data
        self.codes = {name: i + 1 for i, name in enumerate(FOOTPRINT_CATEGORIES)}
        self.owner = np.zeros(len(data), dtype=np.uint8)  # 0: not claimed yet

    def mark(self, start: int, length: int, category: str) -> None:
        if start < 0 or length < 0 or start + length > len(self.data):
            raise ValueError(f"object at {start}+{length} lies outside the file")
        region = self.owner[start : start + length]
        region[region == 0] = self.codes[category]  # shared vtables: first claim wins

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def table(self, pos: int, category: str) -> dict[int, int]:
        """Mark a table and its vtable; return field index -> absolute field position."""
        vtable = pos - struct.unpack_from("<i", self.data, pos)[0]
        vt_size, inline_size = struct.unpack_from("<HH", self.data, vtable)
        self.mark(vtable, vt_size, category)
        self.mark(pos, inline_size, category)
        fields = {}
        for i in range((vt_size - 4) // 2):
            off = struct.unpack_from("<H", self.data, vtable + 4 + 2 * i)[0]
            if off:
                fields[i] = pos + off
        return fields

    def target(self, field_pos: int) -> int:
        return field_pos + self.u32(field_pos)

    def vector(self, field_pos: int, elem: int, category: str) -> tuple[int, int]:
        """Mark a vector of scalars (length prefix included); return (start, length)."""
        v = self.target(field_pos)
        n = self.u32(v)
        self.mark(v, 4 + n * elem, category)
        return v + 4, n

    def string(self, field_pos: int, category: str) -> None:
        v = self.target(field_pos)
        self.mark(v, 4 + self.u32(v) + 1, category)  # length prefix, bytes, terminator

    def tables(self, field_pos: int, category: str) -> list[int]:
        """Mark a vector of tables' offsets; return the tables' positions."""
        start, n = self.vector(field_pos, 4, category)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(n)]


def _walk_options(w: _Walk, pos: int) -> None:
    # A builtin-options table: its inline fields are scalars except in the few option
    # types with vectors (e.g. ReshapeOptions.new_shape), which stay unattributed.
    w.table(pos, "operators")


def footprint(model: str | os.PathLike | bytes) -> Footprint:
    """Bytes per category of a ``.tflite`` file (a path or its bytes); they sum to its size.

    Raises:
        WorkbenchError: the file is not a TFLite flatbuffer or is corrupt.
    """
    data = Path(model).read_bytes() if not isinstance(model, bytes | bytearray) else bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WorkbenchError(
            "not a TFLite model (no 'TFL3' flatbuffer identifier)",
            "pass a .tflite file written by the TFLite converter",
        )
    w = _Walk(data)
    try:
        _walk_model(w)
    except (struct.error, ValueError, IndexError) as e:
        raise WorkbenchError(
            f"a truncated or corrupt TFLite model ({type(e).__name__}: {e})",
            "re-export the model; the file may have been cut short or altered",
        ) from e
    counts = np.bincount(w.owner, minlength=len(FOOTPRINT_CATEGORIES) + 1)
    unclaimed = w.owner == 0
    zero = np.frombuffer(data, dtype=np.uint8) == 0
    categories = {name: int(counts[code]) for name, code in w.codes.items()}
    categories["padding"] = int(np.count_nonzero(unclaimed & zero))
    categories["unattributed"] = int(np.count_nonzero(unclaimed & ~zero))
    return Footprint(total=len(data), categories=categories)


def _walk_model(w: _Walk) -> None:
    w.mark(0, 8, "model")  # root offset and file identifier
    model = w.table(w.u32(0), "model")
    for name in ("description",):
        if _MODEL[name] in model:
            w.string(model[_MODEL[name]], "model")
    if _MODEL["metadata_buffer"] in model:
        w.vector(model[_MODEL["metadata_buffer"]], 4, "metadata")
    buffers = (
        w.tables(model[_MODEL["buffers"]], "buffer_entries") if _MODEL["buffers"] in model else []
    )
    buffer_use: dict[int, str] = {}
    for pos in (
        w.tables(model[_MODEL["metadata"]], "metadata") if _MODEL["metadata"] in model else []
    ):
        f = w.table(pos, "metadata")
        if _METADATA["name"] in f:
            w.string(f[_METADATA["name"]], "metadata")
        if _METADATA["buffer"] in f:
            buffer_use[w.u32(f[_METADATA["buffer"]])] = "metadata"
    for pos in (
        w.tables(model[_MODEL["operator_codes"]], "operators")
        if _MODEL["operator_codes"] in model
        else []
    ):
        f = w.table(pos, "operators")
        if 1 in f:  # custom_code
            w.string(f[1], "operators")
    for sub_pos in (
        w.tables(model[_MODEL["subgraphs"]], "model") if _MODEL["subgraphs"] in model else []
    ):
        sub = w.table(sub_pos, "model")
        for key in ("inputs", "outputs"):
            if _SUBGRAPH[key] in sub:
                w.vector(sub[_SUBGRAPH[key]], 4, "model")
        if _SUBGRAPH["name"] in sub:
            w.string(sub[_SUBGRAPH["name"]], "names")
        if _SUBGRAPH["tensors"] in sub:
            for pos in w.tables(sub[_SUBGRAPH["tensors"]], "tensors"):
                _walk_tensor(w, pos, buffer_use)
        if _SUBGRAPH["operators"] in sub:
            for pos in w.tables(sub[_SUBGRAPH["operators"]], "operators"):
                _walk_operator(w, pos)
    for pos in (
        w.tables(model[_MODEL["signature_defs"]], "signature_defs")
        if _MODEL["signature_defs"] in model
        else []
    ):
        f = w.table(pos, "signature_defs")
        if _SIGNATURE["signature_key"] in f:
            w.string(f[_SIGNATURE["signature_key"]], "signature_defs")
        for key in ("inputs", "outputs"):
            if _SIGNATURE[key] in f:
                for tm in w.tables(f[_SIGNATURE[key]], "signature_defs"):
                    g = w.table(tm, "signature_defs")
                    if _TENSOR_MAP["name"] in g:
                        w.string(g[_TENSOR_MAP["name"]], "signature_defs")
    for index, pos in enumerate(buffers):
        f = w.table(pos, "buffer_entries")
        if _BUFFER["data"] in f:
            category = buffer_use.get(index, "unreferenced") if index else "unreferenced"
            w.vector(f[_BUFFER["data"]], 1, category)


def _walk_tensor(w: _Walk, pos: int, buffer_use: dict[int, str]) -> None:
    f = w.table(pos, "tensors")
    for key in ("shape", "shape_signature"):
        if _TENSOR[key] in f:
            w.vector(f[_TENSOR[key]], 4, "tensors")
    if _TENSOR["name"] in f:
        w.string(f[_TENSOR["name"]], "names")
    if _TENSOR["buffer"] in f:
        buffer_use.setdefault(w.u32(f[_TENSOR["buffer"]]), "constants")
    if _TENSOR["quantization"] in f:
        q = w.table(w.target(f[_TENSOR["quantization"]]), "quantization_tables")
        for key, category in (("min", "min_max"), ("max", "min_max"), ("scale", "scale"),
                              ("zero_point", "zero_point")):  # fmt: skip
            if _QUANT[key] in q:
                w.vector(q[_QUANT[key]], _ELEM[key], category)


def _walk_operator(w: _Walk, pos: int) -> None:
    f = w.table(pos, "operators")
    for key in ("inputs", "outputs", "intermediates", "custom_options", "mutating_variable_inputs"):
        if _OPERATOR[key] in f:
            w.vector(f[_OPERATOR[key]], _ELEM[key], "operators")
    for key in ("builtin_options", "builtin_options_2"):
        if _OPERATOR[key] in f:
            _walk_options(w, w.target(f[_OPERATOR[key]]))

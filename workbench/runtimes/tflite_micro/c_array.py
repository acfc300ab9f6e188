"""A ``.tflite`` as a C array for firmware: ``<name>.h`` + ``<name>.cc``, byte-identical.

The array is ``alignas(16)`` (TFLM reads the flatbuffer in place and needs its
buffers aligned) and ``const`` (the linker puts it in flash). The header declares the
array and two constants: the model's length in bytes and the tensor arena TFLM needs
for it (:func:`workbench.runtimes.tflite_micro.tensor_arena`), so firmware can write
``alignas(16) static uint8_t tensor_arena[<name>_arena_size];`` instead of guessing.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.runtimes.litert.flatbuffer import read_tflite

__all__ = ["export_c_array", "read_c_array"]

_BYTES_PER_LINE = 12
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _c_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem)
    return f"g_{name}" if not name or name[0].isdigit() else name


def export_c_array(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    arena_size: int | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>.h`` and ``<name>.cc`` holding the model at ``path``; returns both paths.

    Args:
        name: the C identifier of the array (default: the file's stem, made a valid
            identifier); the constants are ``<name>_len`` and ``<name>_arena_size``.
        arena_size: bytes of tensor arena; None finds it with ``tensor_arena`` and uses
            its ``firmware_bytes`` (that also refuses float models and operators TFLM
            lacks).

    Both files are written through temp files and renamed only when both are complete.
    """
    model = read_tflite(path)
    name = _c_name(model.path.stem) if name is None else name
    if not _IDENTIFIER.match(name):
        raise WorkbenchError(
            f"{name!r} is not a valid C identifier", "use letters, digits and _ only"
        )
    if arena_size is None:
        from workbench.runtimes.tflite_micro.runner import tensor_arena

        arena_size = tensor_arena(model.path).firmware_bytes
    if isinstance(arena_size, bool) or not isinstance(arena_size, int) or arena_size < 1:
        raise WorkbenchError(
            f"arena_size must be a whole number of bytes >= 1, got {arena_size!r}",
            "pass the firmware_bytes of tensor_arena(), or omit it to have it found",
        )
    data = model.data
    sha = hashlib.sha256(data).hexdigest()
    guard = f"{name.upper()}_H_"
    header = (
        f"// {model.path.name} as a C array, written by Edge Workbench. Do not edit.\n"
        f"// sha256 of the model: {sha}\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        "// Bytes of the model (it lives in flash).\n"
        f"constexpr unsigned int {name}_len = {len(data)};\n"
        "// Tensor arena TFLM needs for this model, found by the interpreter itself:\n"
        f"//   alignas(16) static unsigned char tensor_arena[{name}_arena_size];\n"
        f"constexpr unsigned int {name}_arena_size = {arena_size};\n\n"
        f"extern const unsigned char {name}[];\n\n#endif  // {guard}\n"
    )
    lines = [
        "  " + ", ".join(f"0x{b:02x}" for b in data[i : i + _BYTES_PER_LINE]) + ","
        for i in range(0, len(data), _BYTES_PER_LINE)
    ]
    source = (
        f"// {model.path.name} as a C array, written by Edge Workbench. Do not edit.\n"
        f'#include "{name}.h"\n\n'
        "// 16-byte aligned: TFLM reads the flatbuffer in place.\n"
        f"alignas(16) const unsigned char {name}[] = {{\n" + "\n".join(lines) + "\n};\n"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = (out / f"{name}.h", out / f"{name}.cc")
    temps = [t.with_name(f".{t.name}.{uuid.uuid4().hex}.tmp") for t in targets]
    try:
        for tmp, text in zip(temps, (header, source), strict=True):
            with open(tmp, "x", encoding="ascii") as f:
                f.write(text)
        for tmp, target in zip(temps, targets, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return targets


def read_c_array(source: str) -> bytes:
    """The bytes of the (first) array initialiser in C source written by :func:`export_c_array`."""
    match = re.search(r"\[\]\s*=\s*\{(.*?)\};", source, re.S)
    if match is None:
        raise WorkbenchError("no array initialiser found in the C source", "pass the .cc file")
    return bytes(int(tok, 16) for tok in re.findall(r"0x([0-9a-fA-F]{2})", match.group(1)))

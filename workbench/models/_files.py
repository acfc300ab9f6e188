"""User model files: ONNX, TorchScript, torch.export .pt2, state_dict, Keras and TFLite.

The format is read from the file's content (zip entries, pickle and protobuf
headers), not its suffix: ``model.pt`` may be any of three PyTorch formats.
Nothing is unpickled unless torch's weights-only unpickler accepts it (``_safety``
audits .pt2 archives, whose loader would otherwise unpickle freely). TorchScript
archives are loaded with ``torch.jit.load``, which runs the archive's TorchScript
(not Python) code, e.g. ``__setstate__`` methods: load them only from sources you
would run anyway. Keras files (``.keras``, full-model ``.h5``, SavedModel folders) load
with Keras' safe mode on, and ``.tflite`` files are read as data (see ``_keras``).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import types
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models import _keras, _safety
from workbench.models.model import Model, archive_fingerprint, file_fingerprint, weights_fingerprint

__all__ = ["FILE_SUFFIXES", "detect_format", "load_file"]

# Suffixes that mark an argument as a path rather than a registry name.
FILE_SUFFIXES = frozenset(
    ".onnx .pt .pth .pt2 .bin .ckpt .ts .jit .zip .pkl .pickle .tflite .safetensors "
    ".keras .h5 .hdf5".split()
)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SAVED_MODEL_FILE = "saved_model.pb"

_ZIP_KIND = "PyTorch, TorchScript or .pt2 archive"
_FORMATS_HELP = (
    "the workbench loads ONNX (.onnx), TorchScript (torch.jit.save), torch.export "
    "(.pt2, torch.export.save), state_dict files (torch.save(model.state_dict())), Keras "
    "(.keras, full-model .h5, SavedModel folders) and TFLite (.tflite) files"
)


def _short(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else type(e).__name__).rstrip(". ")


def _damaged(display: str, kind: str, why: BaseException | str | None = None) -> WorkbenchError:
    detail = ""
    if why is not None:
        detail = f" ({why if isinstance(why, str) else _short(why)})"
    return WorkbenchError(
        f"{display} is a damaged or truncated {kind}{detail}",
        "copy or export the file again; compare its size with the original",
    )


def _zip_kind(names: list[str]) -> str | None:
    def has(pattern: str) -> bool:
        rx = re.compile(pattern)
        return any(rx.search(n) for n in names)

    if has(r"(^|/)archive_format$"):
        return "pt2"
    if has(r"(^|/)serialized_exported_program\.json$"):
        return "pt2_legacy"
    if has(r"(^|/)code/") or has(r"(^|/)constants\.pkl$"):
        return "torchscript"
    if has(r"(^|/)data\.pkl$"):
        return "torch_save"
    return None


def detect_format(path: Path, display: str) -> str:
    """The format of the file at ``path``: "onnx", "torchscript", "pt2", "torch_save",
    "keras" (.keras zip), "keras_h5", "savedmodel" (a folder) or "tflite".

    Raises WorkbenchError for a folder that is not a SavedModel, an empty, damaged or
    unknown file.
    """
    if path.is_dir():
        if (path / _SAVED_MODEL_FILE).is_file():
            return "savedmodel"
        raise WorkbenchError(
            f"{display} is a directory, not a model file",
            f"pass the model file itself; {_FORMATS_HELP}",
        )
    size = path.stat().st_size
    if size == 0:
        raise WorkbenchError(
            f"{display} is empty (0 bytes)",
            "the save or copy did not finish: save or copy the model again",
        )
    with open(path, "rb") as f:
        head = f.read(64)
    suffix = path.suffix.lower()
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                # torch's zip reader does not check CRCs: a flipped byte in the weights
                # would load silently, so every entry is checked here.
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise _damaged(display, _ZIP_KIND, e) from None
        if bad is not None:
            raise _damaged(display, _ZIP_KIND, f"entry {bad} fails its CRC check")
        kind = _zip_kind(names)
        if kind is None and "config.json" in names and "model.weights.h5" in names:
            return "keras"  # Keras 3's .keras archive: config, metadata and weights
        if kind is None:
            raise WorkbenchError(
                f"{display} is a zip archive but not a PyTorch, TorchScript or .pt2 file",
                _FORMATS_HELP,
            )
        return kind
    if head[:1] == b"\x80":  # pickle protocol 2+: torch.save's legacy format, or any pickle
        return "torch_save"
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:8] == _HDF5_MAGIC:
        return "keras_h5"
    if suffix == ".tflite":  # no TFL3 identifier: cut short, or another format
        raise _damaged(display, "TFLite model", "no 'TFL3' flatbuffer identifier")
    if suffix == ".keras":
        raise _damaged(display, ".keras file", "a .keras file is a zip archive; this is not one")
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        raise WorkbenchError(
            f"{display} looks like a safetensors file, which the workbench does not read",
            "convert it: torch.save(safetensors.torch.load_file(path), 'weights.pt'), then "
            "load that with arch=",
        )
    # ONNX is a protobuf with no magic number; a ModelProto starts with ir_version
    # (field 1, varint: byte 0x08). The .onnx suffix alone is also accepted.
    if suffix == ".onnx" or head[:1] == b"\x08":
        return "onnx"
    raise WorkbenchError(f"{display} is not a model file the workbench recognises", _FORMATS_HELP)


def _file_meta(path: Path, fmt: str) -> dict:
    return {"file": str(path.resolve()), "format": fmt, "bytes": path.stat().st_size}


def _fixed_batch(display: str, batch: int) -> WorkbenchError:
    return WorkbenchError(
        f"{display} was exported for a fixed batch of {batch}; the workbench runs batch 1",
        "export it again with batch 1 or a dynamic batch (torch.onnx.export "
        "dynamic_axes, torch.export dynamic_shapes with torch.export.Dim)",
    )


def _need_shape(display: str, kind: str) -> WorkbenchError:
    return WorkbenchError(
        f"{display} is a {kind}, which does not record its input shape",
        "pass input_shape=(1, C, H, W) (CLI: --input-shape 1,C,H,W)",
    )


# ---------------------------------------------------------------------------------
# ONNX


def _onnx_input(graph: Any, display: str) -> Any:
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise WorkbenchError(
            f"{display} has {len(inputs)} graph inputs ({names}); the workbench handles "
            "models with one image input",
            "export the model with a single input tensor",
        )
    return inputs[0]


def _onnx_shape(
    value_info: Any, display: str, input_shape: tuple[int, ...] | None
) -> tuple[int, ...]:
    from onnx import TensorProto

    tensor_type = value_info.type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        dtype = TensorProto.DataType.Name(tensor_type.elem_type)
        raise WorkbenchError(
            f"{display} takes {dtype} input; the workbench feeds float32 images",
            "export the model with a float32 input (quantize it with the workbench instead)",
        )
    dims: list[int | None] = []
    for i, d in enumerate(tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(1 if i == 0 else None)  # a symbolic batch runs with batch 1
    if dims and dims[0] != 1:
        raise _fixed_batch(display, int(dims[0]))  # type: ignore[arg-type]
    if input_shape is not None:
        given = tuple(input_shape)
        if len(given) != len(dims) or any(
            d is not None and d != g for d, g in zip(dims, given, strict=False)
        ):
            shown = tuple("?" if d is None else d for d in dims)
            raise WorkbenchError(
                f"{display} takes input shape {shown} (? = any), not {given}",
                "drop input_shape or give one that fits the graph's input",
            )
        return given
    if any(d is None for d in dims) or not dims:
        raise WorkbenchError(
            f"{display}'s input has symbolic sizes "
            f"{[d.dim_param or '?' for d in tensor_type.shape.dim]}",
            "pass input_shape=(1, C, H, W) (CLI: --input-shape 1,C,H,W)",
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _load_onnx(path: Path, display: str, input_shape: tuple[int, ...] | None, **_: Any) -> Model:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise _damaged(display, "ONNX file", e) from None
    if not proto.graph.node and not proto.graph.input:
        raise _damaged(display, "ONNX file", "it holds no graph")
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, DecodeError, ValueError, OSError) as e:
        raise WorkbenchError(
            f"{display} is not a valid ONNX model ({_short(e)})",
            "re-export it (torch.onnx.export) and check it with onnx.checker.check_model",
        ) from None
    value_info = _onnx_input(proto.graph, display)
    shape = _onnx_shape(value_info, display, input_shape)
    # External weights live beside the file and are part of what the model is.
    external = sorted(
        {
            entry.value
            for init in proto.graph.initializer
            if init.data_location == onnx.TensorProto.EXTERNAL
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    parameters = 0
    for init in proto.graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        parameters += n
    meta = _file_meta(path, "onnx")
    meta.update(
        ir_version=int(proto.ir_version),
        opset={imp.domain or "ai.onnx": int(imp.version) for imp in proto.opset_import},
        producer=f"{proto.producer_name} {proto.producer_version}".strip(),
        input_name=value_info.name,
        output_names=[o.name for o in proto.graph.output],
        external_data=external,
        parameters=parameters,
    )
    return Model(
        name=display,
        source="onnx",
        onnx_path=path,
        input_shape=shape,
        fingerprint=file_fingerprint(path, *(path.parent / e for e in external)),
        meta=meta,
    )


# ---------------------------------------------------------------------------------
# TorchScript


def _load_torchscript(
    path: Path, display: str, input_shape: tuple[int, ...] | None, **_: Any
) -> Model:
    # TorchScript archives run their own TorchScript (not Python) code, e.g. in
    # __setstate__, when loaded: as trusted as running the model at all.
    if input_shape is None:
        raise _need_shape(display, "TorchScript archive")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation FutureWarning
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        raise _damaged(display, "TorchScript archive", e) from None
    module.eval()
    with zipfile.ZipFile(path) as z:
        fingerprint = archive_fingerprint(z)
    return Model(
        name=display,
        source="torchscript",
        module=module,
        input_shape=tuple(input_shape),
        fingerprint=fingerprint,
        meta=_file_meta(path, "torchscript"),
    )


# ---------------------------------------------------------------------------------
# torch.export .pt2

_TRAINING_OPS = {
    # op name -> index of its `training` argument (None: the op only exists in training)
    "aten.batch_norm.default": 5,
    "aten.native_batch_norm.default": 5,
    "aten._native_batch_norm_legit_functional.default": None,
    "aten.dropout.default": 2,
    "aten.feature_dropout.default": 2,
    "aten.alpha_dropout.default": 2,
    "aten.feature_alpha_dropout.default": 2,
}


def _training_ops(program: Any) -> list[str]:
    found = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if name in _TRAINING_OPS:
            index = _TRAINING_OPS[name]
            if index is None or (len(node.args) > index and node.args[index] is True):
                found.append(name)
    return sorted(set(found))


def _eval_only(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    if mode is False:
        raise NotImplementedError("a torch.export program cannot be put in training mode")
    return self


def _pt2_shape(program: Any, display: str, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise WorkbenchError(
            f"{display} takes {len(user_inputs)} inputs; the workbench handles models with "
            "one image input",
            "export the model with a single input tensor",
        )
    if input_shape is not None:
        return tuple(input_shape)
    node = next(
        n for n in program.graph.nodes if n.op == "placeholder" and n.name == user_inputs[0]
    )
    val = node.meta.get("val")
    example = None
    if program.example_inputs is not None:
        args, _kwargs = program.example_inputs
        if len(args) == 1 and isinstance(args[0], torch.Tensor):
            example = tuple(args[0].shape)
    if val is None or not hasattr(val, "shape"):
        if example is None:
            raise _need_shape(display, ".pt2 program without input metadata")
        if example[0] != 1:
            raise _fixed_batch(display, example[0])
        return example
    dims: list[int] = []
    for i, d in enumerate(val.shape):
        if isinstance(d, int) and i == 0 and d != 1:
            raise _fixed_batch(display, d)
        if isinstance(d, int):
            dims.append(d)
        elif i == 0:
            dims.append(1)  # a dynamic batch runs with batch 1
        elif example is not None:
            dims.append(int(example[i]))
        else:
            raise _need_shape(display, ".pt2 program with dynamic sizes")
    return tuple(dims)


def _load_pt2(path: Path, display: str, input_shape: tuple[int, ...] | None, **_: Any) -> Model:
    # Audit and load the same bytes, so the file cannot change in between.
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        _safety.audit_pt2(archive, display)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise _damaged(display, ".pt2 archive", e) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(data))
    except Exception as e:  # the deserializer raises many types on damaged input
        raise _damaged(display, ".pt2 archive", e) from None
    training = _training_ops(program)
    if training:
        raise WorkbenchError(
            f"{display} was exported in training mode ({', '.join(training)} run as in "
            "training), so its outputs depend on the batch and vary between runs",
            "call model.eval() before torch.export.export and save the program again",
        )
    shape = _pt2_shape(program, display, input_shape)
    # check_guards=False: the guard function is generated from code strings stored
    # in the file and exec'd; shapes are checked by the validation run instead.
    module = program.module(check_guards=False)
    # The program was verified to be in inference form above, so eval() is a no-op
    # (torch raises NotImplementedError for it, which callers cannot be expected to know).
    for sub in module.modules():
        sub.training = False
    module.eval = types.MethodType(_eval_only, module)  # type: ignore[method-assign]
    meta = _file_meta(path, "pt2")
    meta["dynamic_batch"] = _dynamic_batch(program)
    return Model(
        name=display,
        source="pt2",
        module=module,
        input_shape=shape,
        fingerprint=archive_fingerprint(archive),
        meta=meta,
    )


def _dynamic_batch(program: Any) -> bool:
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    val = node.meta.get("val")
    return bool(val is not None and val.shape and not isinstance(val.shape[0], int))


# ---------------------------------------------------------------------------------
# state_dict files (torch.save)


def _refusal(path: Path, display: str) -> WorkbenchError:
    """Why torch's weights-only unpickler refused ``path``: code, damage, or not weights."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
                scan = _safety.scan_pickles(z.read(pkl), max_pickles=1)
        else:
            scan = _safety.scan_pickles(path.read_bytes())
    except (zipfile.BadZipFile, StopIteration, OSError) as e:
        return _damaged(display, "PyTorch file", e)
    culprits = _safety.unsafe_globals(scan.globals)
    if culprits:
        return _safety.code_pickle_error(display, culprits)
    if not scan.complete:
        return _damaged(display, "PyTorch file", "the pickle stops early")
    return WorkbenchError(
        f"{display} is a Python pickle but not a file written by torch.save",
        "save the weights with torch.save(model.state_dict(), path)",
    )


def _as_state_dict(obj: Any, display: str) -> dict[str, torch.Tensor]:
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return dict(obj)
    if isinstance(obj, Mapping):
        nested = [
            k
            for k, v in obj.items()
            if isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values())
        ]
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        hint = (
            f"the weights look like they are under {nested[0]!r}: save them alone with "
            f"torch.save(checkpoint[{nested[0]!r}], path)"
            if nested
            else "save the weights alone with torch.save(model.state_dict(), path)"
        )
        raise WorkbenchError(
            f"{display} holds a dict with keys {keys}, not a state_dict (names -> tensors)",
            hint,
        )
    raise WorkbenchError(
        f"{display} holds a {type(obj).__name__}, not a state_dict (names -> tensors)",
        "save the weights with torch.save(model.state_dict(), path)",
    )


def _key_mismatch(
    display: str, arch: str, module: torch.nn.Module, state: Mapping[str, torch.Tensor]
) -> WorkbenchError | None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(
            f"missing keys {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else "")
        )
    if unexpected:
        parts.append(
            f"unexpected keys {', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else "")
        )
    if wrong:
        parts.append(f"shape mismatches (file vs arch) {', '.join(wrong[:3])}")
    prefix = next(
        (
            p
            for p in ("module.", "_orig_mod.")
            if unexpected and all(k.startswith(p) for k in unexpected)
        ),
        None,
    )
    fix = (
        f"the keys start with {prefix!r} (a DataParallel or torch.compile wrapper): save "
        "the inner model's state_dict instead"
        if prefix
        else "pass the arch the weights were trained with (run `workbench models`), or "
        "export the model to ONNX, TorchScript or .pt2, which carry their architecture"
    )
    return WorkbenchError(f"{display} does not fit arch {arch}: {'; '.join(parts)}", fix)


def _load_state_dict(
    path: Path,
    display: str,
    input_shape: tuple[int, ...] | None,
    arch: str | None = None,
    **_: Any,
) -> Model:
    from workbench.models import _sample, _torchvision

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _refusal(path, display) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise _damaged(display, "PyTorch file", e) from None
    state = _as_state_dict(obj, display)
    if arch is None:
        raise WorkbenchError(
            f"{display} holds weights only (a state_dict of {len(state)} tensors), not the "
            "architecture to put them in",
            "pass arch= a sample model name or 'torchvision:<arch>' (CLI: --arch); run "
            "`workbench models` to list them",
        )
    task = preprocessing = class_names = None
    meta = _file_meta(path, "state_dict")
    meta.update(arch=arch, tensors=len(state))
    if arch.startswith(_torchvision.PREFIX):
        tv_arch = arch[len(_torchvision.PREFIX) :]
        module = _torchvision.build_random(tv_arch)
        shape = input_shape or _torchvision.default_input_shape(tv_arch)
    elif arch in _sample.sample_names():
        # A sample's architecture fixes its task and preprocessing: these weights are
        # a variant of that sample (fine-tuned, compressed, retrained).
        sample_meta, shape, preprocessing = _sample.sample_spec(arch)
        module = _sample.build_sample_module(arch, load_weights=False)
        from workbench.data import get_task

        task = get_task(sample_meta["task"])
        class_names = tuple(str(c) for c in sample_meta.get("class_names") or task.class_names)
        shape = input_shape or shape
    else:
        from workbench.models.registry import unknown_name_error

        raise unknown_name_error(arch, what="architecture")
    mismatch = _key_mismatch(display, arch, module, state)
    if mismatch is not None:
        raise mismatch
    module.load_state_dict(state, strict=True)
    module = module.float().eval()
    return Model(
        name=display,
        source="state_dict",
        module=module,
        input_shape=tuple(shape),
        task=task,
        preprocessing=preprocessing,
        class_names=class_names,
        fingerprint=weights_fingerprint(module),
        meta=meta,
    )


def _load_pt2_legacy(path: Path, display: str, **_: Any) -> Model:
    raise WorkbenchError(
        f"{display} is a .pt2 file in the format of torch 2.7 and earlier, whose loader "
        "falls back to unpickling with code execution",
        "load the model in the torch that exported it and save it again with "
        "torch.export.save, or export it to ONNX",
    )


_KIND_NAMES = {
    "onnx": "ONNX",
    "torchscript": "TorchScript",
    "pt2": ".pt2",
    "pt2_legacy": ".pt2",
    "keras": "Keras",
    "keras_h5": "Keras .h5",
    "savedmodel": "SavedModel",
    "tflite": "TFLite",
}


def _load_keras(fmt: str) -> Callable[..., Model]:
    def load(path: Path, display: str, input_shape: tuple[int, ...] | None, **_: Any) -> Model:
        return _keras.load_keras_file(path, display, input_shape, fmt)

    return load


def _load_tflite(path: Path, display: str, input_shape: tuple[int, ...] | None, **_: Any) -> Model:
    return _keras.load_tflite_file(path, display, input_shape)


# Format -> loader; every loader takes (path, display, input_shape, arch=...).
_LOADERS: dict[str, Callable[..., Model]] = {
    "onnx": _load_onnx,
    "torchscript": _load_torchscript,
    "pt2": _load_pt2,
    "pt2_legacy": _load_pt2_legacy,
    "torch_save": _load_state_dict,
    "keras": _load_keras("keras"),
    "keras_h5": _load_keras("h5"),
    "savedmodel": _load_keras("savedmodel"),
    "tflite": _load_tflite,
}


def load_file(
    path: Path,
    display: str,
    *,
    arch: str | None,
    input_shape: tuple[int, ...] | None,
) -> Model:
    """Load the model file at ``path`` (named ``display`` in messages), by its content."""
    if not path.exists():
        raise WorkbenchError(
            f"model file {display} does not exist",
            f"check the path (relative paths start at {os.getcwd()}); run `workbench "
            "models` for the registry's names",
        )
    kind = detect_format(path, display)
    if arch is not None and kind != "torch_save":
        raise WorkbenchError(
            f"arch= applies to state_dict files only; {display} is a {_KIND_NAMES[kind]} "
            "file, which carries its architecture",
            "drop arch (CLI: --arch)",
        )
    return _LOADERS[kind](path, display, input_shape, arch=arch)

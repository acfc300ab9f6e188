"""Refuse model files that would run code when loaded, before anything unpickles them.

Two jobs:

* Explain why ``torch.load(weights_only=True)`` refused a file. Its UnpicklingError
  looks the same for a pickled ``nn.Module`` (code), a malicious pickle (code) and a
  truncated file (damage), so the pickle stream is scanned with ``pickletools``
  (which decodes opcodes and never executes them) to tell which it is.
* Audit a ``torch.export`` ``.pt2`` archive. ``torch.export.load`` unpickles pickled
  weights, constants and sample inputs with ``weights_only=False``, loads
  AOTInductor shared libraries, resolves graph call targets by attribute lookup
  under ``torch`` and feeds shape expressions to ``sympy.sympify`` (which uses
  ``eval``). Each of those can run code from the file, so the archive's entries are
  checked first and anything outside what ``torch.export.save`` writes for an
  ordinary model is refused.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import warnings
import zipfile
from dataclasses import dataclass

import torch

from workbench.errors import WorkbenchError

__all__ = [
    "PickleScan",
    "audit_pt2",
    "code_pickle_error",
    "scan_pickles",
    "unsafe_globals",
    "weights_only_loads",
]

_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
_MEMO_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
# Opcodes that push nothing onto the stack: skipped when tracking what STACK_GLOBAL pops.
_NO_PUSH_OPS = {"PROTO", "FRAME", "MEMOIZE", "STOP", "POP", "POP_MARK"} | _MEMO_PUT_OPS


@dataclass(frozen=True)
class PickleScan:
    """What a pickle stream would import, and whether every pickle in it was whole."""

    globals: tuple[str, ...]  # "module.name" for every class/function it references
    complete: bool  # False when a pickle stopped before its STOP opcode (truncated)
    pickles: int  # how many pickles were read


def scan_pickles(data: bytes, max_pickles: int = 5) -> PickleScan:
    """Scan up to ``max_pickles`` consecutive pickles in ``data`` without executing them.

    The legacy (non-zip) ``torch.save`` format is five pickles in a row followed by
    raw tensor bytes, hence several.
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    count = 0
    while count < max_pickles and stream.tell() < len(data):
        memo: dict[int, object] = {}
        recent: list[object] = []  # values pushed, approximately: enough to name globals
        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", ".", 1))
                elif name == "STACK_GLOBAL":
                    module, attr = recent[-2:] if len(recent) >= 2 else (None, None)
                    named = isinstance(module, str) and isinstance(attr, str)
                    found.append(f"{module}.{attr}" if named else "<unnamed global>")
                if name in _STRING_OPS:
                    recent.append(arg)
                elif name == "MEMOIZE":
                    memo[len(memo)] = recent[-1] if recent else None
                elif name in _MEMO_PUT_OPS:
                    memo[int(arg)] = recent[-1] if recent else None
                elif name in _MEMO_GET_OPS:
                    recent.append(memo.get(int(arg)))
                elif name not in _NO_PUSH_OPS:
                    recent.append(None)
        except (ValueError, EOFError, pickle.UnpicklingError):
            return PickleScan(_names(found), complete=False, pickles=count)
        count += 1
        if data[stream.tell() : stream.tell() + 1] != b"\x80":
            break  # what follows is not another protocol-2+ pickle (raw storages)
    return PickleScan(_names(found), complete=True, pickles=count)


def _names(found: list[str]) -> tuple[str, ...]:
    # Protocol-2 pickles spell builtins the Python 2 way; torch's allowlist does not.
    return tuple(dict.fromkeys(n.replace("__builtin__.", "builtins.", 1) for n in found))


def _allowed_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except ImportError:  # a private helper: naming the culprits is a nicety only
        allowed = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"}
    for obj in torch.serialization.get_safe_globals():
        obj = obj[0] if isinstance(obj, tuple) else obj
        allowed.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}")
    return allowed


def unsafe_globals(names: tuple[str, ...] | list[str]) -> list[str]:
    """The names torch's weights-only unpickler would refuse to import."""
    allowed = _allowed_globals()
    return [n for n in names if n not in allowed and not n.endswith("Storage")]


def code_pickle_error(display: str, culprits: list[str]) -> WorkbenchError:
    """The error for a file whose pickle would run code when loaded."""
    named = f" ({', '.join(culprits[:3])})" if culprits else ""
    return WorkbenchError(
        f"{display}: refusing to unpickle: the file contains Python objects{named} that "
        "would run code when loaded, so it is not a plain weights file (a model saved "
        "with torch.save(model) is such a file)",
        "save only the weights, torch.save(model.state_dict(), path), and load them with "
        "arch= (CLI: --arch); or export the model to ONNX (torch.onnx.export), "
        "TorchScript (torch.jit.save) or .pt2 (torch.export.save)",
    )


def weights_only_loads(payload: bytes) -> bool:
    """True when ``payload`` (a torch.save file) loads with ``weights_only=True``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:  # any refusal or damage: not loadable without running code
        return False
    return True


# ---------------------------------------------------------------------------------
# .pt2 archives

# What torch.export's graphs call: registered operators, Python's arithmetic and
# symbolic-shape helpers. Anything else was put there by hand.
_OPERATOR_TARGETS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ "
    "or_ xor not_ invert inv lshift rshift matmul index truth is_ is_not contains".split()
)
_TORCH_OPS_TARGET = re.compile(r"torch\.ops\.([a-z_][a-z0-9_]*)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?")
_SYM_TARGET = re.compile(r"torch\._?sym_[a-z_]+")
_MATH_TARGET = re.compile(r"math\.[a-z][a-z0-9_]*")

# Shape expressions are sympy srepr strings such as
# "FloorDiv(Symbol('s77', positive=True, integer=True), Integer(2))". sympify evaluates
# them, so every token must be a known constructor, a symbol name or a number.
_EXPR_CHARS = re.compile(r"[A-Za-z0-9_+\-*/%(),.<>=!&|~^ ]*")
_EXPR_SYMBOL = re.compile(r"[a-z]{1,4}[0-9]+")
_EXPR_QUOTED = re.compile(r"[a-z]{1,4}[0-9]+|[-+0-9.eE]+")  # 'symbol' or 'number'
_EXPR_NAMES = frozenset(
    # torch.utils._sympy.functions, as torch's deserializer names them
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv "
    "LShift RShift PowByNatural FloatPow FloatTrueDiv IntTrueDiv "
    "IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt RoundDecimal "
    "ToFloat Identity "
    # sympy core constructors and constants that srepr writes
    "Symbol Integer Float Rational Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge "
    "StrictLessThan StrictGreaterThan LessThan GreaterThan Equality Unequality And Or Not "
    "BooleanTrue BooleanFalse true false True False oo zoo nan Half One Zero NegativeOne "
    "Infinity NegativeInfinity Piecewise ExprCondPair "
    # Symbol assumptions and Float precision, as keyword arguments
    "positive negative nonnegative nonpositive integer real finite zero nonzero odd even "
    "precision".split()
)


def _target_allowed(target: str) -> bool:
    if "__" in target:
        return False
    if m := _TORCH_OPS_TARGET.fullmatch(target):
        # torch.ops' own methods (load_library, import_module) load code.
        return m.group(1) not in dir(type(torch.ops))
    if target.startswith("_operator."):
        return target.removeprefix("_operator.") in _OPERATOR_TARGETS
    return bool(_SYM_TARGET.fullmatch(target) or _MATH_TARGET.fullmatch(target))


def _expr_allowed(expr: str) -> bool:
    if not all(_EXPR_QUOTED.fullmatch(q) for q in re.findall(r"'([^']*)'", expr)):
        return False
    bare = re.sub(r"'[^']*'", "0", expr)
    if not _EXPR_CHARS.fullmatch(bare) or re.search(r"\.[^0-9]", bare):
        return False  # quotes left unpaired, brackets, attribute access...
    return all(
        _EXPR_SYMBOL.fullmatch(ident) or ident in _EXPR_NAMES
        for ident in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", bare)
    )


def _walk_program(obj: object, targets: list[str], exprs: list[str]) -> None:
    if isinstance(obj, dict):
        # A graph node: {"target": ..., "inputs": [...], "outputs": [...], ...}
        if isinstance(obj.get("target"), str) and "inputs" in obj and "outputs" in obj:
            targets.append(obj["target"])
        if isinstance(obj.get("expr_str"), str):
            exprs.append(obj["expr_str"])
        for value in obj.values():
            _walk_program(value, targets, exprs)
    elif isinstance(obj, list):
        for value in obj:
            _walk_program(value, targets, exprs)


def _refuse_pt2(display: str, what: str) -> WorkbenchError:
    return WorkbenchError(
        f"{display}: refusing to load this .pt2 archive: {what}, which would run code "
        "when loaded; torch.export.save writes none of this for an ordinary model",
        "re-export the model with torch.export.export + torch.export.save in an "
        "environment you trust, or export it to ONNX",
    )


def audit_pt2(archive: zipfile.ZipFile, display: str) -> None:
    """Raise WorkbenchError unless ``archive`` holds only what a plain export writes.

    Args:
        archive: the opened .pt2 zip (opened on the same bytes that will be loaded).
        display: how to name the file in messages.
    """
    names = [n for n in archive.namelist() if not n.endswith("/")]
    root = next((n[: -len("archive_format")] for n in names if n.endswith("archive_format")), "")
    inner = {n[len(root) :]: n for n in names if n.startswith(root)}

    if any(k.startswith("data/aotinductor/") for k in inner):
        raise _refuse_pt2(display, "it contains AOTInductor compiled code (a shared library)")

    def check_pickled(key: str) -> None:
        payload = archive.read(inner[key])
        if not weights_only_loads(payload):
            culprits = _payload_globals(payload)
            raise _refuse_pt2(
                display,
                f"its entry {key} is a pickle with Python objects"
                + (f" ({', '.join(culprits[:3])})" if culprits else ""),
            )

    for key in sorted(inner):
        if key.endswith("_weights_config.json") or key.endswith("_constants_config.json"):
            folder = key.rsplit("/", 1)[0] + "/"
            try:
                config = json.loads(archive.read(inner[key]))["config"]
            except (ValueError, KeyError, TypeError):
                raise _refuse_pt2(display, f"its entry {key} is not valid JSON") from None
            for payload_meta in config.values():
                path_name = str(payload_meta.get("path_name", ""))
                if path_name.startswith("opaque_obj_"):
                    raise _refuse_pt2(display, f"its constant {path_name} is a plain pickle")
                if payload_meta.get("use_pickle") and folder + path_name in inner:
                    check_pickled(folder + path_name)
        elif key.endswith(".pt") and key.startswith(("data/", "serialized_")):
            # Sample inputs and legacy weight/constant files: torch falls back to
            # weights_only=False on them when the safe load fails.
            check_pickled(key)

    for key in sorted(k for k in inner if k.startswith("models/") and k.endswith(".json")):
        try:
            program = json.loads(archive.read(inner[key]))
        except ValueError:
            raise _refuse_pt2(display, f"its program {key} is not valid JSON") from None
        targets: list[str] = []
        exprs: list[str] = []
        _walk_program(program, targets, exprs)
        bad = [t for t in dict.fromkeys(targets) if not _target_allowed(t)]
        if bad:
            raise _refuse_pt2(display, f"its graph calls {', '.join(bad[:3])}")
        bad = [e for e in dict.fromkeys(exprs) if not _expr_allowed(e)]
        if bad:
            raise _refuse_pt2(display, f"its shape expressions include {bad[0][:60]!r}")


def _payload_globals(payload: bytes) -> list[str]:
    """Unsafe globals named in a torch.save payload (zip or legacy), for messages."""
    data = payload
    if payload[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as z:
                pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
                data = z.read(pkl)
        except (zipfile.BadZipFile, StopIteration):
            return []
    return unsafe_globals(scan_pickles(data).globals)

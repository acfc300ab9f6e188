"""Which model files the graph view may serve, shared by kernel and server.

The kernel registers a model file; the Jupyter/Voila server, another process, serves
it. A registration is one small JSON file named by the sha256 of the model's bytes,
in a private folder (``$EDGE_WORKBENCH_NETRON_REGISTRY``, else
``<jupyter runtime dir>/edge-workbench-netron``). The server serves only files
listed in an entry, and only while their bytes still hash to what was registered,
so a URL can never reach an arbitrary path.

This module must not import ipywidgets, tornado or torch: both sides import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "BASE_URL_ENV",
    "REGISTRY_ENV",
    "ROUTE",
    "RegisteredModel",
    "lookup_model_file",
    "register_model",
    "registry_dir",
    "server_base_url",
    "viewer_url",
]

REGISTRY_ENV = "EDGE_WORKBENCH_NETRON_REGISTRY"
# Set by our server extension / app launcher; kernels inherit it from the server.
BASE_URL_ENV = "EDGE_WORKBENCH_BASE_URL"
ROUTE = "edge-workbench/netron/"

_TOKEN = re.compile(r"^[0-9a-f]{64}$")
# Served names are plain file names: no separators, no "..", nothing hidden.
_SERVED_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}$")


@dataclass(frozen=True)
class RegisteredModel:
    """A model file the graph view may serve.

    Attributes:
        token: sha256 of the model file's bytes; names the registration.
        name: the file name Netron sees (its extension tells Netron the format).
        path: the model file.
        files: served name -> (absolute path, sha256), the model and any ONNX
            external-data files beside it.
    """

    token: str
    name: str
    path: Path
    files: dict[str, tuple[str, str]] = field(default_factory=dict)


def registry_dir() -> Path:
    """The registry folder shared by kernel and server."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env)
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / "edge-workbench-netron"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _onnx_external_data(path: Path) -> list[str]:
    """Names of the external-data files an ONNX model points to (none for most files)."""
    try:
        import onnx
    except ImportError:  # without onnx we cannot tell; Netron shows the graph anyway
        return []
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not parseable here: let Netron report what is wrong with it
        return []
    names: set[str] = set()
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    names.add(entry.value)
    return sorted(names)


def _served_name(filename: str) -> str:
    """``filename`` made safe for a URL path segment, keeping its extension."""
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", filename)
    if not name[:1].isalnum():
        name = "model" + name
    return name if len(name) <= 200 else "model" + Path(name).suffix[:100]


def register_model(path: str | Path) -> RegisteredModel:
    """Register a model file so the graph server may serve it; returns its registration.

    Raises:
        WorkbenchError: the file is missing, not a regular file, or unreadable.
    """
    # Imported here, not at the top: the Jupyter server imports this module too, and
    # importing the workbench package there would load torch into the server.
    from workbench.errors import WorkbenchError

    p = Path(path).expanduser()
    if not p.exists():
        raise WorkbenchError(
            f"model file {str(p)!r} does not exist",
            "choose an existing .onnx, .tflite (or other model) file",
        )
    if not p.is_file():
        raise WorkbenchError(f"{str(p)!r} is not a file", "choose a model file, not a folder")
    p = p.resolve()
    try:
        token = _sha256(p)
    except OSError as e:
        raise WorkbenchError(
            f"cannot read model file {str(p)!r} ({e.strerror or e})",
            "check the file's permissions",
        ) from e
    name = _served_name(p.name)
    files = {name: (str(p), token)}
    if p.suffix.lower() == ".onnx":
        for location in _onnx_external_data(p):
            sidecar = (p.parent / location).resolve()
            # Only plain files beside the model: a location may not climb out.
            if _SERVED_NAME.match(location) and sidecar.parent == p.parent and sidecar.is_file():
                files[location] = (str(sidecar), _sha256(sidecar))
    model = RegisteredModel(token=token, name=name, path=p, files=files)
    try:
        _write_entry(model)
    except OSError as e:
        raise WorkbenchError(
            f"cannot write the graph view's registry in {str(registry_dir())!r} "
            f"({e.strerror or e})",
            f"make that folder writable, or point ${REGISTRY_ENV} at one that is",
        ) from e
    return model


def _write_entry(model: RegisteredModel) -> None:
    folder = registry_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry = {"token": model.token, "name": model.name, "files": model.files}
    # Written to a temp file and renamed, so the server never reads half an entry.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".entry-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, folder / f"{model.token}.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lookup_model_file(token: str, name: str) -> tuple[Path, str] | None:
    """The (path, sha256) registered under ``token`` for served ``name``; else None."""
    if not _TOKEN.match(token) or not _SERVED_NAME.match(name):
        return None
    try:
        entry = json.loads((registry_dir() / f"{token}.json").read_text())
        path, digest = entry["files"][name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(path), str(digest)


def server_base_url() -> str | None:
    """The serving Jupyter/Voila server's base URL, or None if it does not serve the view.

    Our server extension and app launcher export it to the kernels they start.
    """
    url = os.environ.get(BASE_URL_ENV)
    if not url:
        return None
    return url if url.endswith("/") else url + "/"


def viewer_url(model: RegisteredModel, base_url: str = "/") -> str:
    """The iframe ``src`` showing ``model``: a path from the server root."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    model_path = f"model/{model.token}/{quote(model.name)}"
    # Netron's browser host opens the model named by ``?url=``, relative to its page.
    return f"{base}{ROUTE}index.html?url={quote(model_path, safe='/')}"

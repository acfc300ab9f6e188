"""Exports offered as browser downloads, served by the page's own server (any size).

The kernel zips an export folder into a private downloads folder beside the graph
view's registry and records it under a random token; the Jupyter/Voila server (another
process) serves ``edge-workbench/download/<token>/<name>.zip`` from that folder only.
A URL names a token, never a path, so nothing but a zip the workbench made can be
served.

Like :mod:`.registry`, this module must not import tornado, ipywidgets or torch: the
kernel and the server both import it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import quote

from widgets.netron_server.registry import registry_dir

__all__ = [
    "DOWNLOAD_ROUTE",
    "KEEP_SECONDS",
    "download_url",
    "downloads_dir",
    "lookup_download",
    "register_download",
    "unregister_download",
]

DOWNLOAD_ROUTE = "edge-workbench/download/"
# Zips older than this are deleted when a new one is made: each can be as large as
# the export (88 MB for digits-resnet18), and a page keeps its link only for a session.
KEEP_SECONDS = 24 * 3600

_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,200}\.zip$")


def downloads_dir() -> Path:
    """The private folder holding the zips the server may serve."""
    return registry_dir() / "downloads"


def _zip_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", folder.name) or "export"
    if not name[:1].isalnum():
        name = "export" + name
    return name[:190] + ".zip"


def _remove_old(folder: Path, now: float) -> None:
    for path in folder.glob("*"):
        try:
            if now - path.stat().st_mtime > KEEP_SECONDS:
                path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            pass


def register_download(folder: str | Path) -> tuple[str, str, int]:
    """Zip the files of ``folder`` (not recursive) for download; returns (token, name, bytes).

    The zip is written to a temporary name and renamed, so the server never serves
    half of one.
    """
    folder = Path(folder).resolve()
    target = downloads_dir()
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_old(target, time.time())
    token = secrets.token_hex(16)
    name = _zip_name(folder)
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".zip-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    zf.write(path, arcname=f"{folder.name}/{path.name}")
        size = Path(tmp).stat().st_size
        os.replace(tmp, target / f"{token}.zip")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    entry = {"name": name, "folder": str(folder)}
    (target / f"{token}.json").write_text(json.dumps(entry))
    return token, name, size


def unregister_download(token: str) -> None:
    """Delete the zip registered under ``token`` (its page links to a newer one)."""
    if not _TOKEN.match(token):
        return
    folder = downloads_dir()
    for path in (folder / f"{token}.json", folder / f"{token}.zip"):
        path.unlink(missing_ok=True)


def lookup_download(token: str, name: str) -> Path | None:
    """The zip registered under ``token`` as ``name``, or None (unknown, gone, or a bad name)."""
    if not _TOKEN.match(token) or not _NAME.match(name):
        return None
    folder = downloads_dir()
    try:
        entry = json.loads((folder / f"{token}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("name") != name:
        return None
    path = folder / f"{token}.zip"
    return path if path.is_file() else None


def download_url(token: str, name: str, base_url: str = "/") -> str:
    """The link a page follows to download zip ``name`` registered under ``token``."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    return f"{base}{DOWNLOAD_ROUTE}{token}/{quote(name)}"

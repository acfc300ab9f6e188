"""Netron's web UI as we serve it: the installed ``netron`` package's files, patched
at serve time so the page makes no request beyond this server.

As shipped, Netron's browser host (``browser.js``), on every page load:

* ``age()``: after 180 days from its build date, blocks with "Please update to the
  newest version." and navigates to GitHub;
* ``consent()``: fetches ``https://ipinfo.io/json`` to learn the user's country,
  then shows a cookie banner ("This app uses cookies to report errors and
  anonymous usage information.");
* ``telemetry()``: sends page views, scrolls and every uncaught error to Google
  Analytics (``navigator.sendBeacon('https://analytics.google.com/g/collect?...')``
  in ``base.js``) and sets ``_ga`` cookies;
* ``capabilities()``: sends a ``browser_open`` analytics event;
* and opens ``?gist=`` ids from ``api.github.com``, and navigates to GitHub from
  its "Report" buttons (``openURL``).

Two more patches make it a good neighbour inside a page: no DNS look-ups of its
links ahead of a click, and no grabbing of the keyboard focus from the page around
the iframe each time it opens a model.

Each patch below removes one of these. A patch whose target text is not found
exactly once raises :class:`NetronPatchError`: after a Netron upgrade the server
refuses to serve rather than serve a page that phones home. The server also sends
a Content-Security-Policy (see :mod:`.handlers`) that forbids any other origin, as
a second wall.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PATCHES", "NetronPatchError", "Patch", "netron_asset", "netron_dir"]

# The file types Netron's UI is made of; anything else in the package (its .py
# files) is not served.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


class NetronPatchError(RuntimeError):
    """The installed Netron no longer contains a text our privacy patches replace."""


@dataclass(frozen=True)
class Patch:
    """Replace ``target``, which must occur exactly once, in ``file``.

    ``why`` says what the replaced code did, for the error when it has vanished.
    """

    file: str
    target: str
    replacement: str
    why: str


PATCHES: tuple[Patch, ...] = (
    Patch(
        "browser.js",
        "await age();",
        "/* edge-workbench: no update check */",
        "update nag: blocks the view and navigates to GitHub once the build is 180 days old",
    ),
    Patch(
        "browser.js",
        "await consent();",
        "/* edge-workbench: no consent banner, no ipinfo.io */",
        "fetches https://ipinfo.io/json, then shows a cookie consent banner",
    ),
    Patch(
        "browser.js",
        "await telemetry();",
        "/* edge-workbench: no telemetry */",
        "starts Google Analytics: page views, scrolls, uncaught errors, _ga cookies",
    ),
    Patch(
        "browser.js",
        "await capabilities();",
        "/* edge-workbench: no browser_open event */",
        "sends a browser_open analytics event",
    ),
    Patch(
        "browser.js",
        "const gist = params.get('gist');",
        "const gist = null; /* edge-workbench: never fetch api.github.com */",
        "opens ?gist= ids from api.github.com",
    ),
    Patch(
        "browser.js",
        "window.location = url;",
        "void url; /* edge-workbench: no navigation off this server */",
        "openURL: 'Report' buttons and the update nag navigate to GitHub",
    ),
    Patch(
        "index.html",
        '<meta charset="utf-8">',
        '<meta charset="utf-8">\n<meta http-equiv="x-dns-prefetch-control" content="off">',
        "lets the browser look up github.com (the page's links) in DNS ahead of any click",
    ),
    Patch(
        "view.js",
        "const element = document.getElementById('target');\n            element.focus();",
        "const element = document.getElementById('target');\n"
        "            if (document.hasFocus()) { element.focus(); } /* edge-workbench */",
        "takes the keyboard focus when it draws a graph",
    ),
    Patch(
        "view.js",
        "container.style.width = '100%';\n            container.focus();",
        "container.style.width = '100%';\n"
        "            if (document.hasFocus()) { container.focus(); } /* edge-workbench */",
        "takes the keyboard focus when a model opens (closing the sidebar focuses the graph)",
    ),
    Patch(
        "base.js",
        "this._navigator.sendBeacon(url, body);",
        "void url; void body; /* edge-workbench: analytics beacon removed */",
        "the analytics beacon itself (second wall if telemetry were started elsewhere)",
    ),
)

# Text compresses ~10x (the ~8 MB an ONNX view loads become ~0.8 MB), which matters
# for a Voila app opened from another machine.
_COMPRESSIBLE = {".html", ".js", ".css", ".json"}

_cache: dict[tuple[str, bool], bytes] = {}
_lock = threading.Lock()


def netron_dir() -> Path:
    """The installed ``netron`` package's folder, holding its web UI."""
    import netron

    return Path(netron.__file__).resolve().parent


def _patched(name: str, data: bytes) -> bytes:
    patches = [p for p in PATCHES if p.file == name]
    if not patches:
        return data
    text = data.decode("utf-8")
    for patch in patches:
        count = text.count(patch.target)
        if count != 1:
            raise NetronPatchError(
                f"netron {_netron_version()}: {name} contains {patch.target!r} {count} times, "
                f"expected once; this patch stops: {patch.why}. Update PATCHES in "
                f"{__name__} for this Netron version (or pin the version that matches)"
            )
        text = text.replace(patch.target, patch.replacement)
    return text.encode("utf-8")


def _netron_version() -> str:
    try:
        import netron

        return str(getattr(netron, "__version__", "?"))
    except ImportError:
        return "?"


def netron_asset(name: str, gzipped: bool = False) -> tuple[bytes, str, bool] | None:
    """One Netron UI file as served: (bytes, content type, are the bytes gzipped).

    Bytes are patched where :data:`PATCHES` says, and gzip-compressed when
    ``gzipped`` and the file is text. Returns None for anything that is not a
    top-level UI file of the package.

    Raises:
        NetronPatchError: a patch target has vanished from the installed Netron.
    """
    suffix = Path(name).suffix.lower()
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _TYPES:
        return None
    content_type = _TYPES[suffix]
    compressed = gzipped and suffix in _COMPRESSIBLE
    with _lock:
        data = _cache.get((name, compressed))
    if data is None:
        with _lock:
            data = _cache.get((name, False))
        if data is None:
            path = netron_dir() / name
            if not path.is_file():
                return None
            data = _patched(name, path.read_bytes())
        # The UI is a fixed set of files: keeping what was served avoids re-reading
        # (and re-compressing) multi-MB metadata files for every view.
        with _lock:
            _cache[(name, False)] = data
        if compressed:
            data = gzip.compress(data, compresslevel=6, mtime=0)
            with _lock:
                _cache[(name, True)] = data
    return data, content_type, compressed

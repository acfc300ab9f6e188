"""Tornado handlers for the graph view, for jupyter_server (JupyterLab) and Voila alike.

Routes, under the server's base URL:

* ``edge-workbench/netron/<file>``: Netron's UI, patched (see :mod:`.assets`);
* ``edge-workbench/netron/model/<sha256>/<name>``: a registered model file's bytes;
* ``edge-workbench/download/<token>/<name>.zip``: an export's zip (see :mod:`.downloads`).

Both derive from jupyter_server's ``JupyterHandler``, so they require the same
login as the page around them (token or password where the server has one) and go
through its authorizer as a read of "contents".
"""

from __future__ import annotations

import hashlib
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from widgets.netron_server.assets import NetronPatchError, netron_asset
from widgets.netron_server.downloads import DOWNLOAD_ROUTE, lookup_download
from widgets.netron_server.registry import ROUTE, lookup_model_file

__all__ = ["CONTENT_SECURITY_POLICY", "netron_handlers", "workbench_handlers"]

_CHUNK = 1 << 20  # bytes written per flush when streaming a download

# Everything from this server, nothing from anywhere else: even a request the
# patches missed is refused by the browser. Inline styles are Netron's own
# (<style> in index.html, style attributes set by its code); data:/blob: images are
# what it builds when exporting a PNG/SVG.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self'",
        "frame-src 'none'",
        "object-src 'none'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
    ]
)


class _NetronHandler(JupyterHandler):
    auth_resource = "contents"

    @property
    def content_security_policy(self) -> str:
        # Deliberately not the server-wide policy: this page must stay offline
        # whatever headers the server is configured with.
        return CONTENT_SECURITY_POLICY

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Plain text: JupyterHandler's HTML error page needs static files that
        # Voila's application does not configure, and would fail on top of the error.
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {self._reason}\n")


class NetronAssetHandler(_NetronHandler):
    """Netron's web UI files from the installed ``netron`` package, patched."""

    @web.authenticated
    @authorized("read")
    def get(self, name: str = "") -> None:
        accepts_gzip = "gzip" in self.request.headers.get("Accept-Encoding", "")
        try:
            asset = netron_asset(name or "index.html", gzipped=accepts_gzip)
        except NetronPatchError as e:
            self.log.error("Edge Workbench graph view disabled: %s", e)
            raise web.HTTPError(500, reason="Netron privacy patch failed") from e
        if asset is None:
            raise web.HTTPError(404)
        data, content_type, compressed = asset
        self.set_header("Content-Type", content_type)
        self.set_header("Vary", "Accept-Encoding")
        if compressed:
            self.set_header("Content-Encoding", "gzip")
        # Revalidate every time (cheap: tornado answers 304 on a matching ETag) so
        # a Netron upgrade is never mixed with files cached from the old version.
        self.set_header("Cache-Control", "no-cache")
        self.finish(data)


class NetronModelHandler(_NetronHandler):
    """The bytes of a model file registered through :func:`.registry.register_model`."""

    @web.authenticated
    @authorized("read")
    def get(self, token: str, name: str) -> None:
        found = lookup_model_file(token, name)
        if found is None:
            raise web.HTTPError(404, reason="model not registered")
        path, digest = found
        try:
            data = path.read_bytes()
        except OSError as e:
            raise web.HTTPError(404, reason="registered model file is gone") from e
        # Serve only the bytes that were registered: a file replaced since then
        # has to be registered again (the widget does so when its path is set).
        if hashlib.sha256(data).hexdigest() != digest:
            raise web.HTTPError(410, reason="model file changed since it was registered")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Cache-Control", "private, no-store")
        self.finish(data)


class DownloadHandler(_NetronHandler):
    """An export's zip, made by :func:`.downloads.register_download`, as an attachment."""

    @web.authenticated
    @authorized("read")
    async def get(self, token: str, name: str) -> None:
        path = lookup_download(token, name)
        if path is None:
            raise web.HTTPError(404, reason="no such download")
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after streaming
        except OSError as e:
            raise web.HTTPError(404, reason="the download is gone") from e
        with f:
            self.set_header("Content-Type", "application/zip")
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
            self.set_header("Content-Length", str(path.stat().st_size))
            self.set_header("Cache-Control", "private, no-store")
            # Streamed: an 88 MB export is never held in the server's memory at once.
            while chunk := f.read(_CHUNK):
                self.write(chunk)
                await self.flush()
        self.finish()


def workbench_handlers(
    base_url: str,
) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """Every route the workbench adds to a server: the graph view and export downloads."""
    root = url_path_join(base_url, DOWNLOAD_ROUTE)
    downloads = [(url_path_join(root, r"([^/]+)/([^/]+)"), DownloadHandler, {})]
    return downloads + netron_handlers(base_url)


def netron_handlers(base_url: str) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """The graph view's tornado routes under ``base_url`` (the server's URL prefix)."""
    root = url_path_join(base_url, ROUTE)
    return [
        (url_path_join(root, r"model/([0-9a-f]{64})/([^/]+)"), NetronModelHandler, {}),
        (url_path_join(root, r"([^/]*)"), NetronAssetHandler, {}),
    ]

"""ExportPanel: write the current variant with its manifest, and offer it as a download.

Export calls ``workbench.export_variant`` on a worker thread (a .pt2 export can take
seconds), lists the files it wrote, and offers a zip of the folder as a download link.
Where the page's server serves the workbench's routes (the app server, or Jupyter with
the ``widgets.netron_server`` extension) the zip is served by it, whatever its size;
elsewhere a small zip travels as a ``data:`` link and a large one is left on disk.
"""

from __future__ import annotations

import base64
import html
import io
import re
import threading
import zipfile
from pathlib import Path
from typing import Any

import ipywidgets as W
import traitlets as T

from widgets.netron_server.downloads import (
    download_url,
    register_download,
    unregister_download,
)
from widgets.netron_server.registry import server_base_url
from widgets.style import LINK_STYLE
from workbench.cache import Cache
from workbench.charts import format_bytes
from workbench.errors import WorkbenchError
from workbench.export import export_variant
from workbench.pipeline import MeasureSettings

__all__ = ["DOWNLOAD_LIMIT_BYTES", "ExportPanel", "zip_folder"]

# Without a server route, a data: link travels through the widget channel and sits in
# the page's memory; beyond this the folder is left on disk for the user to fetch.
DOWNLOAD_LIMIT_BYTES = 25_000_000


def zip_folder(folder: Path) -> bytes:
    """The files of ``folder`` (not recursive) as a deflated zip, built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                zf.write(path, arcname=f"{folder.name}/{path.name}")
    return buffer.getvalue()


def _default_folder(result: Any) -> str:
    model = str(result.model)
    if "/" in model or "\\" in model:  # a user file: its name, not the upload folder's path
        model = Path(model).stem
    name = f"{model}-{result.recipe.name}"
    return "export/" + re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


class ExportPanel(W.VBox):
    """Export the chosen variant.

    Traits:
        result: the ``workbench.Result`` to export (the Workbench's current variant).
        model: the ``Model`` it was derived from.
        folder: where to write (created if needed); follows the variant until edited.
        manifest_path: (read-only) the manifest of the last export, "" before one.
        files: (read-only) the files the last export wrote.
        download_html: (read-only) the download link, or why there is none.
        busy, error: (read-only) an export is running; the last export's error.
    """

    result = T.Any(None)
    model = T.Any(None)
    folder = T.Unicode("")
    manifest_path = T.Unicode("", read_only=True)
    files = T.List(read_only=True)
    download_html = T.Unicode("", read_only=True)
    busy = T.Bool(False, read_only=True)
    error = T.Unicode("", read_only=True)

    def __init__(
        self,
        *,
        cache: Cache | None = None,
        settings: MeasureSettings | None = None,
        limit_bytes: int = DOWNLOAD_LIMIT_BYTES,
        **kwargs,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.limit_bytes = limit_bytes
        self._thread: threading.Thread | None = None
        # The zip the link points to: deleted when a newer one replaces it, since each
        # can be as large as the export and the server keeps them in its runtime folder.
        self._download_token = ""
        self._folder_edited = False
        self.folder_w = W.Text(description="folder", layout=W.Layout(width="460px"))
        self.export_w = W.Button(description="Export", icon="download", button_style="success")
        self._out_w = W.HTML()
        super().__init__(
            children=[
                W.HTML(
                    "<b>Export</b>: the variant's ONNX file, the baseline to fall back to, "
                    "a .pt2 where it applies, manifest.json, and the device runner "
                    "(workbench_runner.py, with RUN.md: measure it on the device, then "
                    "<code>workbench import</code> the results)"
                ),
                W.HBox([self.folder_w, self.export_w]),
                self._out_w,
            ],
            **kwargs,
        )
        T.link((self, "folder"), (self.folder_w, "value"))
        self.folder_w.observe(self._on_user_folder, names="value")
        self.export_w.on_click(lambda _b: self.export())
        self._render()

    def clear(self) -> None:
        """Forget the last export's files, link and error (e.g. when the model changes)."""
        with self.hold_trait_notifications():
            self.result = None
            self.set_trait("manifest_path", "")
            self.set_trait("files", [])
            self.set_trait("download_html", "")
            self.set_trait("error", "")
        self._drop_download()

    def _drop_download(self) -> None:
        if self._download_token:
            unregister_download(self._download_token)
            self._download_token = ""

    def _on_user_folder(self, change: dict) -> None:
        self._folder_edited = bool(change["new"]) and change["new"] != self._auto_folder()

    def _auto_folder(self) -> str:
        return _default_folder(self.result) if self.result is not None else ""

    @T.observe("result")
    def _on_result(self, change: dict) -> None:
        if not self._folder_edited:
            self.folder = self._auto_folder()
        self._render()

    @T.observe("busy", "error", "download_html", "files")
    def _on_state(self, change: dict) -> None:
        self._render()

    def _render(self) -> None:
        self.export_w.disabled = self.busy or self.result is None
        if self.busy:
            self._out_w.value = "<i>exporting...</i>"
        elif self.error:
            self._out_w.value = f'<span style="color:#b00020">{html.escape(self.error)}</span>'
        elif self.files:
            items = "".join(f"<li><code>{html.escape(f)}</code></li>" for f in self.files)
            self._out_w.value = (
                # Absolute: a relative folder is relative to the kernel's working
                # directory (the notebook's folder), not where the server was started.
                f"wrote <code>{html.escape(str(Path(self.manifest_path).parent.resolve()))}</code>:"
                f"<ul>{items}</ul>{self.download_html}"
            )
        else:
            self._out_w.value = ""

    def export(self) -> bool:
        """Start the export on a worker thread; False if one is running or nothing to export."""
        if self.busy:
            return False
        if self.result is None or self.model is None:
            self.set_trait(
                "error", str(WorkbenchError("no variant to export", "measure a variant first"))
            )
            return False
        folder = self.folder.strip() or self._auto_folder()
        with self.hold_trait_notifications():
            self.set_trait("error", "")
            self.set_trait("busy", True)
        self._thread = threading.Thread(
            target=self._work,
            args=(self.result, self.model, Path(folder)),
            name="workbench-export",
            daemon=True,
        )
        self._thread.start()
        return True

    def _work(self, result: Any, model: Any, folder: Path) -> None:
        try:
            manifest = export_variant(
                result, model, folder, settings=self.settings, cache=self.cache
            )
            files = sorted(p.name for p in manifest.parent.iterdir() if p.is_file())
            self.set_trait("manifest_path", str(manifest))
            self.set_trait("download_html", self._download_link(manifest.parent))
            self.set_trait("files", files)
        except WorkbenchError as exc:
            self.set_trait("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - shown in the panel, never kills the app
            self.set_trait("error", f"the export failed: {type(exc).__name__}: {exc}")
        finally:
            self.set_trait("busy", False)

    def _download_link(self, folder: Path) -> str:
        base_url = server_base_url()
        if base_url is not None:  # the page's server serves it: any size
            token, name, size = register_download(folder)
            self._drop_download()
            self._download_token = token
            href = html.escape(download_url(token, name, base_url), quote=True)
            label = html.escape(name)
            return (
                f'<a class="edge-workbench-download" style="{LINK_STYLE}" '
                f'download="{html.escape(name, quote=True)}" href="{href}">'
                f"download {label} ({format_bytes(size)})</a>"
            )
        data = zip_folder(folder)
        if len(data) > self.limit_bytes:
            return (
                f"<p>The zip would be {format_bytes(len(data))}, above the "
                f"{format_bytes(self.limit_bytes)} a browser download link can carry here: "
                f"take the files from <code>{html.escape(str(folder.resolve()))}</code>.</p>"
            )
        b64 = base64.b64encode(data).decode("ascii")
        name = html.escape(f"{folder.name}.zip", quote=True)
        return (
            f'<a class="edge-workbench-download" style="{LINK_STYLE}" download="{name}" '
            f'href="data:application/zip;base64,{b64}">download {name} '
            f"({format_bytes(len(data))})</a>"
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the export ends (for scripts and tests); returns whether it did."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

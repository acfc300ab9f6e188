"""NetronView: a model's graph, drawn by Netron, inside JupyterLab or a Voila app.

Any file Netron reads: the workbench's artifacts (``.onnx`` for ONNX Runtime,
``.tflite`` for LiteRT and TensorFlow Lite Micro) and a user's own files.

The widget is an iframe on Netron's web UI served by the same Jupyter/Voila server
that serves the page (see :mod:`widgets.netron_server`): no extra port, nothing
fetched from or sent to anywhere else.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as W
import traitlets as T

from widgets.netron_server.registry import register_model, server_base_url, viewer_url
from workbench.errors import WorkbenchError

__all__ = ["NetronView"]

PLACEHOLDER = "No model selected: the graph appears here when a model file is chosen."
NO_SERVER_FIX = (
    "start the app with `make app` (python -m widgets.app_server ...), or for JupyterLab "
    "enable the server extension (`jupyter server extension enable --sys-prefix "
    "widgets.netron_server`) and restart JupyterLab"
)


class _PathText(T.Unicode):
    """A Unicode trait that also takes a ``Path`` (stored as its string) or None ("")."""

    def validate(self, obj, value):
        if value is None:
            return ""
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        return super().validate(obj, value)


class NetronView(W.VBox):
    """The Netron graph of the model file at ``path``.

    Traits:
        path: the model file to show ("" shows a placeholder). Setting it registers
            the file with the graph server and points the iframe at it.
        height: the view's height in pixels.
        url: (read-only) the iframe's src, "" when nothing is shown.
        error: (read-only) why the graph cannot be shown, "" when it can.
    """

    path = _PathText("")
    height = T.Int(600, min=120)
    url = T.Unicode("", read_only=True)
    error = T.Unicode("", read_only=True)

    def __init__(self, path: str | Path | None = None, **kwargs) -> None:
        self._html = W.HTML(layout=W.Layout(width="100%"))
        super().__init__(children=[self._html], **kwargs)
        self.add_class("edge-workbench-netron")
        if path:
            self.path = path  # the observer renders it
        else:
            self._render()

    @T.observe("path", "height")
    def _on_change(self, change: dict) -> None:
        self._render()

    def _render(self) -> None:
        url, error = "", ""
        if not self.path:
            body = f'<p class="edge-workbench-netron-placeholder">{html.escape(PLACEHOLDER)}</p>'
        else:
            try:
                model = register_model(self.path)
                base = server_base_url()
                if base is None:
                    raise WorkbenchError(
                        "cannot show the graph: this Jupyter server does not serve the graph view",
                        NO_SERVER_FIX,
                    )
                url = viewer_url(model, base)
                body = self._iframe(url, model.name)
            except WorkbenchError as e:
                error = str(e)
                body = f'<p class="edge-workbench-netron-error">{html.escape(error)}</p>'
        self.set_trait("url", url)
        self.set_trait("error", error)
        self._html.value = body

    def _iframe(self, url: str, name: str) -> str:
        # sandbox: scripts and same-origin requests (to fetch Netron's files and the
        # model, with the user's login cookie); downloads for "Export as PNG/SVG".
        # No popups and no top-level navigation: nothing in the view can leave.
        return (
            f'<iframe src="{html.escape(url, quote=True)}" '
            f'title="Netron graph of {html.escape(name, quote=True)}" '
            'sandbox="allow-scripts allow-same-origin allow-downloads" '
            'referrerpolicy="no-referrer" '
            f'style="box-sizing: border-box; width: 100%; height: {self.height}px; '
            'border: 1px solid #ddd;"></iframe>'
        )

"""Serve Netron's graph view, and the model files the workbench registered, from the
Jupyter server or Voila app that serves the page: no second port, nothing sent off
the machine.

Two halves share this package:

* the kernel side (:mod:`.registry`): register a model file, build the iframe's URL;
* the server side (:mod:`.assets`, :mod:`.handlers`): Netron's web UI patched at
  serve time so it makes no outbound request, and the registered model bytes.

They run in different processes, so registration goes through a small on-disk
registry (see :mod:`.registry`). This module is also the Jupyter server extension
(``widgets.netron_server``); it stays light because the kernel imports it too.
"""

from __future__ import annotations

import os
from typing import Any

from widgets.netron_server.registry import BASE_URL_ENV, REGISTRY_ENV, registry_dir

__all__ = ["enable_in_process_env"]


def enable_in_process_env(base_url: str) -> None:
    """Tell kernels this server serves the graph view, at ``base_url``.

    Kernels inherit the server's environment when it starts them, so setting these
    here is how a kernel learns the server's real base URL and registry folder.
    """
    os.environ[BASE_URL_ENV] = base_url if base_url.endswith("/") else base_url + "/"
    os.environ[REGISTRY_ENV] = str(registry_dir())


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "widgets.netron_server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the graph view's handlers to a running jupyter_server (JupyterLab)."""
    from widgets.netron_server.handlers import workbench_handlers

    web_app = serverapp.web_app
    base_url = web_app.settings.get("base_url", "/")
    web_app.add_handlers(".*$", workbench_handlers(base_url))
    enable_in_process_env(base_url)
    serverapp.log.info("Edge Workbench graph view served at %sedge-workbench/netron/", base_url)

"""Serve a workbench notebook as a Voila app, with the graph view on the same port.

``python -m widgets.app_server notebooks/app.ipynb --port=8866 --no-browser`` takes
exactly Voila's command-line options and config. It exists because Voila 0.5
standalone builds its own tornado application and loads no Jupyter server
extensions, and its last route renders the notebook for *every* other path; so the
graph view's routes are put in front of Voila's own here.

It also serves Voila's default "lab" page without the stylesheets that page loads
from a CDN (``app_template/index.html.j2``), so the app makes no request off the
machine.
"""

from __future__ import annotations

from pathlib import Path

from voila.app import Voila
from voila.shutdown_kernel_handler import VoilaShutdownKernelHandler

from widgets.netron_server import enable_in_process_env
from widgets.netron_server.handlers import workbench_handlers

__all__ = ["WorkbenchVoila", "main", "server_argv"]

OFFLINE_TEMPLATE_DIR = Path(__file__).resolve().parent / "app_template"


# Kernels of pages nobody has open are shut down after this long idle. The page asks
# for its kernel's shutdown when it closes, but a browser that crashes, is killed or
# loses the network never does (2 of 5 closes in a trial), and each kernel holds
# about 1 GB once a model is loaded. Jupyter Server's culler never touches a kernel
# with a connected page (cull_connected is False), so this is the grace a page gone
# without a word gets, not a limit on a quiet reader; it is checked every
# CULL_INTERVAL_SECONDS.
IDLE_KERNEL_SECONDS = 60
CULL_INTERVAL_SECONDS = 15


class _ShutdownOnUnload(VoilaShutdownKernelHandler):
    """Voila's kernel shutdown on page close, without the XSRF check.

    The page sends it with ``navigator.sendBeacon``, which cannot add the XSRF header,
    so Jupyter Server refused every one (403) and each page view left its kernel
    running (voila-dashboards/voila#1458). The request names an unguessable kernel id
    and can only stop that kernel; authentication still applies.
    """

    def check_xsrf_cookie(self) -> None:
        return None


class WorkbenchVoila(Voila):
    """Voila, plus the routes that serve Netron's graph view and registered models."""

    def setup_template_dirs(self) -> None:
        super().setup_template_dirs()
        # Our index.html.j2 extends Voila's lab page, so only for that template.
        if self.voila_configuration.template == "lab":
            self.template_paths.insert(0, str(OFFLINE_TEMPLATE_DIR))

    def init_handlers(self) -> list:
        handlers = [
            (route[0], _ShutdownOnUnload, *route[2:])
            if route[1] is VoilaShutdownKernelHandler
            else route
            for route in super().init_handlers()
        ]
        # Before Voila's catch-all "/(.*)", which would otherwise render the notebook.
        return workbench_handlers(self.server_url) + handlers

    def start(self) -> None:
        # Before any kernel starts: kernels inherit this environment, and read the
        # browser-facing base URL from it to build the iframe's src.
        enable_in_process_env(self.base_url)
        super().start()


def server_argv(argv: list[str]) -> list[str]:
    """``argv`` plus the culling defaults it does not set itself."""
    defaults = {
        "--MappingKernelManager.cull_idle_timeout": str(IDLE_KERNEL_SECONDS),
        "--MappingKernelManager.cull_interval": str(CULL_INTERVAL_SECONDS),
        # Explicit, because the grace above is short: never cull a kernel a page is
        # connected to, however long it has been idle.
        "--MappingKernelManager.cull_connected": "False",
    }
    given = {a.split("=", 1)[0] for a in argv}
    return list(argv) + [f"{k}={v}" for k, v in defaults.items() if k not in given]


def main(argv: list[str] | None = None) -> None:
    """Run the app server; kernels of closed pages are culled unless argv says otherwise."""
    import sys

    WorkbenchVoila.launch_instance(server_argv(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()

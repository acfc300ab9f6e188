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

from widgets.netron_server import enable_in_process_env
from widgets.netron_server.handlers import netron_handlers

__all__ = ["WorkbenchVoila", "main"]

OFFLINE_TEMPLATE_DIR = Path(__file__).resolve().parent / "app_template"


class WorkbenchVoila(Voila):
    """Voila, plus the routes that serve Netron's graph view and registered models."""

    def setup_template_dirs(self) -> None:
        super().setup_template_dirs()
        # Our index.html.j2 extends Voila's lab page, so only for that template.
        if self.voila_configuration.template == "lab":
            self.template_paths.insert(0, str(OFFLINE_TEMPLATE_DIR))

    def init_handlers(self) -> list:
        # Before Voila's catch-all "/(.*)", which would otherwise render the notebook.
        return netron_handlers(self.server_url) + super().init_handlers()

    def start(self) -> None:
        # Before any kernel starts: kernels inherit this environment, and read the
        # browser-facing base URL from it to build the iframe's src.
        enable_in_process_env(self.base_url)
        super().start()


main = WorkbenchVoila.launch_instance

if __name__ == "__main__":
    main()

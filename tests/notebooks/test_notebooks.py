"""Every notebook in notebooks/ (solutions included) runs top to bottom without an error.

The notebooks are found by glob, so a new one is covered without touching this file.
They run in the ``python3`` kernel (checked to be this interpreter, i.e. the project's
virtualenv), in a temporary working folder, with one temporary ``WORKBENCH_CACHE_DIR``
shared by the whole session (a baseline measured by one notebook is reused by the next)
and ``WORKBENCH_NOTEBOOK_QUICK=1``, which the notebooks' first cell reads to sweep fewer
variants and time fewer runs. Every figure is still measured.

After the last cell a probe cell checks the panels: every ``Workbench`` the notebook
made must finish its background measurements without an error, since a failure on a
worker thread shows in the panel, not as a cell error.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
KERNEL = "python3"
CELL_TIMEOUT = 300  # seconds; a quick notebook's slowest cell takes well under a minute

pytestmark = pytest.mark.notebook

# Run in the kernel after the notebook's last cell: wait for every Workbench panel the
# notebook created and report its state (gc finds them even when not bound to a name).
PROBE = """
import gc, json, sys
_panels = []
if "widgets.workbench_app" in sys.modules:
    from widgets.workbench_app import Workbench as _Workbench
    # type(), not isinstance(): gc also holds dead weak proxies, which raise on __class__.
    for _app in [o for o in gc.get_objects() if issubclass(type(o), _Workbench)]:
        _idle = _app.wait_idle(timeout=240)
        _panels.append({
            "idle": _idle,
            "error": _app.error,
            "current": _app.current.recipe.name if _app.current is not None else None,
        })
print("PANELS" + json.dumps(_panels))
"""


def _notebook_id(path: Path) -> str:
    return str(path.relative_to(NOTEBOOK_DIR))


def _client(nb: nbformat.NotebookNode, cwd: Path) -> NotebookClient:
    return NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}
    )


def _stream_text(cell: nbformat.NotebookNode, name: str | None = None) -> str:
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.output_type == "stream" and (name is None or o.get("name") == name)
    )


@pytest.fixture(scope="session")
def notebook_env(tmp_path_factory) -> dict[str, str]:
    """The kernel's environment: a session-wide temporary cache and the quick setting."""
    cache = tmp_path_factory.mktemp("notebook-cache")
    return {**os.environ, "WORKBENCH_CACHE_DIR": str(cache), "WORKBENCH_NOTEBOOK_QUICK": "1"}


def test_notebooks_are_found():
    names = {_notebook_id(p) for p in NOTEBOOKS}
    assert {"app.ipynb", "01_tour.ipynb", "solutions/05_workshop_solutions.ipynb"} <= names


def test_kernel_is_this_interpreter(tmp_path, notebook_env):
    """The ``python3`` kernel runs in this virtualenv, so notebooks import this checkout."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import sys, workbench; print(sys.prefix); print(workbench.__file__)"
            )
        ]
    )
    _client(nb, tmp_path).execute(env=notebook_env)
    prefix, package = _stream_text(nb.cells[0], "stdout").split()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    assert Path(package).resolve() == (REPO / "workbench" / "__init__.py").resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_notebook_is_saved_without_outputs(path):
    """Notebooks are committed clean: no outputs, no execution counts, the python3 kernel."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, f"cells {dirty} of {path.name} hold outputs: clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_notebook_fetches_nothing_from_the_network(path):
    """Teachers run these offline: charts use the bundled Vega, and no code names a URL."""
    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert not re.search(r"https?://", source), f"{path.name} names a URL in its code"
    if "import altair" in source:
        assert 'alt.renderers.enable("jupyter", offline=True)' in source, (
            f"{path.name} draws Altair charts without enabling offline rendering"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_notebook_id)
def test_notebook_runs(path, notebook_env, tmp_path):
    nb = nbformat.read(path, as_version=4)
    probe = nbformat.v4.new_code_cell(PROBE)
    nb.cells.append(probe)  # runs last, in the same kernel
    started = time.perf_counter()
    _client(nb, tmp_path).execute(env=notebook_env)  # raises CellExecutionError on an error
    seconds = time.perf_counter() - started
    print(f"\n{_notebook_id(path)}: {seconds:.1f} s")

    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(nb.cells)
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    # A traceback printed by a worker thread or a logger is a failure too.
    tracebacks = [
        i for i, c in enumerate(nb.cells) if "Traceback (most recent call last)" in _stream_text(c)
    ]
    assert not tracebacks, f"cells {tracebacks} printed a traceback"

    line = next(
        t for t in _stream_text(nb.cells[-1], "stdout").splitlines() if t.startswith("PANELS")
    )
    panels = json.loads(line.removeprefix("PANELS"))
    if any("Workbench(" in c.source for c in nb.cells[:-1] if c.cell_type == "code"):
        assert panels, "the notebook makes a Workbench panel, but the probe found none"
    for panel in panels:
        assert panel["idle"], "a Workbench panel was still measuring after 240 s"
        assert panel["error"] == "", panel["error"]
        assert panel["current"] is not None, "a Workbench panel never showed a variant"

"""ModelPicker: choose a sample model, name one, or upload your own model file.

Whatever the source, the panel calls ``workbench.load_model`` and puts the loaded
``Model`` in its ``model`` trait; a file the engine refuses shows the engine's
message in the panel and leaves the previous model in place.
"""

from __future__ import annotations

import html
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import ipywidgets as W
import traitlets as T

from sample_models import sample_names
from workbench.atomic import write_text_atomic
from workbench.cache import default_cache_dir
from workbench.data import DIGITS
from workbench.errors import WorkbenchError
from workbench.models import list_models, load_model

__all__ = ["UPLOAD_SUFFIXES", "ModelPicker"]

UPLOAD_SUFFIXES = (".onnx", ".pt", ".pt2", ".pth", ".keras", ".h5", ".tflite")
_TORCHVISION_PATTERN = "torchvision:*"


def torchvision_names() -> list[str]:
    """The registry's ``torchvision:<arch>`` names, for the name box's suggestions.

    Listing them imports torchvision, which costs every page's kernel ~190 MB of
    memory of its own (measured with psutil's USS) and ~2 s, though a viewer who stays
    on a sample never needs it. So the list is kept in the cache folder per torchvision
    version, and only the first kernel after an install imports torchvision for it.
    """
    import json
    from importlib import metadata

    try:
        version = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return []
    path = default_cache_dir() / f"torchvision-names-{version}.json"
    try:
        names = json.loads(path.read_text())
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError):
        pass
    names = list_models(_TORCHVISION_PATTERN)
    try:
        write_text_atomic(path, json.dumps(names))
    except OSError:  # a read-only cache folder: listed again next time
        pass
    return names


def _describe(model: Any) -> str:
    shape = "x".join(str(d) for d in model.input_shape)
    task = (
        f", task {model.task.name}"
        if getattr(model, "task", None) is not None
        else ", no labelled task"
    )
    return f"{model.name} ({model.source}, input {shape}{task})"


# The engine's fixes name the Python argument and the CLI flag; say where the panel has it.
_PANEL_HINTS = (
    ("--random-init", "In this panel: tick 'random weights' and load again."),
    ("--input-shape", "In this panel: fill in 'input' (e.g. 1x3x224x224) and load again."),
)


def _with_panel_hint(message: str) -> str:
    hints = [hint for flag, hint in _PANEL_HINTS if flag in message]
    return " ".join([message, *hints])


class ModelPicker(W.VBox):
    """Pick the model to compress.

    Args:
        initial: the model to load first (a sample name, ``torchvision:<arch>``, a
            path, or a loaded ``Model``), or None to load nothing yet.

    Traits:
        model: (read-only) the loaded ``workbench.models.Model``, or None.
        source: (read-only) what ``model`` was loaded from.
        error: (read-only) the last load's error message, "" after a successful load.
        loading: (read-only) what is being loaded while ``load`` runs, "" otherwise.
    """

    model = T.Any(None, read_only=True)
    source = T.Unicode("", read_only=True)
    error = T.Unicode("", read_only=True)
    loading = T.Unicode("", read_only=True)

    def __init__(self, initial: Any = "digits-cnn", **kwargs) -> None:
        # The shipped samples only: list_models() would import torchvision to list its
        # architectures (see torchvision_names).
        samples = list(sample_names())
        self.sample_w = W.Dropdown(options=samples, value=None, description="sample")
        # A combobox: it completes torchvision:<arch> names and accepts any path.
        self.path_w = W.Combobox(
            options=torchvision_names(),
            ensure_option=False,
            placeholder="torchvision:resnet18, or a path to .onnx / .pt / .pt2 / .pth / .keras / .tflite",
            description="or name",
            layout=W.Layout(width="420px"),
        )
        self.arch_w = W.Text(
            placeholder="architecture, for a state_dict .pth (e.g. resnet18)",
            description="arch",
            layout=W.Layout(width="420px"),
        )
        # A file or torchvision model has no labels of its own: the task to score it on.
        self.task_w = W.Dropdown(
            options=[("none (agreement only)", ""), (DIGITS.name, DIGITS.name)],
            description="file's task",
            tooltip="the labelled test split a file's outputs mean (not for samples)",
        )
        # torchvision weights are never downloaded: without them on this machine a
        # random initialisation still serves size and latency studies.
        self.random_w = W.Checkbox(
            value=False,
            description="random weights (torchvision; size and latency only)",
            indent=False,
            layout=W.Layout(width="auto"),
        )
        self.shape_w = W.Text(
            placeholder="input shape, e.g. 1x3x224x224 (TorchScript files need it)",
            description="input",
            layout=W.Layout(width="420px"),
        )
        self.load_w = W.Button(description="Load", icon="folder-open")
        self.upload_w = W.FileUpload(
            accept=",".join(UPLOAD_SUFFIXES),
            multiple=False,
            description="Upload model",
            tooltip="a model file from your computer: " + ", ".join(UPLOAD_SUFFIXES),
        )
        self._status_w = W.HTML()
        super().__init__(
            children=[
                W.HTML("<b>Model</b>"),
                self.sample_w,
                W.HBox([self.path_w, self.load_w]),
                self.random_w,
                W.HBox([self.upload_w, self.task_w]),
                self.arch_w,
                self.shape_w,
                self._status_w,
            ],
            **kwargs,
        )
        # Uploaded files must outlive the load: an ONNX Model points at its file.
        self._upload_root = Path(tempfile.mkdtemp(prefix="workbench-upload-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._upload_root, True)
        self.sample_w.observe(self._on_sample, names="value")
        self.load_w.on_click(lambda _b: self.load(self.path_w.value.strip()))
        self.upload_w.observe(self._on_upload, names="value")
        if initial is not None and not isinstance(initial, (str, Path)):
            self.use(initial)
        elif initial:
            if initial in samples:
                self.sample_w.value = initial  # the observer loads it
            else:
                self.path_w.value = str(initial)
                self.load(initial)

    def load(
        self,
        source: str | Path,
        arch: str | None = None,
        task: str | None = None,
        *,
        shown_name: str | None = None,
    ) -> bool:
        """Load ``source`` with ``load_model``; returns whether it worked.

        ``arch`` and ``task`` default to the panel's boxes ("" for none), and so do the
        input shape and, for torchvision names, random weights. On failure ``error``
        holds the message and ``model`` is unchanged.
        """
        source = str(source)
        if not source:
            self._fail("no model named", "choose a sample, type a name or path, or upload a file")
            return False
        arch = arch if arch is not None else self.arch_w.value.strip()
        task = task if task is not None else self.task_w.value
        options: dict[str, Any] = {}
        if arch:
            options["arch"] = arch
        if task:
            options["task"] = task
        if source.startswith("torchvision:") and self.random_w.value:
            options["pretrained"] = False
        shape_text = self.shape_w.value.strip()
        if shape_text and source not in self.sample_w.options:
            try:
                options["input_shape"] = tuple(
                    int(d) for d in shape_text.replace("x", ",").split(",") if d.strip()
                )
            except ValueError:
                self._fail(
                    f"input shape {shape_text!r} is not a list of whole numbers",
                    "write it like 1x3x224x224 (batch first), or leave it empty",
                )
                return False
        # Set while load_model runs (seconds for a large model), so the app can clear
        # what it shows of the previous model at once.
        self.set_trait("loading", shown_name or source)
        try:
            try:
                model = load_model(source, **options)
            except WorkbenchError as exc:
                message = _with_panel_hint(str(exc))
                self._show_error(message.replace(source, shown_name) if shown_name else message)
                return False
            except Exception as exc:  # noqa: BLE001 - a bad model file must not break the app
                self._show_error(
                    f"{shown_name or Path(source).name} could not be loaded "
                    f"({type(exc).__name__}: {exc})."
                )
                return False
            self.use(model, shown_name)
            self.set_trait("source", source)
            return True
        finally:
            # After the new model is in place (or the error shown): an observer sees
            # either the new model or the error, never a gap between them.
            self.set_trait("loading", "")

    def use(self, model: Any, shown_name: str | None = None) -> None:
        """Show an already loaded ``Model`` (e.g. one built in a notebook)."""
        if self.sample_w.value is not None and self.sample_w.value != model.name:
            self.sample_w.value = None  # so picking that sample again loads it again
        self.set_trait("error", "")
        self.set_trait("source", str(model.name))
        self.set_trait("model", model)
        described = _describe(model)
        if shown_name:
            described = described.replace(str(model.name), shown_name)
        self._status_w.value = f"loaded <b>{html.escape(described)}</b>"

    def _fail(self, problem: str, fix: str) -> None:
        self._show_error(str(WorkbenchError(problem, fix)))

    def _show_error(self, message: str) -> None:
        self.set_trait("error", message)
        self._status_w.value = f'<span style="color:#b00020">{html.escape(message)}</span>'

    def _on_sample(self, change: dict) -> None:
        if change["new"]:
            self.load(change["new"], arch="", task="")  # a sample brings its own task

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        # Let go of the bytes (a model can be tens of MB) once they are on disk.
        self.upload_w.value = ()
        name = Path(str(item.get("name") or "model")).name  # never a path from the browser
        suffix = Path(name).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            self._fail(
                f"{name} is not a model file this workbench reads",
                f"upload a {', '.join(UPLOAD_SUFFIXES)} file",
            )
            return
        folder = Path(tempfile.mkdtemp(dir=self._upload_root))
        path = folder / name
        # Written to a temp name then renamed: the loader never sees a half-written file.
        tmp = folder / f".{name}.part"
        tmp.write_bytes(bytes(item["content"]))
        tmp.replace(path)
        # Messages name the file the user chose, not where the server keeps it.
        if not self.load(path, shown_name=name):
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Close the panel and remove its uploaded files."""
        self._finalizer()
        super().close()

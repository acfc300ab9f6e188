"""Runtimes that run an exported artifact, behind one interface and one registry.

A :class:`Runtime` owns everything that depends on where a model is deployed: its
artifact's format and file name, how a model becomes that artifact (export, then the
steps that act on the artifact, such as quantization), batch-1 prediction, latency,
memory in a fresh process, graph statistics, the I/O signature, a per-operator
profile where the runtime offers one, its own honesty warnings and its library
versions (for the cache key and the environment record).

Each runtime lives in its own folder and registers itself with
:func:`register_runtime` (as timm's ``@register_model`` does); :func:`list_runtimes`
and :func:`get_runtime` are the only way the rest of the workbench finds one.
Adding a runtime means one new folder and one line in ``_BUILTIN``.

Nothing in this package imports TensorFlow at module level: the LiteRT and TFLite
Micro runtimes import it when they first build or run a file.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.errors import WorkbenchError

__all__ = [
    "DEFAULT_RUNTIME",
    "Runtime",
    "get_runtime",
    "list_runtimes",
    "package_versions",
    "recipe_name",
    "register_runtime",
]

# The runtime a variant is measured in when nobody says otherwise.
DEFAULT_RUNTIME = "onnxruntime"

# Modules whose import registers a built-in runtime (imported on first look-up, so
# `import workbench` pays for none of them).
_BUILTIN = (
    "workbench.runtimes.onnxruntime",
    "workbench.runtimes.litert",
    "workbench.runtimes.tflite_micro",
)

_REGISTRY: dict[str, Runtime] = {}


class Runtime(ABC):
    """One deployment runtime: how an artifact is made for it and measured in it.

    Class attributes:
        name: the registry name ("onnxruntime").
        title: the name in sentences ("ONNX Runtime"; ``str(runtime)`` gives it).
        artifact_format: the artifact's format ("onnx").
        artifact_file: the artifact's file name in a cache entry ("model.onnx").
        artifact_steps: step config type -> handler ``(src, dst, config, model) -> report
            dict`` for the recipe steps that act on the exported artifact.
        measures_latency: False for a runtime whose speed on this machine says nothing
            about the device it targets (TFLite Micro): its variants have no latency
            (``Metrics.latency`` None), no speed comparisons and no noise check.
    """

    name: ClassVar[str]
    # How sentences name the runtime ("ONNX Runtime"); "" for its registry name.
    title: ClassVar[str] = ""
    artifact_format: ClassVar[str]
    artifact_file: ClassVar[str]
    artifact_steps: ClassVar[dict[type, Callable[..., dict]]] = {}
    measures_latency: ClassVar[bool] = True
    # Each quantization scheme this runtime applies, described in its own terms (the
    # quantization panel's tooltips); a scheme left out is described by its name.
    scheme_descriptions: ClassVar[dict[str, str]] = {}
    # The QuantizeConfig settings, besides the scheme, that change what this runtime
    # builds (the panel enables only these); None: every one.
    quantize_settings: ClassVar[tuple[str, ...] | None] = None

    def __repr__(self) -> str:
        return f"<Runtime {self.name}: {self.artifact_format} artifacts>"

    def __str__(self) -> str:
        """The runtime as sentences name it: its title, else its registry name."""
        return self.title or self.name

    # --- making the artifact -------------------------------------------------------
    @abstractmethod
    def export(
        self, model: Any, module: Any | None, dst: Path, parity_inputs: np.ndarray
    ) -> float | None:
        """Write ``model`` (or ``module``, its stepped copy, when not None) to ``dst`` in
        this runtime's format; returns the largest output difference to the source on
        ``parity_inputs``, or None when none was checked."""

    def step_label(self, step: Any) -> str:
        """How this runtime names ``step`` in a variant's name: by default the step's own
        label (quantization in ONNX Runtime's terms: ``int8-minmax-pc``). A runtime whose
        quantization is another tool's names it in that tool's terms, so its variants'
        names say what was built; the cache key never depends on it (it hashes the
        recipe's settings, not its name)."""
        return step.label()

    def required_steps(self, steps: tuple[Any, ...]) -> tuple[Any, ...]:
        """The artifact steps to apply when a recipe asks for ``steps``: by default
        ``steps`` themselves. A runtime that can only run some artifacts (TFLite Micro:
        full-integer int8) adds the step it needs, or raises a WorkbenchError for a
        step it cannot run."""
        return steps

    def check_recipe(self, model: Any, recipe: Any) -> None:
        """Raise WorkbenchError when this runtime cannot build ``recipe`` from ``model``
        (a source it cannot export, a step setting it cannot honour). Called before
        anything is built, so a sweep fails at once; the default accepts everything."""
        return None

    # --- measuring it --------------------------------------------------------------
    @abstractmethod
    def predict(self, artifact: Path, inputs: np.ndarray, *, batch_size: int = 1) -> np.ndarray:
        """The artifact's first output for every row of ``inputs``."""

    @abstractmethod
    def measure_latency(self, artifact: Path, input_shape: Sequence[int], settings: Any) -> Any:
        """Batch-1 wall-clock LatencyStats, with ``settings``' threads, warm-up and runs."""

    @abstractmethod
    def measure_latency_interleaved(
        self,
        artifacts: Sequence[Path],
        input_shapes: Sequence[Sequence[int]],
        settings: Any,
    ) -> Any:
        """Batch-1 latency of each artifact (a variant and its references), each with its
        own input shape, timed in ``settings.rounds`` interleaved rounds in one run: a
        ``workbench.measure.InterleavedTiming``."""

    @abstractmethod
    def measure_memory(self, artifact: Path, input_shape: Sequence[int], threads: int) -> Any:
        """MemoryStats of loading and running the artifact in a fresh process."""

    def delegation(self, artifact: Path, threads: int) -> dict[str, Any] | None:
        """How the runtime runs the artifact with ``threads``: the delegate it applies and
        the nodes that delegate takes (``Metrics.delegation``); None for a runtime with
        no delegate to report."""
        return None

    def arena_report(self, artifact: Path) -> dict[str, Any] | None:
        """The static memory block the runtime needs for the artifact (TFLite Micro's
        tensor arena, ``Metrics.arena``); None for a runtime that allocates as it goes."""
        return None

    @abstractmethod
    def graph_stats(self, artifact: Path) -> Any:
        """The artifact's weights and compute: an object with ``params``,
        ``nonzero_params`` and ``macs``."""

    @abstractmethod
    def io_signature(self, artifact: Path) -> list[dict[str, Any]]:
        """The artifact's inputs then outputs: ``{"role", "name", "shape", "dtype"}`` each."""

    def profile_operators(
        self, artifact: Path, input_shape: Sequence[int], threads: int
    ) -> dict[str, float]:
        """Milliseconds per inference by operator type; {} where the runtime has no profiler."""
        return {}

    def deployment_files(self, artifact: Path, dst_dir: Path, metrics: Any) -> list[dict]:
        """Write files a deployment needs besides the artifact into ``dst_dir`` (an
        export folder); returns one manifest entry each (``file``, ``format``,
        ``sha256``, ``size_bytes``, ...). None by default."""
        return []

    # --- saying what it means ------------------------------------------------------
    def census(self, artifact: Path) -> Any:
        """What this runtime's honesty warnings need to know about the built artifact."""
        return None

    def honesty_warnings(
        self,
        recipe: Any,
        metrics: Any,
        baseline: Any | None,
        census: Any,
        max_accuracy_drop: float,
    ) -> tuple[str, ...]:
        """The warnings that apply to a variant measured in this runtime (its speed-ups
        against its references are in ``metrics.comparisons``)."""
        return ()

    @abstractmethod
    def versions(self) -> dict[str, str]:
        """The library versions a measurement in this runtime depends on (package ->
        version, "absent" when not installed), for the cache key and the environment."""


def package_versions(packages: Iterable[str | tuple[str, tuple[str, ...]]]) -> dict[str, str]:
    """The installed version of each package, read from its metadata (nothing is
    imported), "absent" when it is not installed: what a runtime's ``versions`` reports.

    An entry is a distribution name, or ``(key, names)`` for a package published under
    several names (TensorFlow as ``tensorflow-cpu`` or ``tensorflow``): the first
    installed one's version is reported under ``key``.
    """
    from importlib import metadata

    out = {}
    for entry in packages:
        key, names = (entry, (entry,)) if isinstance(entry, str) else entry
        out[key] = "absent"
        for name in names:
            try:
                out[key] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def recipe_name(recipe: Any, runtime: str | Runtime = DEFAULT_RUNTIME) -> str:
    """``recipe``'s name as ``runtime`` words it (each step's :meth:`Runtime.step_label`),
    "baseline" for no steps. In ONNX Runtime it is ``recipe.name``; for a runtime this
    build does not register, ``recipe.name`` too."""
    try:
        rt = get_runtime(runtime)
    except WorkbenchError:
        return recipe.name
    return "+".join(rt.step_label(s) for s in recipe.steps) or "baseline"


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise TypeError(f"register_runtime takes a Runtime subclass, not {cls!r}")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(module)


def list_runtimes() -> list[str]:
    """The names of every registered runtime, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_runtime(name: str | Runtime) -> Runtime:
    """The registered runtime called ``name`` (a Runtime is returned as it is).

    Raises:
        WorkbenchError: no runtime has that name; the message lists the known ones.
    """
    if isinstance(name, Runtime):
        return name
    _load_builtin()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise WorkbenchError(
            f"unknown runtime {name!r}", f"use one of: {', '.join(sorted(_REGISTRY))}"
        ) from None

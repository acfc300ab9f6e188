"""Parity across runtimes: the same variant built for two runtimes, its files compared.

One measurement, :func:`measure_parity`: both files run on the same inputs (the task's
test split, else the seeded random inputs agreement uses), each in its own runtime, one
input at a time; it reports how often their top-1 predictions agree and the largest and
mean difference of their float outputs (int8 outputs are dequantized first). Both
files take the model's own input layout (a Keras model's ONNX export keeps NHWC; a
PyTorch model's TFLite file keeps NCHW), so one array feeds both. Two ways in:

- :func:`link_cross_runtime_parity` (sweeps over several runtimes, the app after a
  runtime switch): for every recipe measured in two or more runtimes, the files already
  built are compared and the figures recorded on both Results (``Metrics.cross_runtime``)
  and in both cache entries, so the study JSON and CSV, the metrics card and the report
  carry them and a rerun does not measure them again. Nothing is exported again.
- :func:`cross_runtime_parity` (the ``workbench parity`` command) builds (or finds in
  the cache) the variant in both runtimes through :func:`workbench.pipeline.evaluate`,
  then measures and records the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.results import Result, RuntimeParity
from workbench.runtimes import DEFAULT_RUNTIME

__all__ = [
    "PARITY_RUNTIMES",
    "CrossRuntimeParity",
    "cross_runtime_parity",
    "link_cross_runtime_parity",
    "measure_parity",
]

log = logging.getLogger(__name__)

# The runtimes compared by default: the reference ONNX one and LiteRT.
PARITY_RUNTIMES = ("onnxruntime", "litert")


@dataclass(frozen=True)
class CrossRuntimeParity:
    """How closely one variant's files for two runtimes agree, measured on ``basis``.

    ``top1_agreement`` is the share of inputs whose top-1 class is the same in both
    files; ``max_abs_diff`` / ``mean_abs_diff`` compare their float outputs (logits)
    element by element; ``accuracy`` is each file's accuracy (None without labels).
    """

    model: str
    recipe: str
    runtimes: tuple[str, str]
    artifacts: tuple[str, str]
    samples: int
    basis: str
    top1_agreement: float
    disagreements: int
    max_abs_diff: float
    mean_abs_diff: float
    accuracy: tuple[float | None, float | None]
    keys: tuple[str, str] = ("", "")  # the two variants' cache keys

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("runtimes", "artifacts", "accuracy", "keys"):
            d[k] = list(d[k])
        return d

    def text(self) -> str:
        """A few lines for the terminal."""
        a, b = self.runtimes

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2%}"

        return "\n".join(
            [
                f"{self.model}  [{self.recipe}]  {a} vs {b} on {self.basis}",
                f"  top-1 agreement   {pct(self.top1_agreement)} ({self.disagreements} of "
                f"{self.samples} differ)",
                f"  output difference largest {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g}",
                f"  accuracy          {a} {pct(self.accuracy[0])}, {b} {pct(self.accuracy[1])}",
                *(
                    f"  {rt:<17} {path}"
                    for rt, path in zip(self.runtimes, self.artifacts, strict=True)
                ),
            ]
        )


def cross_runtime_parity(
    model: Any,
    recipe: Any = None,
    settings: Any = None,
    *,
    cache: Any = None,
    runtimes: tuple[str, str] = PARITY_RUNTIMES,
) -> CrossRuntimeParity:
    """Build ``recipe`` on ``model`` for both ``runtimes`` and compare the two files.

    Each variant is evaluated (and cached) as ``workbench.evaluate`` would with
    ``settings`` in that runtime; the comparison then runs each file in its runtime on
    the same inputs (:func:`measure_parity`), and the figures are recorded on both
    variants' cache entries as :func:`link_cross_runtime_parity` records them.

    Raises:
        WorkbenchError: fewer or more than two runtimes, the same one twice, or a recipe
            one of them cannot build (e.g. int8 I/O in ONNX Runtime).
    """
    from workbench.cache import Cache
    from workbench.pipeline import MeasureSettings, _coerce_arguments, check_applicable, evaluate

    runtimes = tuple(runtimes)
    if len(runtimes) != 2 or runtimes[0] == runtimes[1]:
        raise WorkbenchError(
            f"parity compares two different runtimes, not {list(runtimes)}",
            f"pass two runtime names, e.g. {list(PARITY_RUNTIMES)}",
        )
    model, recipe = _coerce_arguments(model, recipe)
    settings = settings or MeasureSettings()
    cache = cache or Cache()
    per_runtime = [dataclasses.replace(settings, runtime=rt) for rt in runtimes]
    for rt_settings in per_runtime:  # both are checked before either is built
        check_applicable(model, recipe, rt_settings.runtime)
    results = [evaluate(model, recipe, settings=s, cache=cache) for s in per_runtime]
    parity = measure_parity(model, results[0], results[1])
    _record(parity, results[0], results[1], cache)
    return parity


def measure_parity(model: Any, a: Result, b: Result) -> CrossRuntimeParity:
    """Run the artifacts of ``a`` and ``b`` (one recipe of ``model`` in two runtimes) on
    the same inputs, each in its own runtime, and compare their outputs.

    Raises:
        WorkbenchError: the two are not one recipe in two runtimes, or their files give
            outputs of different shapes.
    """
    from workbench.pipeline import evaluation_inputs, subject_model
    from workbench.runtimes import get_runtime

    if a.recipe != b.recipe or a.runtime == b.runtime:
        raise WorkbenchError(
            f"parity compares one recipe in two runtimes, not {a.recipe.name} in {a.runtime} "
            f"with {b.recipe.name} in {b.runtime}",
            "pass the same recipe's results from two different runtimes",
        )
    inputs, labels, basis = evaluation_inputs(subject_model(model, a.recipe))
    outputs = []
    for result in (a, b):
        y = get_runtime(result.runtime).predict(Path(result.artifact), inputs, batch_size=1)
        outputs.append(np.asarray(y, dtype=np.float32).reshape(len(inputs), -1))
    ya, yb = outputs
    if ya.shape != yb.shape:
        raise WorkbenchError(
            f"the {a.runtime} file gives outputs of shape {ya.shape[1:]}, the {b.runtime} "
            f"file {yb.shape[1:]}",
            "report this: both files were built from the same model",
        )
    top_a, top_b = ya.argmax(axis=1), yb.argmax(axis=1)
    same = top_a == top_b
    diff = np.abs(ya - yb)
    return CrossRuntimeParity(
        model=model.name,
        recipe=a.recipe.name,
        runtimes=(a.runtime, b.runtime),
        artifacts=(str(a.artifact), str(b.artifact)),
        samples=len(inputs),
        basis=basis,
        top1_agreement=float(same.mean()),
        disagreements=int((~same).sum()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        accuracy=tuple(
            None if labels is None else float((t == labels).mean()) for t in (top_a, top_b)
        ),
        keys=(a.key, b.key),
    )


def _seen_from(parity: CrossRuntimeParity, side: int) -> RuntimeParity:
    """``parity`` as the record of the file on ``side`` (0 or 1): the other one named."""
    other = 1 - side
    return RuntimeParity(
        runtime=parity.runtimes[other],
        key=parity.keys[other],
        artifact=parity.artifacts[other],
        samples=parity.samples,
        basis=parity.basis,
        top1_agreement=parity.top1_agreement,
        disagreements=parity.disagreements,
        max_abs_diff=parity.max_abs_diff,
        mean_abs_diff=parity.mean_abs_diff,
    )


def _with_record(result: Result, record: RuntimeParity) -> Result:
    """``result`` with ``record`` replacing any earlier record for that runtime."""
    kept = tuple(p for p in result.metrics.cross_runtime if p.runtime != record.runtime)
    metrics = dataclasses.replace(result.metrics, cross_runtime=(*kept, record))
    return dataclasses.replace(result, metrics=metrics)


def _record(parity: CrossRuntimeParity, a: Result, b: Result, cache: Any) -> tuple[Result, Result]:
    """``a`` and ``b`` with ``parity`` recorded on each; their cache entries (when ``cache``
    holds them) get the record too, so it is measured once per pair of files."""
    out = []
    for side, result in enumerate((a, b)):
        record = _seen_from(parity, side)
        stored = cache.get(result.key) if cache is not None and result.key else None
        if stored is not None:
            # The entry's own figures and warnings (a caller's may carry extra ones).
            cache.replace_result(result.key, _with_record(stored, record))
        out.append(_with_record(result, record))
    return out[0], out[1]


def _comparable(results: Sequence[Result]) -> bool:
    """Whether these results of one recipe are the same variant: not when a runtime added
    a step the recipe does not have (TFLite Micro quantizes a float recipe to int8)."""
    return not any(step.get("required_by") for r in results for step in r.steps)


def _current(result: Result, partner: Result) -> bool:
    """Whether ``result`` already holds a record of ``partner``'s very file."""
    record = result.metrics.parity_with(partner.runtime)
    return record is not None and record.key == partner.key and bool(partner.key)


def link_cross_runtime_parity(
    results: Sequence[Result], model: Any, cache: Any = None
) -> list[Result]:
    """``results`` (of ``model``), each recipe measured in two or more runtimes given its
    cross-runtime parity: measured on the files already built (never re-exported),
    recorded on both Results and in their cache entries.

    Each recipe's files are compared with its ONNX Runtime file (else the first runtime's
    in ``results``' order). A pair already recorded against the same cache entries is not
    measured again; a pair whose files cannot be run or compared is logged and left
    without a record (a sweep's figures stay). Returns the results in the same order.
    """
    out = list(results)
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(out):
        groups.setdefault(r.recipe, []).append(i)
    for indices in groups.values():
        runtimes = [out[i].runtime for i in indices]
        if len(set(runtimes)) < 2 or not _comparable([out[i] for i in indices]):
            continue
        ref = (
            indices[runtimes.index(DEFAULT_RUNTIME)] if DEFAULT_RUNTIME in runtimes else indices[0]
        )
        for i in indices:
            a, b = out[ref], out[i]
            if b.runtime == a.runtime or (_current(a, b) and _current(b, a)):
                continue
            if not (Path(a.artifact).is_file() and Path(b.artifact).is_file()):
                log.warning("parity of %s: a file is missing, not compared", a.recipe.name)
                continue
            try:
                parity = measure_parity(model, a, b)
            except Exception as exc:  # noqa: BLE001 - a sweep's figures must survive this
                log.warning(
                    "parity of %s in %s and %s could not be measured: %s",
                    a.recipe.name,
                    a.runtime,
                    b.runtime,
                    exc,
                )
                continue
            out[ref], out[i] = _record(parity, a, b, cache)
    return out

"""Parity across runtimes: the same variant built for two runtimes, its files compared.

``cross_runtime_parity(model, recipe, settings)`` builds (or finds in the cache) the
variant's ONNX Runtime artifact and its LiteRT artifact through
:func:`workbench.pipeline.evaluate`, runs both files on the same inputs (the task's test
split, else the seeded random inputs agreement uses), and reports how often their top-1
predictions agree and the largest difference of their float outputs (int8 outputs are
dequantized first). Both files take the model's own input layout (a Keras model's ONNX
export keeps NHWC; a PyTorch model's TFLite file keeps NCHW), so one array feeds both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["PARITY_RUNTIMES", "CrossRuntimeParity", "cross_runtime_parity"]

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

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("runtimes", "artifacts", "accuracy"):
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
    the same inputs.

    Raises:
        WorkbenchError: fewer or more than two runtimes, the same one twice, or a recipe
            one of them cannot build (e.g. int8 I/O in ONNX Runtime).
    """
    from workbench.pipeline import (
        MeasureSettings,
        _coerce_arguments,
        check_applicable,
        evaluate,
        evaluation_inputs,
        subject_model,
    )
    from workbench.runtimes import get_runtime

    runtimes = tuple(runtimes)
    if len(runtimes) != 2 or runtimes[0] == runtimes[1]:
        raise WorkbenchError(
            f"parity compares two different runtimes, not {list(runtimes)}",
            f"pass two runtime names, e.g. {list(PARITY_RUNTIMES)}",
        )
    model, recipe = _coerce_arguments(model, recipe)
    settings = settings or MeasureSettings()
    per_runtime = [dataclasses.replace(settings, runtime=rt) for rt in runtimes]
    for rt_settings in per_runtime:  # both are checked before either is built
        check_applicable(model, recipe, rt_settings.runtime)
    results = [evaluate(model, recipe, settings=s, cache=cache) for s in per_runtime]
    inputs, labels, basis = evaluation_inputs(subject_model(model, recipe))
    outputs = []
    for rt, result in zip(runtimes, results, strict=True):
        y = get_runtime(rt).predict(Path(result.artifact), inputs, batch_size=1)
        outputs.append(np.asarray(y, dtype=np.float32).reshape(len(inputs), -1))
    a, b = outputs
    if a.shape != b.shape:
        raise WorkbenchError(
            f"the {runtimes[0]} file gives outputs of shape {a.shape[1:]}, the {runtimes[1]} "
            f"file {b.shape[1:]}",
            "report this: both files were built from the same model",
        )
    top_a, top_b = a.argmax(axis=1), b.argmax(axis=1)
    same = top_a == top_b
    diff = np.abs(a - b)
    return CrossRuntimeParity(
        model=model.name,
        recipe=recipe.name,
        runtimes=(runtimes[0], runtimes[1]),
        artifacts=(str(results[0].artifact), str(results[1].artifact)),
        samples=len(inputs),
        basis=basis,
        top1_agreement=float(same.mean()),
        disagreements=int((~same).sum()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        accuracy=tuple(
            None if labels is None else float((t == labels).mean()) for t in (top_a, top_b)
        ),
    )

"""Export a PyTorch module to ONNX, and check the file against the module.

The TorchScript-based exporter (``dynamo=False``) is used first: on the sample models
it takes tens of milliseconds where the dynamo exporter takes over a second, and a
slider in the workbench exports a model on every move. The dynamo exporter is the
fallback for modules the tracer cannot handle (e.g. ``torch.export`` programs).
"""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.errors import WorkbenchError

__all__ = ["INPUT_NAME", "OPSET", "OUTPUT_NAME", "ExportReport", "export_onnx"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
# Outputs of the ONNX file and the module may differ by float rounding only; beyond
# this the export is wrong, not merely reordered arithmetic.
PARITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportReport:
    """What an export produced and how closely the file matches the module."""

    path: Path
    exporter: str  # "torchscript" or "dynamo"
    opset: int
    max_abs_diff: float  # largest |onnx - torch| over the parity inputs' outputs
    parity_inputs: int  # how many inputs the parity check ran

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _export_once(module: torch.nn.Module, example: torch.Tensor, dst: Path, dynamo: bool) -> None:
    kwargs: dict = {}
    if dynamo:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1)},)
        kwargs["external_data"] = False  # one self-contained file, whatever its size
    else:
        kwargs["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(dst),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamo=dynamo,
            **kwargs,
        )


def export_onnx(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    dst: str | Path,
    *,
    parity_inputs: np.ndarray | None = None,
) -> ExportReport:
    """Export ``module`` to ``dst`` (written atomically) and check its outputs.

    Args:
        module: a float32 CPU module in eval mode.
        input_shape: the batch-1 input shape; the exported batch dimension is dynamic.
        dst: the .onnx file to write.
        parity_inputs: inputs to compare outputs on (default: 8 seeded random inputs).

    Raises:
        WorkbenchError: when no exporter can export the module, or the file's outputs
            differ from the module's beyond float rounding.
    """
    import onnxruntime as ort

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    if parity_inputs is None:
        gen = torch.Generator().manual_seed(1)
        parity_inputs = torch.randn(8, *input_shape[1:], generator=gen).numpy()
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    errors: list[str] = []
    try:
        for exporter, dynamo in (("torchscript", False), ("dynamo", True)):
            try:
                _export_once(module, example, tmp, dynamo)
                break
            except Exception as exc:  # noqa: BLE001 - each exporter fails in its own way
                errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        else:
            raise WorkbenchError(
                "the model could not be exported to ONNX (" + "; ".join(errors) + ")",
                "replace the unsupported operator or export the model to ONNX yourself and "
                "load the .onnx file",
            )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = module(torch.from_numpy(np.ascontiguousarray(parity_inputs))).numpy()
        got = session.run(None, {session.get_inputs()[0].name: parity_inputs})[0]
        diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if got.size else 0.0
        scale = max(1.0, float(np.max(np.abs(expected))))
        if not np.isfinite(diff) or diff > PARITY_TOLERANCE * scale:
            raise WorkbenchError(
                f"the exported ONNX file's outputs differ from the PyTorch model's by up to "
                f"{diff:.3g} (allowed {PARITY_TOLERANCE * scale:.3g})",
                "check the model for training-mode layers or unsupported operators, then export again",
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(dst, exporter, OPSET, diff, int(len(parity_inputs)))

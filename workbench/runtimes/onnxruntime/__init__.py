"""The ONNX Runtime runtime: ``.onnx`` artifacts measured in ONNX Runtime's CPU provider.

A Keras model is exported with tf2onnx (:func:`workbench.runtimes.keras_onnx.keras_to_onnx`);
a ``.tflite`` file is refused (ONNX Runtime does not run it).

Thin adapters over the measuring code in :mod:`workbench.measure` (sessions, latency,
memory, graph statistics, profiler) and :mod:`workbench.honesty` (the ONNX census and
its warnings); the export is :func:`workbench.onnx_export.export_onnx`, and the step
acting on the artifact is ONNX Runtime's quantization (:mod:`workbench.compress`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.recipe import QuantizeConfig, StepConfig
from workbench.runtimes import Runtime, package_versions, register_runtime

__all__ = ["OnnxRuntime", "onnx_signature"]

# The packages an ONNX Runtime measurement depends on (the cache key covers them).
_DISTRIBUTIONS = ("edge-workbench", "torch", "onnx", "onnxruntime", "torch-pruning", "numpy")


def _quantize_step(src: Path, dst: Path, config: StepConfig, model: Any) -> dict:
    from workbench.compress import quantize
    from workbench.pipeline import calibration_inputs

    calib = (
        calibration_inputs(model, config.calibration_samples) if config.scheme == "int8" else None
    )
    held_out = None
    if config.max_accuracy_drop is not None and model.task is not None:
        held_out = model.task.held_out(model.preprocessing, config.calibration_samples)
    return quantize(src, dst, config, calib, held_out).to_dict()


def onnx_signature(path: str | Path) -> dict[str, list[dict]]:
    """Names, shapes (symbolic dims as names) and element types of an ONNX file's I/O."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def describe(values: Any) -> list[dict]:
        out = []
        for v in values:
            if v.name in init:
                continue
            t = v.type.tensor_type
            shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
            out.append(
                {
                    "name": v.name,
                    "shape": shape,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                }
            )
        return out

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


def _copy_onnx(model: Any, dest: Path) -> None:
    """Copy an ONNX source into ``dest`` as one self-contained file.

    Weights kept beside the file (ONNX external data) are read in, so every artifact
    built from it, and every export, carries its weights with it.
    """
    if not model.meta.get("external_data"):
        shutil.copyfile(model.onnx_path, dest)
        return
    import onnx

    proto = onnx.load(str(model.onnx_path), load_external_data=True)
    if proto.ByteSize() >= 2**31:
        raise WorkbenchError(
            f"{model.name} holds over 2 GB of weights, more than one ONNX file can carry",
            "compress a model small enough for an edge device (under 2 GB of weights)",
        )
    onnx.save(proto, str(dest))


def _is_keras(obj: Any) -> bool:
    """Whether ``obj`` is a Keras model, without importing Keras when nobody has."""
    import sys

    return (
        obj is not None and "keras" in sys.modules and isinstance(obj, sys.modules["keras"].Model)
    )


def _export_keras(keras_model: Any, dst: Path, parity_inputs: np.ndarray) -> float:
    """A Keras model to ONNX through tf2onnx; the largest output difference between
    ONNX Runtime and Keras on ``parity_inputs``."""
    from workbench import measure
    from workbench.runtimes.keras_onnx import keras_to_onnx

    keras_to_onnx(keras_model, dst)
    x = np.asarray(parity_inputs, dtype=np.float32)
    expected = np.asarray(keras_model(x, training=False))
    got = measure.predict(dst, x, batch_size=1)
    return float(np.max(np.abs(got.reshape(expected.shape) - expected)))


@register_runtime
class OnnxRuntime(Runtime):
    """ONNX files in ONNX Runtime (CPU provider), intra-op threads fixed and recorded."""

    name = "onnxruntime"
    title = "ONNX Runtime"
    artifact_format = "onnx"
    artifact_file = "model.onnx"
    artifact_steps = {QuantizeConfig: _quantize_step}
    scheme_descriptions = {
        "dynamic": "int8 weights, activations quantized at run time (best for Linear/LSTM)",
        "int8": "static int8 (QDQ), calibrated on training images",
        "fp16": "float16 weights and compute",
    }

    def check_recipe(self, model: Any, recipe: Any) -> None:
        if model.source == "tflite":
            raise WorkbenchError(
                f"{model.name} is a .tflite file, which ONNX Runtime does not run",
                "measure it with --runtime litert (runtime='litert'), or load the model it "
                "was converted from",
            )
        quant = recipe.get("quantize")
        if isinstance(quant, QuantizeConfig) and quant.io_type != "float":
            raise WorkbenchError(
                f"ONNX Runtime's int8 models take and give float (QDQ), not {quant.io_type}",
                "leave io_type at 'float' (CLI: --io-type float), or measure with --runtime litert",
            )

    def export(
        self, model: Any, module: Any | None, dst: Path, parity_inputs: np.ndarray
    ) -> float | None:
        # A Keras model (a stepped copy, or the model itself) goes through tf2onnx.
        keras_model = getattr(model, "keras_model", None) if module is None else module
        if _is_keras(keras_model):
            return _export_keras(keras_model, dst, parity_inputs)
        if module is None:
            _copy_onnx(model, dst)
            return None
        from workbench.onnx_export import export_onnx

        return export_onnx(module, model.input_shape, dst, parity_inputs=parity_inputs).max_abs_diff

    def predict(self, artifact: Path, inputs: np.ndarray, *, batch_size: int = 1) -> np.ndarray:
        from workbench import measure

        return measure.predict(artifact, inputs, batch_size=batch_size)

    def measure_latency(self, artifact: Path, input_shape: Sequence[int], settings: Any) -> Any:
        from workbench import measure

        return measure.measure_latency(
            artifact,
            input_shape,
            threads=settings.threads,
            warmup=settings.warmup,
            min_runs=settings.min_runs,
            min_seconds=settings.min_seconds,
        )

    def measure_latency_interleaved(
        self,
        artifacts: Sequence[Path],
        input_shapes: Sequence[Sequence[int]],
        settings: Any,
    ) -> Any:
        from workbench import measure

        return measure.measure_latency_interleaved(
            list(artifacts),
            input_shapes=list(input_shapes),
            threads=settings.threads,
            warmup=settings.warmup,
            rounds=settings.rounds,
            min_runs=settings.min_runs,
            min_seconds=settings.min_seconds,
        )

    def measure_memory(self, artifact: Path, input_shape: Sequence[int], threads: int) -> Any:
        from workbench import measure

        return measure.measure_memory(artifact, input_shape, threads=threads)

    def graph_stats(self, artifact: Path) -> Any:
        from workbench import measure

        return measure.graph_stats(artifact)

    def io_signature(self, artifact: Path) -> list[dict[str, Any]]:
        sig = onnx_signature(artifact)
        return [{"role": "input", **d} for d in sig["inputs"]] + [
            {"role": "output", **d} for d in sig["outputs"]
        ]

    def profile_operators(
        self, artifact: Path, input_shape: Sequence[int], threads: int
    ) -> dict[str, float]:
        from workbench import measure

        return measure.profile_operators(artifact, input_shape, threads=threads)

    def census(self, artifact: Path) -> Any:
        from workbench.honesty import conv_census

        return conv_census(artifact)

    def honesty_warnings(
        self,
        recipe: Any,
        metrics: Any,
        baseline: Any | None,
        census: Any,
        max_accuracy_drop: float,
    ) -> tuple[str, ...]:
        from workbench.honesty import honesty_warnings

        return honesty_warnings(
            recipe, metrics, baseline, census, max_accuracy_drop, runtime=self.name
        )

    def versions(self) -> dict[str, str]:
        return package_versions(_DISTRIBUTIONS)

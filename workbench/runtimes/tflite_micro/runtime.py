"""The ``tflite-micro`` runtime: full-integer int8 ``.tflite`` files in TensorFlow Lite Micro.

What a microcontroller runs: the model as a full-integer int8 TFLite flatbuffer with
int8 input and output, in TFLM's interpreter. Here:

- Export: exactly LiteRT's (one route, one converter): the Keras model of the variant
  (the Keras model itself, or a PyTorch/ONNX model rebuilt in Keras with the same input
  layout by ``workbench.runtimes.onnx_keras.keras_for``) converted to a float
  ``.tflite`` (the parity check against the source), then by the int8 step, LiteRT's
  quantize step, to full-integer int8 with int8 input and output, its representative
  data drawn from the task's training part. LiteRT's refusals of settings the converter
  cannot honour apply here too. A ``.tflite`` source is measured as it is, if it is
  full-integer.
- Quantization: TFLM runs integer kernels only, so a recipe without quantization is
  given the int8 step by this runtime (it shows in the result's steps, marked
  ``"required_by": "tflite-micro"``): the baseline and every pruned or distilled variant
  can then be measured in TFLM, and their figures are the int8 model's, which is what
  the device would run. A recipe that asks for another scheme (fp16, dynamic) or for
  layers kept in float is refused with one clear error instead: replacing what the user
  asked for would measure something else under their recipe's name. A float ``.tflite``
  file is refused with the fix.
- Accuracy and agreement: measured in TFLM's interpreter (reference kernels), one
  input at a time (``runner.predict``).
- Memory: the exact tensor arena the interpreter needs (activations + persistent
  buffers, ``runner.tensor_arena``), in ``Metrics.arena``; ``Metrics.memory.peak_bytes``
  is the arena size firmware should reserve. Flash: the model's bytes.
- Latency: none. TFLM's reference kernels on this machine say nothing about a
  microcontroller's time; the device roofline estimate
  (``workbench.devices.estimate``) is the figure to show, labelled as an estimate.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.errors import WorkbenchError
from workbench.recipe import QuantizeConfig, StepConfig
from workbench.results import MemoryStats
from workbench.runtimes import Runtime, package_versions, register_runtime

__all__ = ["TFLM_RUNTIME", "TFLiteMicroRuntime"]

TFLM_RUNTIME = "tflite-micro"
# The only scheme TFLM runs here, and the I/O type a microcontroller wants.
_SCHEME = "int8"
_IO = "int8"
# The packages a TFLM measurement depends on (the cache key covers them).
_DISTRIBUTIONS = (
    ("edge-workbench", ("edge-workbench",)),
    ("tflite-micro", ("tflite-micro",)),
    ("tensorflow", ("tensorflow-cpu", "tensorflow")),  # the converter
    ("keras", ("keras",)),
    ("ai-edge-litert", ("ai-edge-litert",)),  # the flatbuffer schema, the float parity run
    ("torch", ("torch",)),
    ("onnx", ("onnx",)),
    ("numpy", ("numpy",)),
)


@dataclasses.dataclass(frozen=True)
class RequiredInt8(QuantizeConfig):
    """The full-integer int8 step TFLite Micro adds to a recipe that has none."""


def _litert() -> Any:
    # TFLite Micro's file is made exactly as LiteRT's (one export, one converter).
    from workbench.runtimes import get_runtime

    return get_runtime("litert")


def _int8_step(src: Path, dst: Path, config: StepConfig, model: Any) -> dict:
    """Full-integer int8 with int8 input and output, converted by LiteRT's quantize step
    from the Keras model ``src`` was converted from (calibrated on the training part)."""
    from workbench.runtimes.litert.runtime import _quantize_step
    from workbench.runtimes.tflite_micro.runner import check_integer_model

    required = isinstance(config, RequiredInt8)
    if model.source == "tflite" and required:
        # A .tflite file is measured as it is: TFLM runs it only if it is full-integer.
        check_integer_model(src)
        shutil.copyfile(src, dst)
        return {
            "scheme": _SCHEME,
            "source": "the .tflite file as it is",
            "required_by": TFLM_RUNTIME,
        }
    as_int8 = QuantizeConfig(**{**_fields(config), "scheme": _SCHEME, "io_type": _IO})
    report = _quantize_step(src, dst, as_int8, model)
    check_integer_model(dst)  # the converter kept a float op: refused with the fix
    if required:
        report["required_by"] = TFLM_RUNTIME
        report["why"] = (
            "TensorFlow Lite Micro runs full-integer int8 models: the runtime quantized this "
            "variant (int8 input and output, calibrated on the training part)"
        )
    return report


def _fields(config: QuantizeConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(QuantizeConfig)}


@functools.lru_cache(maxsize=32)
def _arena(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    # Keyed by size and mtime too, so a rewritten file is searched again; memory and
    # the arena report of one variant share one search (each probe is a process).
    from workbench.runtimes.tflite_micro.runner import tensor_arena

    return tensor_arena(path).to_dict()


def arena_of(artifact: str | os.PathLike) -> dict[str, Any]:
    """``ArenaReport.to_dict()`` of an int8 ``.tflite``, searched once per file version."""
    st = os.stat(artifact)
    return dict(_arena(str(Path(artifact).resolve()), st.st_size, st.st_mtime_ns))


# The C array's name, as ``xxd -i model.tflite`` would call it: the header declares
# C_ARRAY_NAME[], C_ARRAY_NAME_len and C_ARRAY_NAME_arena_size.
C_ARRAY_NAME = "model_tflite"


def c_array_files(
    artifact: str | os.PathLike, dst_dir: str | os.PathLike, arena: dict[str, Any] | None = None
) -> list[dict]:
    """Write ``artifact`` as a C array into ``dst_dir`` and return their manifest entries.

    The arena size written is ``arena["firmware_bytes"]`` (found again when ``arena`` is
    None). The ``.cc`` is read back and must hold exactly the artifact's bytes.
    """
    import hashlib

    from workbench.cache import sha256_file
    from workbench.runtimes.tflite_micro.c_array import export_c_array, read_c_array

    arena = arena or arena_of(artifact)
    data = Path(artifact).read_bytes()
    header, source = export_c_array(
        artifact, dst_dir, name=C_ARRAY_NAME, arena_size=int(arena["firmware_bytes"])
    )
    if read_c_array(source.read_text(encoding="ascii")) != data:
        raise WorkbenchError(
            f"the C array written for {Path(artifact).name} does not hold the model's bytes",
            "report this: export_c_array wrote a different array",
        )
    common = {
        "array": C_ARRAY_NAME,
        "length_bytes": len(data),
        "arena_size_bytes": int(arena["firmware_bytes"]),
        "alignment_bytes": 16,
        "model_sha256": hashlib.sha256(data).hexdigest(),
    }
    return [
        {
            "file": path.name,
            "format": fmt,
            "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size,
            **common,
        }
        for path, fmt in ((header, "c-header"), (source, "c-array"))
    ]


@register_runtime
class TFLiteMicroRuntime(Runtime):
    """Full-integer int8 ``.tflite`` files in TensorFlow Lite Micro (reference kernels)."""

    name = TFLM_RUNTIME
    title = "TensorFlow Lite Micro"
    artifact_format = "tflite"
    artifact_file = "model.tflite"
    artifact_steps: ClassVar[dict] = {QuantizeConfig: _int8_step, RequiredInt8: _int8_step}
    measures_latency = False
    scheme_descriptions: ClassVar[dict[str, str]] = {
        "int8": "full-integer int8 with int8 input and output (TFLite converter), ranges "
        "from a representative dataset of training images",
    }
    quantize_settings: ClassVar[tuple[str, ...] | None] = ("calibration_samples",)

    def step_label(self, step: Any) -> str:
        # LiteRT's words (one converter), with the int8 input and output TFLM always gets.
        if isinstance(step, QuantizeConfig) and step.scheme == _SCHEME:
            from workbench.runtimes.litert.runtime import quantize_label

            return quantize_label(step, io_type=_IO)
        return step.label()

    def required_steps(self, steps: tuple[Any, ...]) -> tuple[Any, ...]:
        quant = [s for s in steps if isinstance(s, QuantizeConfig)]
        if not quant:
            return (*steps, RequiredInt8())
        for q in quant:
            if q.scheme != _SCHEME:
                raise WorkbenchError(
                    f"TensorFlow Lite Micro runs full-integer int8 models, and the recipe "
                    f"asks for {q.scheme!r} quantization",
                    "use --quantize int8 (QuantizeConfig(scheme='int8')) or no quantization "
                    "(tflite-micro then quantizes to int8 itself), or measure the "
                    f"{q.scheme} variant in onnxruntime or litert",
                )
            if q.keep_float or q.max_accuracy_drop is not None:
                raise WorkbenchError(
                    "TensorFlow Lite Micro runs integer kernels only, and the recipe keeps "
                    "layers in float (keep_float / max_accuracy_drop)",
                    "leave keep_float empty and max_accuracy_drop unset (every layer int8) "
                    "for tflite-micro, or measure the mixed variant in onnxruntime",
                )
        return steps

    def check_recipe(self, model: Any, recipe: Any) -> None:
        # The same converter as LiteRT's, so the same settings it cannot honour.
        _litert().check_recipe(model, recipe)

    def export(
        self, model: Any, module: Any | None, dst: Path, parity_inputs: np.ndarray
    ) -> float | None:
        return _litert().export(model, module, Path(dst), parity_inputs)

    def predict(self, artifact: Path, inputs: np.ndarray, *, batch_size: int = 1) -> np.ndarray:
        from workbench.runtimes.tflite_micro.runner import predict

        if batch_size != 1:
            raise WorkbenchError(
                f"TensorFlow Lite Micro runs one input at a time, not batches of {batch_size}",
                "use batch_size=1",
            )
        return predict(artifact, np.asarray(inputs, dtype=np.float32))

    def measure_latency(self, artifact: Path, input_shape: Sequence[int], settings: Any) -> Any:
        raise WorkbenchError(
            "TensorFlow Lite Micro latency is not measured here: a microcontroller's time is "
            "not this machine's",
            "use the device estimate (workbench.devices.estimate.device_latency) or measure "
            "on the device",
        )

    def measure_latency_interleaved(
        self, artifacts: Sequence[Path], input_shapes: Sequence[Sequence[int]], settings: Any
    ) -> Any:
        return self.measure_latency(artifacts[0], input_shapes[0], settings)

    def measure_memory(self, artifact: Path, input_shape: Sequence[int], threads: int) -> Any:
        arena = arena_of(artifact)["firmware_bytes"]
        return MemoryStats(peak_bytes=arena, process_peak_bytes=arena, baseline_bytes=0)

    def arena_report(self, artifact: Path) -> dict[str, Any] | None:
        return arena_of(artifact)

    def graph_stats(self, artifact: Path) -> Any:
        from workbench.runtimes.litert.flatbuffer import graph_stats

        return graph_stats(artifact)

    def io_signature(self, artifact: Path) -> list[dict[str, Any]]:
        from workbench.runtimes.litert.flatbuffer import io_signature

        inputs, outputs = io_signature(artifact)
        return [{"role": "input", **t.to_dict()} for t in inputs] + [
            {"role": "output", **t.to_dict()} for t in outputs
        ]

    def deployment_files(self, artifact: Path, dst_dir: Path, metrics: Any) -> list[dict]:
        """The model as a C array for firmware (``.h`` + ``.cc``, 16-byte aligned, with
        its length and the arena size as constants), checked byte-identical to the file."""
        return c_array_files(artifact, dst_dir, metrics.arena)

    def census(self, artifact: Path) -> Any:
        from workbench.runtimes.litert.flatbuffer import graph_stats

        return graph_stats(artifact).op_counts

    def honesty_warnings(
        self,
        recipe: Any,
        metrics: Any,
        baseline: Any | None,
        census: Any,
        max_accuracy_drop: float,
    ) -> tuple[str, ...]:
        warnings = []
        if (
            baseline is not None
            and metrics.accuracy is not None
            and baseline.accuracy is not None
            and (baseline.accuracy - metrics.accuracy) * 100 > max_accuracy_drop
        ):
            warnings.append(
                f"accuracy dropped {(baseline.accuracy - metrics.accuracy) * 100:.2f} points "
                f"against the int8 baseline in TFLite Micro (limit {max_accuracy_drop:g})"
            )
        return tuple(warnings)

    def versions(self) -> dict[str, str]:
        return package_versions(_DISTRIBUTIONS)

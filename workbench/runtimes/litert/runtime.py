"""The LiteRT runtime: ``.tflite`` artifacts measured in LiteRT (XNNPACK on as shipped).

How a model becomes a ``.tflite``:

- a Keras model (or its pruned copy) through the TFLite converter
  (:func:`workbench.runtimes.litert.export_tflite`);
- a PyTorch module or an ONNX file through a Keras rebuild of its ONNX export
  (``workbench.runtimes.onnx_keras.keras_for``), then the same converter;
- a ``.tflite`` file is measured as it is (copied; no steps).

The export writes the float file and keeps the Keras model it converted beside it
(``float.keras``); the quantize step re-converts that Keras model under the asked
scheme (fp16, dynamic-range int8, or full-integer int8 calibrated on images from the
training part only, with int8 or float input and output). ONNX Runtime's quantization
options that the TFLite converter has no equivalent for are refused, not ignored.

Latency, memory and predictions go through :mod:`workbench.runtimes.litert.session`
and :mod:`workbench.runtimes.litert.memory`, timed with the loop every runtime shares
(:mod:`workbench.measure.timing`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.recipe import QuantizeConfig, StepConfig
from workbench.runtimes import Runtime, register_runtime

__all__ = ["KERAS_BESIDE_SUFFIX", "LiteRT", "keras_beside", "quantize_label"]

# The Keras model a float .tflite was converted from is kept beside it under this suffix.
KERAS_BESIDE_SUFFIX = ".keras"
# The Keras models this process converted, by the path of the float file: the quantize
# step re-converts them without a round trip through disk (which a Keras model rebuilt
# from ONNX might not survive in safe mode). The file on disk serves everyone else.
_BESIDE: dict[str, Any] = {}
_BESIDE_KEPT = 4  # models kept in memory at most (the latest builds)

# QuantizeConfig settings that are ONNX Runtime's: field -> why LiteRT cannot honour a
# value other than the default. LiteRT's full-integer int8 is set by the converter: int8
# weights per channel (or per tensor, per_channel=False), int8 activations per tensor,
# ranges from the representative dataset's min/max.
_ONNX_ONLY = {
    "calibration": "the TFLite converter calibrates on the min/max of the representative "
    "dataset only",
    "keep_float": "the TFLite converter has no per-layer float exclusion here",
    "bias_correction": "bias correction is an ONNX Runtime step of the workbench",
    "max_accuracy_drop": "accuracy-aware quantization keeps ONNX nodes in float",
    "weight_type": "TFLite int8 weights are signed int8",
    "overflow_fix": "the overflow fix rewrites ONNX weights for ONNX Runtime's x86 kernels",
}


# The converter's quantization in the TFLite documentation's terms.
_SCHEME_DESCRIPTIONS = {
    "dynamic": "dynamic-range int8 (TFLite converter): int8 weights, activations quantized "
    "on the fly per inference",
    "int8": "full-integer int8 (TFLite converter): int8 weights per channel and activations "
    "per tensor, ranges from a representative dataset of training images",
    "fp16": "float16 weights (TFLite converter), dequantized to float32 at load; float32 compute",
}
# What each scheme is called in a LiteRT variant's name.
_SCHEME_LABELS = {"fp16": "fp16", "dynamic": "int8-dynamic-range", "int8": "int8-full"}


def quantize_label(config: QuantizeConfig, io_type: str | None = None) -> str:
    """``config`` named in the TFLite converter's terms ("int8-full", "int8-dynamic-range",
    "fp16"), with what it sets that LiteRT honours: a calibration sample count other than
    the default ("-n256"), one weight scale per tensor ("-pt") and int8 input/output
    ("-ioint8"; ``io_type`` overrides the config's, as TFLite Micro's int8 I/O does). The
    ONNX Runtime settings LiteRT refuses (see ``_ONNX_ONLY``) never reach a LiteRT
    variant, so they have no wording here."""
    label = _SCHEME_LABELS[config.scheme]
    full = config.scheme == "int8"
    if full and config.calibration_samples != QuantizeConfig.calibration_samples:
        label += f"-n{config.calibration_samples}"
    if config.scheme in ("int8", "dynamic") and not config.per_channel:
        label += "-pt"
    if full and (io_type or config.io_type) != "float":
        label += f"-io{io_type or config.io_type}"
    return label


def _is_keras(obj: Any) -> bool:
    """Whether ``obj`` is a Keras model, without importing Keras when nobody has."""
    return (
        obj is not None and "keras" in sys.modules and isinstance(obj, sys.modules["keras"].Model)
    )


def keras_beside(float_file: Path) -> Any:
    """The Keras model the float ``.tflite`` at ``float_file`` was converted from.

    Raises:
        WorkbenchError: none was kept (the file did not come from this runtime's export).
    """
    kept = _BESIDE.get(str(float_file))
    if kept is not None:
        return kept
    path = Path(float_file).with_suffix(KERAS_BESIDE_SUFFIX)
    if not path.is_file():
        raise WorkbenchError(
            f"no Keras model is kept beside {Path(float_file).name}, so it cannot be "
            "re-converted under another scheme",
            "build the variant through workbench.evaluate with runtime='litert'",
        )
    from workbench.runtimes.keras_io import load_keras

    # A model rebuilt from ONNX may hold the rebuild's own layers: registered here, the
    # file loads in a process that did not build it too (Keras' safe mode stays on).
    try:
        from workbench.runtimes.onnx_keras import custom_objects
    except ImportError:  # a build without the ONNX route: no rebuilt models to load
        pass
    else:
        custom_objects()
    return load_keras(path)


def _keep_beside(keras_model: Any, float_file: Path) -> None:
    _BESIDE[str(float_file)] = keras_model
    while len(_BESIDE) > _BESIDE_KEPT:
        _BESIDE.pop(next(iter(_BESIDE)))
    try:
        keras_model.save(float_file.with_suffix(KERAS_BESIDE_SUFFIX))
    except Exception:  # noqa: BLE001 - the in-memory copy serves this process
        float_file.with_suffix(KERAS_BESIDE_SUFFIX).unlink(missing_ok=True)


def _quantize_step(src: Path, dst: Path, config: StepConfig, model: Any) -> dict:
    from workbench.pipeline import calibration_inputs
    from workbench.runtimes.litert.export import export_tflite

    start = time.perf_counter()
    keras_model = keras_beside(src)
    calib = (
        calibration_inputs(model, config.calibration_samples) if config.scheme == "int8" else None
    )
    export_tflite(
        keras_model,
        dst,
        config.scheme,
        calibration=calib,
        io=config.io_type,
        per_channel=config.per_channel,
    )
    return {
        "scheme": config.scheme,
        "label": quantize_label(config),
        "converter": "tf.lite.TFLiteConverter.from_keras_model",
        "io_type": config.io_type if config.scheme == "int8" else "float",
        "calibration_samples": len(calib) if calib is not None else 0,
        "settings": {
            "fp16": "float16 weights, dequantized to float32 at load; float32 compute",
            "dynamic": "int8 weights; activations quantized on the fly per inference",
            "int8": "int8 weights (per channel) and activations (per tensor), ranges from the "
            "representative dataset (min/max), TFLITE_BUILTINS_INT8",
        }[config.scheme],
        "seconds": round(time.perf_counter() - start, 3),
    }


def _onnx_keras():
    """``workbench.runtimes.onnx_keras`` (the PyTorch/ONNX -> Keras route), or a clear error."""
    try:
        from workbench.runtimes import onnx_keras
    except ImportError:
        raise WorkbenchError(
            "PyTorch and ONNX models reach LiteRT through workbench.runtimes.onnx_keras "
            "(ONNX -> Keras -> TFLite), which this build does not have yet",
            "measure a Keras model or a .tflite file in LiteRT, or this model with "
            "--runtime onnxruntime",
        ) from None
    return onnx_keras


@register_runtime
class LiteRT(Runtime):
    """``.tflite`` files in LiteRT's interpreter (``ai-edge-litert``), XNNPACK applied by
    its default op resolver as a user gets it, ``num_threads`` fixed and recorded."""

    name = "litert"
    title = "LiteRT"
    artifact_format = "tflite"
    artifact_file = "model.tflite"
    artifact_steps = {QuantizeConfig: _quantize_step}
    scheme_descriptions = _SCHEME_DESCRIPTIONS
    quantize_settings = ("calibration_samples", "io_type", "per_channel")

    def step_label(self, step: Any) -> str:
        if isinstance(step, QuantizeConfig):
            return quantize_label(step)
        return step.label()

    # --- making the artifact -------------------------------------------------------
    def check_recipe(self, model: Any, recipe: Any) -> None:
        # QAT needs no refusal: its trained weights sit on the per-channel symmetric int8
        # grid that the converter's full-integer int8 uses too, and the pipeline adds the
        # implied int8 step (QATConfig.quantize_config, defaults the converter honours).
        quant = recipe.get("quantize")
        if model.source == "tflite" and recipe.steps:
            kinds = " and ".join(s.kind for s in recipe.steps)
            raise WorkbenchError(
                f"{model.name} is a .tflite file, measured as it is; {kinds} needs the model "
                "it was converted from",
                "load the Keras or PyTorch model it was converted from, or measure the file "
                "without steps",
            )
        if isinstance(quant, QuantizeConfig):
            defaults = QuantizeConfig(scheme=quant.scheme)
            refused = [
                f"{name}={getattr(quant, name)!r} ({why})"
                for name, why in _ONNX_ONLY.items()
                if getattr(quant, name) != getattr(defaults, name)
            ]
            if refused:
                raise WorkbenchError(
                    "LiteRT cannot honour the ONNX Runtime quantization setting(s) "
                    + "; ".join(refused),
                    "leave them at their defaults for --runtime litert (the converter "
                    "calibrates on min/max), or use --runtime onnxruntime",
                )
        if model.source != "tflite" and getattr(model, "keras_model", None) is None:
            _onnx_keras()  # PyTorch and ONNX sources need the ONNX -> Keras route

    def export(
        self, model: Any, module: Any | None, dst: Path, parity_inputs: np.ndarray
    ) -> float | None:
        from workbench.runtimes.litert.export import export_tflite
        from workbench.runtimes.litert.session import predict

        if model.source == "tflite":
            shutil.copyfile(model.tflite_path, dst)
            return None
        keras_model = getattr(model, "keras_model", None) if module is None else module
        if not _is_keras(keras_model):
            # The ONNX file the rebuild starts from is scratch, not part of the artifact.
            with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".onnx-keras-") as scratch:
                keras_model = _onnx_keras().keras_for(model, module, scratch)
        export_tflite(keras_model, dst, "float")
        _keep_beside(keras_model, dst)
        x = np.asarray(parity_inputs, dtype=np.float32)
        expected = _source_outputs(model, module, keras_model, x)
        got = predict(dst, x)
        return float(np.max(np.abs(got.reshape(expected.shape) - expected)))

    # --- measuring it --------------------------------------------------------------
    def predict(self, artifact: Path, inputs: np.ndarray, *, batch_size: int = 1) -> np.ndarray:
        from workbench.runtimes.litert.session import predict

        # LiteRT runs the file's own batch (1 for a converted model): one row at a time.
        return predict(artifact, inputs)

    def measure_latency(self, artifact: Path, input_shape: Sequence[int], settings: Any) -> Any:
        from workbench.runtimes.litert.session import measure_latency

        _check_shape(artifact, input_shape)
        return measure_latency(
            artifact,
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
        from workbench.measure.timing import time_interleaved
        from workbench.runtimes.litert.session import _random_input, make_interpreter

        if len(input_shapes) != len(artifacts):
            raise WorkbenchError(
                f"{len(input_shapes)} input shape(s) for {len(artifacts)} artifact(s)",
                "give one input shape per artifact",
            )
        calls = []
        for path, shape in zip(artifacts, input_shapes, strict=True):
            interpreter = make_interpreter(path, settings.threads)
            inp = interpreter.get_input_details()[0]
            _check_shape(path, shape, inp["shape"])
            feed, index = _random_input(inp), inp["index"]
            set_tensor, invoke = interpreter.set_tensor, interpreter.invoke
            for _ in range(settings.warmup):
                set_tensor(index, feed)
                invoke()

            def call(set_tensor=set_tensor, invoke=invoke, index=index, feed=feed) -> None:
                set_tensor(index, feed)
                invoke()

            calls.append(call)
        return time_interleaved(
            calls,
            warmup=settings.warmup,
            threads=settings.threads,
            rounds=settings.rounds,
            min_runs=settings.min_runs,
            min_seconds=settings.min_seconds,
            max_runs=5000,
        )

    def measure_memory(self, artifact: Path, input_shape: Sequence[int], threads: int) -> Any:
        from workbench.runtimes.litert.memory import measure_memory

        return measure_memory(artifact, threads=threads)

    def delegation(self, artifact: Path, threads: int) -> dict[str, Any] | None:
        from workbench.runtimes.litert.session import delegation_of

        return delegation_of(artifact, threads).to_dict()

    def graph_stats(self, artifact: Path) -> Any:
        from workbench.runtimes.litert.flatbuffer import graph_stats

        return graph_stats(artifact)

    def io_signature(self, artifact: Path) -> list[dict[str, Any]]:
        from workbench.runtimes.litert.flatbuffer import io_signature

        inputs, outputs = io_signature(artifact)
        return [{"role": "input", **t.to_dict()} for t in inputs] + [
            {"role": "output", **t.to_dict()} for t in outputs
        ]

    def profile_operators(
        self, artifact: Path, input_shape: Sequence[int], threads: int
    ) -> dict[str, float]:
        # LiteRT's Python API has no per-operator profiler (see session.operator_profile):
        # no figure rather than a guessed one.
        return {}

    # --- saying what it means ------------------------------------------------------
    def honesty_warnings(
        self,
        recipe: Any,
        metrics: Any,
        baseline: Any | None,
        census: Any,
        max_accuracy_drop: float,
    ) -> tuple[str, ...]:
        from workbench.honesty import accuracy_warnings, slower_than_float_warning
        from workbench.recipe import PruneConfig

        out: list[str] = []
        prune = recipe.get("prune") or recipe.get("gradual_prune")
        if isinstance(prune, PruneConfig) and prune.method == "unstructured" and prune.sparsity:
            out.append(
                f"Unstructured pruning ({metrics.nonzero_params:,} of {metrics.params:,} "
                "parameters are non-zero) gives no latency gain in LiteRT: XNNPACK's dense "
                "kernels still store and multiply the zeros. It shrinks the file only once "
                "compressed. Structured pruning (of a PyTorch model) cuts latency."
            )
        quant = recipe.get("quantize")
        if isinstance(quant, QuantizeConfig) and quant.scheme in ("int8", "dynamic"):
            slower = slower_than_float_warning(
                quant, metrics, cpu_note(), label=self.step_label(quant)
            )
            if slower:
                out.append(slower)
        out += accuracy_warnings(metrics, baseline, max_accuracy_drop)
        return tuple(out)

    def versions(self) -> dict[str, str]:
        from workbench.runtimes import package_versions
        from workbench.runtimes.litert.session import LITERT_PACKAGES

        # A PyTorch or ONNX source reaches the converter through torch's ONNX export and
        # the ONNX reader: their versions decide the file too.
        return package_versions(("edge-workbench", "numpy", *LITERT_PACKAGES, "torch", "onnx"))


def cpu_note() -> str:
    """The CPU's int8-relevant features, for the int8-slower-than-float warning."""
    from workbench.measure.environment import cpu_features, has_int8_dot_product

    features = ", ".join(sorted(cpu_features())) or "none detected"
    dot = (
        "it has an int8 dot-product instruction"
        if has_int8_dot_product()
        else "no int8 dot-product instruction (VNNI on x86, dotprod on Arm), so XNNPACK's "
        "int8 kernels widen to 16 bits"
    )
    return f"This CPU's features: {features}; {dot}."


def _check_shape(artifact: Path, shape: Sequence[int], actual: Any = None) -> None:
    if actual is None:
        from workbench.runtimes.litert.session import input_shape

        actual = input_shape(artifact)
    if tuple(int(d) for d in actual) != tuple(int(d) for d in shape):
        raise WorkbenchError(
            f"{Path(artifact).name} takes input shape {[int(d) for d in actual]}, not {list(shape)}",
            "time the file with its own input shape (a converted Keras model takes NHWC)",
        )


def _source_outputs(model: Any, module: Any, keras_model: Any, x: np.ndarray) -> np.ndarray:
    """What the float file must reproduce: the PyTorch module's outputs, the ONNX file's
    in ONNX Runtime, or the Keras model's."""
    if module is not None and not _is_keras(module):
        import torch

        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    if module is None and model.source == "onnx":
        from workbench import measure

        return measure.predict(model.onnx_path, x, batch_size=1)
    return np.asarray(keras_model(x, training=False))

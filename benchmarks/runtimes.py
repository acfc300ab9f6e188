"""LiteRT and TensorFlow Lite Micro targets, measured side by side in one run (1 thread).

Keras models through the TFLite converter: the Keras digits sample and Keras
MobileNetV2 at 224x224 (random weights). Prints each target with the figures behind
it; exits 1 if a target is missed. The int8 speed ratios are printed, not targets:
they depend on the CPU, whose int8 features are printed beside them. Latency ratios
come from interleaved rounds (float, int8, float, int8, ...) so that the shared
machine's noise falls on both sides alike; each side's figure is the median of its
rounds' p50s.

    python benchmarks/runtimes.py [--quick] [--rounds N] [--json FILE]

ONNX Runtime runs the same Keras models beside LiteRT (tf2onnx, then the workbench's
static int8 QDQ quantizer). The PyTorch digits samples go the workbench's own route to
TFLite (ONNX export, the in-project ONNX -> Keras rebuild, the TFLite converter) and
their ONNX files through the same int8 quantizer, so digits-mobilenetv2 is compared
across the two runtimes as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from compression import Report  # benchmarks/compression.py: the same PASS/MISS rows

from workbench import measure
from workbench._tf import keras
from workbench.data.digits import DIGITS
from workbench.runtimes import litert
from workbench.runtimes import tflite_micro as tflm

SIZE_RATIO_FLOOR = 3.5  # full-int8 TFLite at least 3.5x smaller than float TFLite
ACCURACY_LOSS_CEILING = 0.01  # full-int8 loses at most 1 point of test accuracy


def interleaved_p50(paths: dict[str, Path], rounds: int, seconds: float) -> dict[str, float]:
    """Median over interleaved rounds of each file's p50 latency (1 thread), in ms.

    ``.tflite`` files run in LiteRT, ``.onnx`` files in ONNX Runtime (batch 1).
    """
    p50s: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            if path.suffix == ".onnx":
                stats = measure.measure_latency(
                    path, None, threads=1, warmup=5, min_runs=20, min_seconds=seconds
                )
            else:
                stats = litert.measure_latency(
                    path, threads=1, warmup=5, min_runs=20, min_seconds=seconds
                )
            p50s[name].append(stats.p50)
    return {k: statistics.median(v) for k, v in p50s.items()}


def _onnx_pair(model, tmp: Path, stem: str, calibration: np.ndarray) -> dict[str, Path]:
    """The Keras model as float ONNX (tf2onnx) and as the workbench's static int8 QDQ ONNX."""
    from workbench.compress.quantize import quantize
    from workbench.recipe import QuantizeConfig
    from workbench.runtimes.keras_onnx import keras_to_onnx

    onnx_float = keras_to_onnx(model, tmp / f"{stem}-float.onnx")
    onnx_int8 = tmp / f"{stem}-int8.onnx"
    config = QuantizeConfig(scheme="int8", per_channel=True, calibration="minmax")
    quantize(onnx_float, onnx_int8, config, calibration=calibration)
    return {"ort-float": onnx_float, "ort-int8": onnx_int8}


def _runtimes_side_by_side(paths: dict[str, Path], rounds: int, seconds: float, label: str):
    p50 = interleaved_p50(paths, rounds, seconds)
    sizes = ", ".join(f"{k} {p.stat().st_size} B" for k, p in paths.items())
    times = ", ".join(f"{k} {v:.4g} ms" for k, v in p50.items())
    print(
        f"[INFO] {label}: p50 {times}; int8 speed-up LiteRT "
        f"{p50['float'] / p50['int8']:.2f}x, ONNX Runtime "
        f"{p50['ort-float'] / p50['ort-int8']:.2f}x; sizes {sizes}",
        flush=True,
    )
    return p50


def _size_breakdown(label: str, model, calibration: np.ndarray, paths: dict[str, Path]) -> None:
    """Where the bytes of the float and int8 files go (litert.footprint: every byte in one
    category), and the size ratio before the export's slimming (the converter's own files,
    converted again here) and with inner tensor names stripped (``names="strip"``)."""
    raw = {
        scheme: litert.convert_keras(model, scheme, calibration=calibration, slim=False)
        for scheme in ("float", "int8")
    }
    strip = {k: len(litert.slim_tflite(v, names="strip")) for k, v in raw.items()}
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    print(
        f"[INFO] {label}: float/int8 size ratio of the converter's own files "
        f"{len(raw['float']) / len(raw['int8']):.3f}x ({len(raw['float'])} / {len(raw['int8'])} "
        f"B); as exported (shared vectors, no empty buffers, names {litert.DEFAULT_NAME_MODE!r}) "
        f"{sizes['float'] / sizes['int8']:.3f}x; with inner names stripped "
        f"{strip['float'] / strip['int8']:.3f}x ({strip['float']} / {strip['int8']} B)",
        flush=True,
    )
    for scheme in ("float", "int8"):
        print(
            f"[INFO] {label} {scheme} bytes: exported {litert.footprint(paths[scheme]).line()}; "
            f"converter's {litert.footprint(raw[scheme]).line()}",
            flush=True,
        )


def _int8_speed(p50: dict[str, float], label: str) -> None:
    features = ",".join(sorted(measure.cpu_features())) or "none detected"
    print(
        f"[INFO] {label}: LiteRT p50 float {p50['float']:.4g} ms, int8 {p50['int8']:.4g} ms, "
        f"int8 speed-up {p50['float'] / p50['int8']:.2f}x (CPU features: {features}; int8 "
        f"dot-product: {measure.has_int8_dot_product()})",
        flush=True,
    )


def bench_keras_digits(rep: Report, tmp: Path, rounds: int, seconds: float) -> None:
    from sample_models.train_keras import KERAS_SAMPLE_DIR, KERAS_SPEC, MODEL_FILE, nhwc

    model = keras().models.load_model(KERAS_SAMPLE_DIR / KERAS_SPEC.name / MODEL_FILE)
    prep = KERAS_SPEC.preprocessing
    calibration = nhwc(DIGITS.calibration(prep, 200))
    x, y = DIGITS.arrays("test", prep)
    x = nhwc(x)
    paths = {
        scheme: litert.export_tflite(
            model, tmp / f"digits-{scheme}.tflite", scheme, calibration=calibration
        )
        for scheme in ("float", "int8")
    }
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    stats = litert.graph_stats(paths["float"])
    rep.check(
        "Keras digits sample: full-int8 TFLite size ratio",
        sizes["float"] / sizes["int8"],
        SIZE_RATIO_FLOOR,
        f"float {sizes['float']} B, int8 {sizes['int8']} B, {stats.params} params; a small "
        "model's ratio is held down by what int8 does not shrink: a table per tensor and "
        "operator, and per-channel scales and zero points that int8 adds (bytes below)",
    )
    _size_breakdown("Keras digits sample", model, calibration, paths)
    acc = {k: float((litert.predict(p, x).argmax(1) == y).mean()) for k, p in paths.items()}
    rep.check(
        "Keras digits sample: full-int8 accuracy loss in LiteRT",
        acc["float"] - acc["int8"],
        ACCURACY_LOSS_CEILING,
        f"float {acc['float']:.4f}, int8 {acc['int8']:.4f} on the 540-image test split",
        higher_is_better=False,
    )
    micro = float((tflm.predict(paths["int8"], x).argmax(1) == y).mean())
    rep.check(
        "Keras digits sample: full-int8 accuracy loss in TFLite Micro",
        acc["float"] - micro,
        ACCURACY_LOSS_CEILING,
        f"TFLM int8 {micro:.4f} vs LiteRT float {acc['float']:.4f}",
        higher_is_better=False,
    )
    arena = tflm.tensor_arena(paths["int8"])
    rep.check(
        "Keras digits sample: TFLM arena exact (runs with it, fails with 1 KiB less)",
        float(arena.verified),
        1.0,
        f"arena {arena.arena_bytes} B (allocator: {arena.recorded_bytes} B = activations "
        f"{arena.activations_bytes} + persistent {arena.persistent_bytes}; firmware "
        f"{arena.firmware_bytes} B), flash {arena.flash_bytes} B, {arena.probes} probes",
    )
    _int8_speed(interleaved_p50(paths, rounds, seconds), "Keras digits sample")
    onnx = _onnx_pair(model, tmp, "digits", calibration)
    ort_acc = {k: float((measure.predict(p, x).argmax(1) == y).mean()) for k, p in onnx.items()}
    print(
        f"[INFO] Keras digits sample in ONNX Runtime (tf2onnx, workbench int8 QDQ): accuracy "
        f"float {ort_acc['ort-float']:.4f}, int8 {ort_acc['ort-int8']:.4f}",
        flush=True,
    )
    _runtimes_side_by_side({**paths, **onnx}, rounds, seconds, "Keras digits, 4 ways")


TORCH_DIGITS = ("digits-cnn", "digits-resnet18", "digits-mobilenetv2")


def bench_torch_digits(rep: Report, tmp: Path, rounds: int, seconds: float) -> None:
    """The PyTorch digits samples in LiteRT: size ratio and accuracy loss of full int8;
    digits-mobilenetv2 also in ONNX Runtime, timed interleaved with LiteRT."""
    from workbench.compress.quantize import quantize
    from workbench.models import load_model
    from workbench.onnx_export import export_onnx
    from workbench.recipe import QuantizeConfig
    from workbench.runtimes.onnx_keras import keras_for

    for name in TORCH_DIGITS:
        model = load_model(name)
        calibration = model.task.calibration(model.preprocessing, 200)
        x, y = model.task.arrays("test", model.preprocessing)
        work = tmp / name
        work.mkdir()
        rebuilt = keras_for(model, model.module, work)
        paths = _float_and_int8(rep, f"{name} (PyTorch)", rebuilt, work, "", calibration)
        _size_breakdown(name, rebuilt, calibration, paths)
        acc = {k: float((litert.predict(p, x).argmax(1) == y).mean()) for k, p in paths.items()}
        rep.check(
            f"{name} (PyTorch): full-int8 accuracy loss in LiteRT",
            acc["float"] - acc["int8"],
            ACCURACY_LOSS_CEILING,
            f"float {acc['float']:.4f}, int8 {acc['int8']:.4f} on the test split",
            higher_is_better=False,
        )
        if name != "digits-mobilenetv2":
            continue
        onnx_float = work / "float.onnx"
        export_onnx(model.module, model.input_shape, onnx_float)
        onnx_int8 = work / "int8.onnx"
        quantize(onnx_float, onnx_int8, QuantizeConfig(scheme="int8"), calibration=calibration)
        onnx = {"ort-float": onnx_float, "ort-int8": onnx_int8}
        ort_acc = {k: float((measure.predict(p, x).argmax(1) == y).mean()) for k, p in onnx.items()}
        print(
            f"[INFO] {name} in ONNX Runtime (workbench int8): accuracy float "
            f"{ort_acc['ort-float']:.4f}, int8 {ort_acc['ort-int8']:.4f}",
            flush=True,
        )
        p50 = _runtimes_side_by_side({**paths, **onnx}, rounds, seconds, f"{name}, 4 ways")
        _int8_speed(p50, name)


def _float_and_int8(
    rep: Report, label: str, model, folder: Path, prefix: str, calibration: np.ndarray
) -> dict[str, Path]:
    """Export ``model`` to float and full-int8 .tflite files in ``folder`` and check the
    size ratio against the target; returns the two paths by scheme."""
    paths = {
        scheme: litert.export_tflite(
            model, folder / f"{prefix}{scheme}.tflite", scheme, calibration=calibration
        )
        for scheme in ("float", "int8")
    }
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    rep.check(
        f"{label}: full-int8 TFLite size ratio",
        sizes["float"] / sizes["int8"],
        SIZE_RATIO_FLOOR,
        f"float {sizes['float']} B, int8 {sizes['int8']} B",
    )
    return paths


def bench_keras_mobilenetv2_224(rep: Report, tmp: Path, rounds: int, seconds: float) -> None:
    k = keras()
    model = k.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    # Random weights: the representative data need only cover the input's range.
    calibration = np.random.default_rng(0).uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32)
    paths = _float_and_int8(rep, "Keras MobileNetV2 224x224", model, tmp, "mnv2-", calibration)
    onnx = _onnx_pair(model, tmp, "mnv2", calibration)
    p50 = _runtimes_side_by_side({**paths, **onnx}, rounds, seconds, "Keras MobileNetV2 224x224")
    _int8_speed(p50, "Keras MobileNetV2 224x224")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds per pair")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per round per model")
    ap.add_argument("--quick", action="store_true", help="skip MobileNetV2 at 224x224")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    env = measure.environment(1)
    print(
        f"CPU {env.get('cpu_model')}; LiteRT {litert.litert_version()}; tflite-micro "
        f"{tflm.tflm_version()}; 1 thread, XNNPACK as LiteRT applies it by default",
        flush=True,
    )
    rep = Report()
    with tempfile.TemporaryDirectory() as tmp:
        bench_keras_digits(rep, Path(tmp), args.rounds, args.seconds)
        bench_torch_digits(rep, Path(tmp), args.rounds, args.seconds)
        if not args.quick:
            bench_keras_mobilenetv2_224(rep, Path(tmp), args.rounds, args.seconds)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "rows": rep.rows}, indent=1))
    missed = [r["target"] for r in rep.rows if not r["ok"]]
    print(
        f"\n{len(rep.rows) - len(missed)} of {len(rep.rows)} targets met"
        + (f"; missed: {missed}" if missed else "")
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

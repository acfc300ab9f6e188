"""Compression targets, measured side by side in one run (1 thread).

Prints each target with the figures behind it and the ratio measured; exits 1 if a
target is missed. Latency ratios come from interleaved rounds (A, B, A, B, ...) so
that the shared machine's noise falls on both sides alike; each side's figure is the
median of its rounds' p50s.

    python benchmarks/compression.py [--quick] [--rounds N] [--json FILE]

The NNCF side by side needs the optional ``bench`` dependencies (``pip install -e
'.[bench]'``); without them it prints one line saying so and is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench import measure
from workbench.cache import Cache
from workbench.compress import structured_sparsity_for_macs
from workbench.models import load_model
from workbench.pipeline import MeasureSettings, calibration_inputs, evaluate
from workbench.recipe import (
    GradualPruneConfig,
    PruneConfig,
    QATConfig,
    QuantizeConfig,
    Recipe,
)

INT8 = QuantizeConfig(scheme="int8", per_channel=True, calibration="minmax")
DEFAULT_INT8 = QuantizeConfig()  # what `--quantize int8` builds
DIGITS_SAMPLES = ("digits-cnn", "digits-mobilenetv2", "digits-resnet18")
NNCF_CALIBRATION = 128  # training images, as the workbench's default calibration


def side_by_side(
    paths: dict[str, Path], input_shape, rounds: int, seconds: float
) -> dict[str, float]:
    """Median over interleaved rounds of each artifact's p50 latency, in ms."""
    p50s: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            stats = measure.measure_latency(
                path, input_shape, threads=1, warmup=5, min_runs=20, min_seconds=seconds
            )
            p50s[name].append(stats.p50)
    return {k: statistics.median(v) for k, v in p50s.items()}


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def check(
        self, target: str, measured: float, floor: float, detail: str, higher_is_better: bool = True
    ) -> None:
        ok = measured >= floor if higher_is_better else measured <= floor
        self.rows.append(
            {"target": target, "measured": measured, "required": floor, "ok": ok, "detail": detail}
        )
        sign = ">=" if higher_is_better else "<="
        print(
            f"[{'PASS' if ok else 'MISS'}] {target}: {measured:.3g} (required {sign} {floor:g}) -- {detail}",
            flush=True,
        )


def bench_torchvision_int8(
    rep: Report, cache: Cache, settings: MeasureSettings, rounds: int, seconds: float
) -> None:
    for arch in ("resnet18", "mobilenet_v2"):
        model = load_model(
            f"torchvision:{arch}", pretrained=False
        )  # random weights serve for speed and size
        base = evaluate(model, settings=settings, cache=cache)
        q = evaluate(model, Recipe.of(quantize=INT8), settings=settings, cache=cache)
        p50 = side_by_side(
            {"float": base.artifact, "int8": q.artifact}, model.input_shape, rounds, seconds
        )
        size_ratio = base.metrics.size_bytes / q.metrics.size_bytes
        rep.check(
            f"{arch} 224x224 int8 size",
            size_ratio,
            3.5,
            f"float {base.metrics.size_bytes:,} B vs int8 {q.metrics.size_bytes:,} B",
        )
        rep.check(
            f"{arch} 224x224 int8 speed-up p50",
            p50["float"] / p50["int8"],
            2.0,
            f"float {p50['float']:.2f} ms vs int8 {p50['int8']:.2f} ms (median of {rounds} interleaved rounds)",
        )


def bench_digits_accuracy(rep: Report, cache: Cache, settings: MeasureSettings) -> None:
    for name in DIGITS_SAMPLES:
        model = load_model(name)
        base = evaluate(model, settings=settings, cache=cache)
        q = evaluate(model, Recipe.of(quantize=DEFAULT_INT8), settings=settings, cache=cache)
        lost = (base.metrics.accuracy - q.metrics.accuracy) * 100
        rep.check(
            f"{name} default int8 accuracy lost (points; one of 540 test images is 0.185)",
            lost,
            0.19,
            f"float {base.metrics.accuracy:.2%} vs {DEFAULT_INT8.label()} {q.metrics.accuracy:.2%}",
            higher_is_better=False,
        )


def _import_nncf():
    """NNCF, with its telemetry off (set before the import: both libraries read the
    environment when imported); None when it is not installed."""
    os.environ["NNCF_CI"] = "1"  # nncf.telemetry: a stub that sends nothing
    os.environ["CI"] = "true"  # openvino_telemetry: consent is never asked, nothing sent
    try:
        import nncf
    except ImportError as err:
        print(
            f"NNCF side by side skipped: nncf is not importable ({err}); "
            "install it with pip install -e '.[bench]'",
            flush=True,
        )
        return None
    return nncf


def nncf_quantize(nncf, float_onnx: Path, calibration, dst: Path) -> None:
    """NNCF 3.4's default post-training quantization of ``float_onnx`` into ``dst``."""
    import onnx

    model = onnx.load(str(float_onnx))
    name = model.graph.input[0].name
    dataset = nncf.Dataset(list(calibration), lambda x: {name: x[None]})
    onnx.save(nncf.quantize(model, dataset, subset_size=len(calibration)), str(dst))


def bench_nncf(
    rep: Report, cache: Cache, settings: MeasureSettings, rounds: int, seconds: float, tmp: Path
) -> None:
    nncf = _import_nncf()
    if nncf is None:
        return
    print(
        f"NNCF {nncf.__version__}: same float ONNX, {NNCF_CALIBRATION} training images, "
        f"1 thread, {rounds} interleaved rounds",
        flush=True,
    )
    for name in DIGITS_SAMPLES:
        model = load_model(name)
        base = evaluate(model, settings=settings, cache=cache)
        ours = evaluate(model, Recipe.of(quantize=DEFAULT_INT8), settings=settings, cache=cache)
        theirs = tmp / f"{name}-nncf.onnx"
        nncf_quantize(nncf, base.artifact, calibration_inputs(model, NNCF_CALIBRATION), theirs)
        x, y = model.task.arrays("test", model.preprocessing)
        nncf_acc = measure.accuracy(measure.predict(theirs, x, batch_size=1), y)
        p50 = side_by_side(
            {"float": base.artifact, "workbench": ours.artifact, "nncf": theirs},
            model.input_shape,
            rounds,
            seconds,
        )
        detail = (
            f"accuracy float {base.metrics.accuracy:.2%}, workbench {ours.metrics.accuracy:.2%}, "
            f"NNCF {nncf_acc:.2%}; p50 float {p50['float']:.3f} ms, workbench "
            f"{p50['workbench']:.3f} ms ({p50['float'] / p50['workbench']:.2f}x float), NNCF "
            f"{p50['nncf']:.3f} ms ({p50['float'] / p50['nncf']:.2f}x float); size workbench "
            f"{ours.metrics.size_bytes:,} B, NNCF {theirs.stat().st_size:,} B"
        )
        rep.check(
            f"{name} int8 accuracy vs NNCF (points, workbench - NNCF)",
            (ours.metrics.accuracy - nncf_acc) * 100,
            0.0,
            detail,
        )
        rep.check(
            f"{name} int8 speed vs NNCF (NNCF p50 / workbench p50)",
            p50["nncf"] / p50["workbench"],
            0.95,
            detail,
        )


def bench_structured(
    rep: Report, cache: Cache, settings: MeasureSettings, rounds: int, seconds: float
) -> None:
    model = load_model("digits-resnet18")
    sparsity = structured_sparsity_for_macs(model.module, model.example_input(), 0.5)
    base = evaluate(model, settings=settings, cache=cache)
    pr = evaluate(
        model,
        Recipe.of(PruneConfig(method="structured", sparsity=sparsity)),
        settings=settings,
        cache=cache,
    )
    p50 = side_by_side(
        {"dense": base.artifact, "pruned": pr.artifact}, model.input_shape, rounds, seconds
    )
    ratio = pr.metrics.macs / base.metrics.macs  # counted on the two ONNX artifacts
    rep.check(
        "digits-resnet18 structured pruning halves the MACs (|kept - 0.5|)",
        abs(ratio - 0.5),
        0.01,
        f"sparsity {sparsity:.3f}: {base.metrics.macs:,} -> {pr.metrics.macs:,} MACs ({ratio:.3f} kept)",
        higher_is_better=False,
    )
    rep.check(
        "digits-resnet18 structured (half MACs) speed-up p50",
        p50["dense"] / p50["pruned"],
        1.6,
        f"dense {p50['dense']:.3f} ms vs pruned {p50['pruned']:.3f} ms; accuracy "
        f"{base.metrics.accuracy:.2%} -> {pr.metrics.accuracy:.2%} (no fine-tuning)",
    )


def bench_sparse_int8_compressed(rep: Report, cache: Cache, settings: MeasureSettings) -> None:
    model = load_model("digits-resnet18")
    base = evaluate(model, settings=settings, cache=cache)
    v = evaluate(
        model,
        Recipe.of(PruneConfig(method="unstructured", sparsity=0.8, scope="global"), INT8),
        settings=settings,
        cache=cache,
    )
    rep.check(
        "digits-resnet18 80% unstructured + int8, compressed size ratio",
        base.metrics.compressed_bytes / v.metrics.compressed_bytes,
        10.0,
        f"float compressed {base.metrics.compressed_bytes:,} B vs {v.metrics.compressed_bytes:,} B; accuracy "
        f"{base.metrics.accuracy:.2%} -> {v.metrics.accuracy:.2%}",
    )


def bench_variant_time(rep: Report, settings: MeasureSettings) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        model = load_model("digits-cnn")
        evaluate(model, settings=settings, cache=cache)  # the baseline, measured once per model
        recipe = Recipe.of(PruneConfig(method="unstructured", sparsity=0.5), INT8)
        t = time.perf_counter()
        evaluate(model, recipe, settings=settings, cache=cache)
        new = time.perf_counter() - t
        cached = []
        for _ in range(20):
            t = time.perf_counter()
            evaluate(model, recipe, settings=settings, cache=cache)
            cached.append(time.perf_counter() - t)
    rep.check(
        "digits-cnn new variant (prune, export, quantize, measure) seconds",
        new,
        3.0,
        "default measurement settings, profile included",
        higher_is_better=False,
    )
    rep.check(
        "digits-cnn cached variant milliseconds",
        statistics.median(cached) * 1000,
        50.0,
        "median of 20 cache hits",
        higher_is_better=False,
    )


# ------------------------------------------------------------------ training steps
# Gradual pruning, QAT and stacking (issue 10). Each trains on the digits training part
# (1257 images); accuracy is on the test split, through ONNX Runtime, as every figure.


def _kept(variant, base) -> float:
    return variant.metrics.accuracy / base.metrics.accuracy


def bench_gradual_unstructured(rep: Report, cache: Cache, settings: MeasureSettings) -> None:
    for name in ("digits-cnn", "digits-resnet18"):
        model = load_model(name)
        base = evaluate(model, settings=settings, cache=cache)
        one_shot = evaluate(
            model, Recipe((PruneConfig(sparsity=0.8),)), settings=settings, cache=cache
        )
        gradual = GradualPruneConfig(sparsity=0.8, steps=4, epochs_per_step=1)
        v = evaluate(model, Recipe((gradual,)), settings=settings, cache=cache)
        rep.check(
            f"{name} unstructured 80% gradual + fine-tuning, share of float accuracy",
            _kept(v, base),
            0.98,
            f"{gradual.label()}: float {base.metrics.accuracy:.2%}, one-shot "
            f"{one_shot.metrics.accuracy:.2%}, gradual {v.metrics.accuracy:.2%}; "
            f"non-zero params {v.metrics.nonzero_params:,} of {v.metrics.params:,}",
        )


def bench_gradual_structured(rep: Report, cache: Cache, settings: MeasureSettings) -> None:
    model = load_model("digits-resnet18")
    sparsity = structured_sparsity_for_macs(model.module, model.example_input(), 0.5)
    base = evaluate(model, settings=settings, cache=cache)
    one_shot = evaluate(
        model,
        Recipe((PruneConfig(method="structured", sparsity=sparsity),)),
        settings=settings,
        cache=cache,
    )
    gradual = GradualPruneConfig(method="structured", sparsity=sparsity, steps=3)
    v = evaluate(model, Recipe((gradual,)), settings=settings, cache=cache)
    rep.check(
        "digits-resnet18 structured gradual (about half the MACs), share of float accuracy",
        _kept(v, base),
        0.97,
        f"{gradual.label()}: MACs {base.metrics.macs:,} -> {v.metrics.macs:,} "
        f"({v.metrics.macs / base.metrics.macs:.3f} kept); accuracy float "
        f"{base.metrics.accuracy:.2%}, one-shot {one_shot.metrics.accuracy:.2%}, gradual "
        f"{v.metrics.accuracy:.2%}",
    )


def bench_qat(rep: Report, cache: Cache, settings: MeasureSettings) -> None:
    model = load_model("digits-mobilenetv2")
    base = evaluate(model, settings=settings, cache=cache)
    ptq = evaluate(model, Recipe.of(quantize=INT8), settings=settings, cache=cache)
    qat = evaluate(model, Recipe((QATConfig(epochs=2),)), settings=settings, cache=cache)
    lost_ptq = (base.metrics.accuracy - ptq.metrics.accuracy) * 100
    lost_qat = (base.metrics.accuracy - qat.metrics.accuracy) * 100
    rep.check(
        "digits-mobilenetv2 QAT int8 accuracy lost (points)",
        lost_qat,
        0.2,
        f"float {base.metrics.accuracy:.2%}, PTQ int8 {ptq.metrics.accuracy:.2%} "
        f"({lost_ptq:+.2f} lost), QAT int8 {qat.metrics.accuracy:.2%}; sizes "
        f"{ptq.metrics.size_bytes:,} B (PTQ) vs {qat.metrics.size_bytes:,} B (QAT)",
        higher_is_better=False,
    )


def bench_stacked(rep: Report, cache: Cache, settings: MeasureSettings) -> None:
    for name, sparsity in (("digits-mobilenetv2", 0.9), ("digits-resnet18", 0.9)):
        model = load_model(name)
        base = evaluate(model, settings=settings, cache=cache)
        # One global threshold empties MobileNetV2's depthwise convolutions (their weights
        # are small; measured: 10% accuracy): they hold ~2% of its weights, so keep them dense.
        depthwise = tuple(
            n
            for n, m in model.module.named_modules()
            if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.out_channels
        )
        prune = GradualPruneConfig(
            sparsity=sparsity,
            steps=3,
            epochs_per_step=1,
            teacher="digits-resnet18",
            exclude=depthwise,
        )
        recipe = Recipe((prune, QATConfig(epochs=1, teacher="digits-resnet18")))
        v = evaluate(model, recipe, settings=settings, cache=cache)
        ratio = base.metrics.compressed_bytes / v.metrics.compressed_bytes
        detail = (
            f"{recipe.name}: compressed {base.metrics.compressed_bytes:,} B -> "
            f"{v.metrics.compressed_bytes:,} B; accuracy {base.metrics.accuracy:.2%} -> "
            f"{v.metrics.accuracy:.2%} (ONNX Runtime)"
        )
        rep.check(f"{name} stacked, compressed size ratio", ratio, 20.0, detail)
        rep.check(f"{name} stacked, share of float accuracy", _kept(v, base), 0.98, detail)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds per pair")
    ap.add_argument("--seconds", type=float, default=1.0, help="timing per round per model")
    ap.add_argument("--quick", action="store_true", help="skip the 224x224 torchvision models")
    ap.add_argument("--cache-dir", type=Path, help="reuse a cache (default: a fresh one)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument(
        "--only-training",
        action="store_true",
        help="run only the training benchmarks (gradual pruning, QAT, stacking)",
    )
    ap.add_argument(
        "--only-nncf", action="store_true", help="run only the digits accuracy and NNCF checks"
    )
    args = ap.parse_args()
    settings = MeasureSettings(threads=1)
    env = measure.environment(1)
    print(
        f"CPU {env.get('cpu_model')}; features {', '.join(sorted(measure.cpu_features()))}; "
        f"int8 dot-product: {measure.has_int8_dot_product()}; 1 thread",
        flush=True,
    )
    rep = Report()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(args.cache_dir or tmp)
        if args.only_training and args.only_nncf:
            ap.error("--only-training and --only-nncf exclude each other")
        everything = not args.only_training and not args.only_nncf
        if everything:
            bench_variant_time(rep, settings)
        if not args.only_training:
            bench_digits_accuracy(rep, cache, settings)
            bench_nncf(rep, cache, settings, args.rounds, args.seconds, Path(tmp))
        if everything:
            bench_sparse_int8_compressed(rep, cache, settings)
            bench_structured(rep, cache, settings, args.rounds, args.seconds)
            if not args.quick:
                bench_torchvision_int8(rep, cache, settings, args.rounds, args.seconds)
        if not args.only_nncf:
            bench_qat(rep, cache, settings)
            bench_gradual_unstructured(rep, cache, settings)
            bench_gradual_structured(rep, cache, settings)
            bench_stacked(rep, cache, settings)
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

"""The device commands of the ``workbench`` CLI: check (the CI gate), stress, devices, import.

A thin front end over :mod:`workbench.devices`, kept beside ``cli.py`` and built from
its shared argument helpers. Bad input exits with status 2 and one line, as everywhere.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from workbench.cli import (
    PRUNE_CHOICES,
    QUANT_CHOICES,
    _add_model_args,
    _add_prune_args,
    _add_quant_args,
    _cache,
    _check_output_file,
    _finetune_config,
    _floats,
    _load,
    _prune_config,
    _quant_config,
    _refuse_idle_settings,
    _settings,
)
from workbench.errors import WorkbenchError

__all__ = ["add_device_commands"]


def add_device_commands(sub: Any) -> None:
    """Add check, stress, devices and import to the ``workbench`` subcommands."""
    for add, run in (
        (_add_check_parser, _cmd_check),
        (_add_stress_parser, _cmd_stress),
        (_add_devices_parser, lambda args, scratch: _cmd_devices(args)),
        (_add_import_parser, lambda args, scratch: _cmd_import(args)),
    ):
        add(sub).set_defaults(device_command=run)


def _add_check_parser(sub: Any) -> argparse.ArgumentParser:
    """`workbench check`: the CI gate over one or more devices."""
    p = sub.add_parser(
        "check",
        help="CI gate: measure a model's variants and check thresholds on target devices "
        "(exit 0 all hold, 1 one missed, 2 bad input)",
    )
    _add_model_args(p)
    p.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help="target device(s), comma-separated and/or repeated: host, raspberry-pi-4, "
        "cortex-m4, ... or one from --devices-file / the config; the result is a variants x "
        "devices matrix",
    )
    p.add_argument("--devices-file", type=Path, help="TOML file of your own [[device]] profiles")
    p.add_argument("--max-latency-p99", type=float, metavar="MS", help="p99 latency at most MS ms")
    p.add_argument(
        "--max-memory-fraction",
        type=float,
        metavar="F",
        help="peak memory at most F of the device's available memory (default: the profile's budget, 0.6)",
    )
    p.add_argument(
        "--max-accuracy-drop", type=float, metavar="PT", help="top-1 points lost vs the baseline"
    )
    p.add_argument(
        "--accept-estimates",
        action="store_true",
        help="let a latency lower bound (devices other than host) within the threshold pass; "
        "by default it is 'unverified' and fails the gate",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="gate TOML file: [gate] thresholds and devices, [[device]] profiles",
    )
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument("--prune", choices=PRUNE_CHOICES, default="none")
    p.add_argument(
        "--sparsity",
        type=_floats,
        default=None,  # None: not given (refused without --prune); 0.5 with it
        help="comma-separated, e.g. 0.5,0.7 (with --prune; default 0.5)",
    )
    _add_prune_args(p)
    p.add_argument("--quantize", default="none", help="comma-separated from none,dynamic,int8,fp16")
    _add_quant_args(p)
    return p


def _cmd_check(args: argparse.Namespace, scratch: list[Path]) -> int:
    from workbench.atomic import write_text_atomic
    from workbench.devices.gate import (
        GateThresholds,
        load_gate_config,
        parse_device_names,
        register_config_profiles,
        run_gate,
    )
    from workbench.devices.registry import get_device, load_profiles
    from workbench.pipeline import evaluate
    from workbench.study import grid

    # Everything that can be wrong with the input is checked before measuring or writing.
    schemes = [q.strip() for q in args.quantize.split(",") if q.strip()]
    if args.sparsity == []:
        raise WorkbenchError(
            "--sparsity names no sparsity", "give one or more fractions, e.g. --sparsity 0.5,0.7"
        )
    _refuse_idle_settings(args, args.prune != "none", schemes)
    config = load_gate_config(args.config) if args.config else None
    if config is not None:
        register_config_profiles(config)
    if args.devices_file:
        load_profiles(args.devices_file)
    base = config.thresholds if config else GateThresholds()
    flags = {
        "max_latency_p99_ms": args.max_latency_p99,
        "max_memory_fraction": args.max_memory_fraction,
        "max_accuracy_drop": args.max_accuracy_drop,
    }
    thresholds = GateThresholds(
        **{k: (v if v is not None else getattr(base, k)) for k, v in flags.items()},
        accept_estimates=args.accept_estimates or base.accept_estimates,
    )
    devices = parse_device_names(args.device) or list(config.devices if config else [])
    if not devices:
        raise WorkbenchError(
            "no target device", "give --device NAME (repeatable), or devices = [...] in --config"
        )
    profiles = [get_device(d) for d in dict.fromkeys(devices)]
    if args.junit is not None:
        _check_output_file("--junit", Path(args.junit))
    prune = [_prune_config(args, args.prune, s) for s in (args.sparsity or [0.5])] or [None]
    quant = [_quant_config(args, q) for q in schemes] or [None]
    recipes = grid(prune, quant, _finetune_config(args))
    model = _load(args)
    if thresholds.max_accuracy_drop is not None and model.task is None:
        raise WorkbenchError(
            f"--max-accuracy-drop needs accuracy, and {model.name} has no labelled task",
            "pass --task digits (the task the model was trained for), or leave the threshold out",
        )
    cache = _cache(args, scratch)
    settings = _settings(args)
    results = [evaluate(model, r, settings=settings, cache=cache) for r in recipes]
    report = run_gate(
        results, profiles, thresholds, baseline=results[0], model=model.name, cache=cache
    )
    if args.junit is not None:
        write_text_atomic(args.junit, report.junit_xml())
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.table())
    return report.exit_code


def _add_import_parser(sub: Any) -> argparse.ArgumentParser:
    """`workbench import`: a device runner's results, recorded for their variant."""
    p = sub.add_parser(
        "import",
        help="record a workbench-runner results JSON (measured on a device) for its variant",
    )
    p.add_argument("results", type=Path, help="the results JSON the runner wrote on the device")
    p.add_argument(
        "--device",
        help="the device profile to record it under (default: the runner's --device-name)",
    )
    p.add_argument("--devices-file", type=Path, help="TOML file of your own [[device]] profiles")
    p.add_argument(
        "--artifact", type=Path, help="the .onnx file the results must belong to (sha256 checked)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="the cache holding the variant (default ~/.cache/edge-workbench)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def _cmd_import(args: argparse.Namespace) -> int:
    from workbench.cache import Cache
    from workbench.devices.imported import import_results
    from workbench.devices.registry import load_profiles

    if args.devices_file:
        load_profiles(args.devices_file)
    m = import_results(
        args.results, device=args.device, artifact=args.artifact, cache=Cache(args.cache_dir)
    )
    if args.json:
        print(json.dumps(m.to_dict(), indent=1))
    else:
        print(
            f"recorded for {m.device}: p50 {m.latency.p50:.3f} ms, p99 {m.latency.p99:.3f} ms, "
            f"peak memory {m.memory.peak_bytes:,} B ({m.describe()}); artifact sha256 {m.sha256[:12]}..."
        )
    return 0


def _add_devices_parser(sub: Any) -> argparse.ArgumentParser:
    """`workbench devices`: the target devices and their figures."""
    p = sub.add_parser("devices", help="list the target devices, their budgets and figures")
    p.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. 'cortex-*'")
    p.add_argument("--devices-file", type=Path, help="TOML file of your own [[device]] profiles")
    p.add_argument("--json", action="store_true")
    return p


def _cmd_devices(args: argparse.Namespace) -> int:
    from workbench.charts import format_bytes
    from workbench.devices.registry import get_device, list_devices, load_profiles

    if args.devices_file:
        load_profiles(args.devices_file)
    profiles = [get_device(n) for n in list_devices(args.pattern)]
    if args.json:
        print(json.dumps([p.to_dict() for p in profiles], indent=1))
        return 0
    for p in profiles:
        peaks = ", ".join(
            f"{label} {v:g} GMAC/s"
            for label, v in (("int8", p.peak_int8_gmacs), ("fp32", p.peak_fp32_gmacs))
            if v is not None
        )
        print(
            f"{p.name} ({p.kind}): {p.cpu}; {p.cores} cores; RAM {format_bytes(p.ram_bytes)}, "
            f"budget {format_bytes(p.budget_bytes)} ({p.memory_budget_fraction:.0%} of "
            f"{format_bytes(p.available_bytes)}); storage {format_bytes(p.storage_bytes)}; "
            f"{p.memory_bandwidth_gbps:g} GB/s; {peaks}; runs {', '.join(p.runtimes)}"
            + (f"; class estimates: {', '.join(p.estimated)}" if p.estimated else "")
        )
    return 0


def _add_stress_parser(sub: Any) -> argparse.ArgumentParser:
    """`workbench stress`: latency quiet, with busy processes and under memory pressure."""
    p = sub.add_parser(
        "stress",
        help="measure latency here with a device's thread count: quiet, with busy processes, "
        "and under memory pressure",
    )
    _add_model_args(p)
    p.add_argument("--device", default="host", help="whose thread count to use (default host)")
    p.add_argument("--devices-file", type=Path, help="TOML file of your own [[device]] profiles")
    p.add_argument(
        "--cpu-processes", type=int, help="busy-loop processes (default: one per usable core)"
    )
    p.add_argument(
        "--memory-share",
        type=float,
        default=0.3,
        help="share of available RAM another process holds (default 0.3, at most 0.5)",
    )
    p.add_argument("--prune", choices=PRUNE_CHOICES, default="none")
    p.add_argument(
        "--sparsity",
        type=float,
        default=None,  # None: not given (refused without --prune); 0.5 with it
        help="fraction pruned (with --prune; default 0.5)",
    )
    _add_prune_args(p)
    p.add_argument("--quantize", choices=QUANT_CHOICES, default="none")
    _add_quant_args(p)
    return p


def _cmd_stress(args: argparse.Namespace, scratch: list[Path]) -> int:
    from workbench.devices.registry import get_device, load_profiles
    from workbench.devices.stress import check_stress_settings, measure_under_stress
    from workbench.pipeline import evaluate
    from workbench.recipe import Recipe

    if args.devices_file:
        load_profiles(args.devices_file)
    device = get_device(args.device)
    check_stress_settings(args.cpu_processes, args.memory_share)
    _refuse_idle_settings(args, args.prune != "none", [args.quantize])
    recipe = Recipe.of(
        _prune_config(args, args.prune, 0.5 if args.sparsity is None else args.sparsity),
        _quant_config(args, args.quantize),
        _finetune_config(args),
    )
    model = _load(args)
    result = evaluate(model, recipe, settings=_settings(args), cache=_cache(args, scratch))
    stress = measure_under_stress(
        result.artifact,
        device,
        input_shape=model.input_shape,
        cpu_processes=args.cpu_processes,
        memory_share=args.memory_share,
    )
    if args.json:
        print(
            json.dumps({"model": model.name, "recipe": recipe.name, **stress.to_dict()}, indent=1)
        )
        return 0
    rows = [
        ("quiet", stress.quiet),
        (f"{stress.cpu_processes} busy process(es)", stress.cpu),
        (f"{stress.memory_held_bytes / 1e9:.2f} GB held", stress.memory),
    ]
    print(f"{model.name}  [{recipe.name}]  {stress.basis}")
    for label, st in rows:
        print(
            f"  {label:<22} p50 {st.p50:.3f} ms  p99 {st.p99:.3f} ms  "
            f"(x{st.p50 / stress.quiet.p50:.2f} / x{st.p99 / stress.quiet.p99:.2f} of quiet, n={st.n})"
        )
    return 0

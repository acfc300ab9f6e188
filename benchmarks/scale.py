"""Wall time of a build-heavy sweep locally and on a local Ray cluster, side by side.

16 variants of digits-cnn (structured pruning at 8 sparsities, each fine-tuned, each
in float and int8) plus the baseline, swept three times in one run, each time into a
fresh cache: in this process (torch on its default threads, then on one thread as Ray
gives each task), then on a Ray cluster of this machine (one worker per core, started
here, loopback only). Measuring uses short settings so that building
dominates, as in the sweeps a cluster is for. The cluster's time includes starting
it and its workers importing torch; the sweep alone is printed too.

On a machine with few cores expect little or no gain: a cluster adds cores only when
it spans machines, and measuring is serialised per machine. No target is checked.

    python benchmarks/scale.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from workbench.cache import Cache
from workbench.models import load_model
from workbench.pipeline import MeasureSettings
from workbench.recipe import FineTuneConfig, PruneConfig, QuantizeConfig
from workbench.study import grid, sweep

SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SETTINGS = MeasureSettings(min_runs=20, min_seconds=0.05, warmup=3, profile=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 variants instead of 16")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    from workbench.cluster import connect

    sparsities = SPARSITIES[:2] if args.quick else SPARSITIES
    recipes = grid(
        [PruneConfig(method="structured", sparsity=s) for s in sparsities],
        [None, QuantizeConfig(scheme="int8")],
        FineTuneConfig(epochs=1),
    )
    model = load_model("digits-cnn")
    cores = os.cpu_count() or 1
    print(f"{len(recipes) - 1} variants + baseline of {model.name}; {cores} cores", flush=True)

    import torch

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        local = sweep(model, recipes, settings=SETTINGS, cache=Cache(f"{tmp}/local"))
        local_s = time.perf_counter() - start
        print(f"local:   {local_s:7.1f} s (torch on {threads} threads)", flush=True)
        # Ray runs each task with OMP_NUM_THREADS = its CPUs (1): torch trains on one
        # thread there. The same locally tells parallelism apart from threading.
        torch.set_num_threads(1)
        start = time.perf_counter()
        sweep(model, recipes, settings=SETTINGS, cache=Cache(f"{tmp}/local1"))
        local1_s = time.perf_counter() - start
        torch.set_num_threads(threads)
        print(f"local:   {local1_s:7.1f} s (torch on 1 thread, as in Ray's workers)", flush=True)

        start = time.perf_counter()
        with connect(None) as ray:
            up_s = time.perf_counter() - start
            workers = int(ray.cluster_resources().get("CPU", 0))
            begun = time.perf_counter()
            on_ray = sweep(
                model, recipes, settings=SETTINGS, cache=Cache(f"{tmp}/ray"), executor="ray"
            )
            sweep_s = time.perf_counter() - begun
        cluster_s = time.perf_counter() - start
        print(
            f"cluster: {cluster_s:7.1f} s ({up_s:.1f} s to start, {sweep_s:.1f} s to sweep "
            f"on {workers} workers)",
            flush=True,
        )
    same = [r.key for r in local.results] == [r.key for r in on_ray.results]
    ratio = local_s / cluster_s
    print(
        f"speed-up local/cluster: x{ratio:.2f} with start, x{local_s / sweep_s:.2f} sweep alone; "
        f"against local on 1 torch thread: x{local1_s / cluster_s:.2f} with start, "
        f"x{local1_s / sweep_s:.2f} sweep alone; on {cores} cores; same variants and keys: {same}"
    )
    if cores <= 2:
        print(
            "note: with 2 cores a cluster of this machine can build at most 2 variants at once "
            "while measuring stays one at a time; gains need more cores or more machines"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "variants": len(recipes),
                    "cores": cores,
                    "workers": workers,
                    "local_s": local_s,
                    "local_torch_threads": threads,
                    "local_1_thread_s": local1_s,
                    "cluster_s": cluster_s,
                    "cluster_start_s": up_s,
                    "cluster_sweep_s": sweep_s,
                    "same_keys": same,
                },
                f,
                indent=1,
            )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

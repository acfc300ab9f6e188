"""Sweeps on a Ray cluster (workbench.cluster), run on a real local cluster on 127.0.0.1.

The cluster is `ray start --head --block` in a session of its own (two CPU slots, so two
worker processes, and a device label), with its session files and HOME in a temp folder.
It is stopped by killing its processes by id (`ray start` and every process under it):
`ray stop` would stop every Ray process of the machine, other people's included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workbench.cache import Cache, sha256_file
from workbench.devices import device_latency, fit
from workbench.errors import WorkbenchError
from workbench.recipe import PruneConfig, QuantizeConfig, Recipe
from workbench.study import Study, grid, machine_of, sweep

# A cluster of this machine alone: Ray takes the loopback address for its nodes and
# listens on nothing else. Ray reads this when it is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

REPO = Path(__file__).resolve().parents[2]
DEVICE = "raspberry-pi-4"
# Four variants: the baseline, quantization alone, pruning alone, and both (which reads
# the pruned float variant), so the tasks depend on one another as in real sweeps.
RECIPES = grid(
    [None, PruneConfig(method="unstructured", sparsity=0.5)], [None, QuantizeConfig("dynamic")]
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`ray start --head` on 127.0.0.1 in its own session; stop() kills it by group id."""

    def __init__(self, resources: dict[str, float]) -> None:
        # Short: Ray's socket paths live under it and Unix sockets allow ~107 characters.
        self.root = Path(tempfile.mkdtemp(prefix="wbray-"))
        (self.root / "home").mkdir()
        self._known: dict[int, object] = {}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            HOME=str(self.root / "home"),  # anything Ray keeps under ~/.ray lands here
            RAY_USAGE_STATS_ENABLED="0",
            RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        )
        self.log = open(self.root / "ray-start.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--head",
                f"--port={self.port}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=2",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--temp-dir={self.root / 'ray'}",
                f"--resources={json.dumps(resources)}",
                "--block",
            ],
            env=env,
            start_new_session=True,  # apart from the tests: a Ctrl-C here does not reach it
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        # Up when the node's raylet has registered (a driver connecting before that is
        # told "No node info found").
        deadline = time.monotonic() + 240  # a loaded 2-core machine can take minutes
        raylet = self.root / "ray" / "session_latest" / "sockets" / "raylet"
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if raylet.exists():
                    time.sleep(1)
                    break
                raise OSError("no raylet yet")
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = (self.root / "ray-start.log").read_text()[-2000:]
                    shutil.rmtree(self.root, ignore_errors=True)
                    raise RuntimeError(f"ray start failed:\n{log}") from None
                time.sleep(0.2)

    def processes(self) -> list:
        """The cluster's live processes: `ray start` and everything under it. Ray's
        worker processes have process groups of their own, so they are found as the
        raylet's children, and remembered in case they outlive it."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self._known.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass
        alive = []
        for p in self._known.values():
            try:  # is_running() also compares start times: a reused pid is not ours
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue
        return alive

    def stop(self) -> None:
        """Kill every process of the cluster, by id, and wait for them to end."""
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=30)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def ray():
    try:
        import ray
    except ImportError:
        pytest.fail("Ray is not installed: pip install -e '.[dev,ray]' (make test does)")
    return ray


@pytest.fixture(scope="module")
def cluster(ray):
    c = LocalCluster({f"device:{DEVICE}": 1})
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.stop()
    left = c.processes()
    shutil.rmtree(c.root, ignore_errors=True)
    assert not left, f"Ray processes survived the cluster: {left}"


@pytest.fixture
def driver(ray, cluster):
    """This process connected to the cluster; sweeps use the connection as it is, so
    the job's worker processes (torch imported) serve every test."""
    if not ray.is_initialized():
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    return cluster


def _figures(study: Study) -> list[dict]:
    """Every figure of every variant but the timings (and memory, measured like them)."""
    out = []
    for r in study.results:
        m = r.metrics
        out.append(
            {
                "recipe": r.recipe.name,
                "key": r.key,
                "accuracy": m.accuracy,
                "agreement": m.agreement,
                "agreement_basis": m.agreement_basis,
                "size_bytes": m.size_bytes,
                "compressed_bytes": m.compressed_bytes,
                "params": m.params,
                "nonzero_params": m.nonzero_params,
                "macs": m.macs,
                "parity": m.parity_max_abs_diff,
                "steps": [{k: v for k, v in s.items() if k != "seconds"} for s in r.steps],
                "artifact_sha256": sha256_file(r.artifact),
                "predictions": np.load(r.artifact.with_name("predictions.npy")).tolist(),
            }
        )
    return out


def _entries(cache: Cache) -> list[str]:
    return sorted(p.name for p in cache.root.glob("??/*") if p.is_dir())


# ---------------------------------------------------------------- without a cluster


def test_local_sweep_never_imports_ray(tmp_path):
    script = (
        "import sys\n"
        "from workbench.cli import main\n"
        "from workbench.study import sweep\n"
        "from workbench.cache import Cache\n"
        "from workbench.pipeline import MeasureSettings\n"
        "import widgets.sweep_panel\n"
        "s = MeasureSettings(min_runs=5, min_seconds=0, warmup=1, profile=False)\n"
        f"sweep('digits-cnn', [], settings=s, cache=Cache({str(tmp_path)!r}), progress=False)\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_ray_options_need_the_ray_executor(cnn, tmp_path):
    with pytest.raises(WorkbenchError, match="needs the Ray executor"):
        sweep(cnn, [], cache=Cache(tmp_path), device=DEVICE, progress=False)
    with pytest.raises(WorkbenchError, match="unknown executor 'dask'"):
        sweep(cnn, [], cache=Cache(tmp_path), executor="dask", progress=False)
    assert not tmp_path.joinpath("c").exists()


def test_cli_several_devices_with_ray_is_one_line(capsys, tmp_path):
    # Without --ray, --device names the sweep's device matrix; with it, the one device
    # whose nodes measure.
    from workbench.cli import main

    out = str(tmp_path / "s.json")
    code = main(["sweep", "digits-cnn", "--out", out, "--ray", "--device", f"{DEVICE},host"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--device" in err
    assert not tmp_path.joinpath("s.json").exists()


def test_unreachable_address_one_line_exit_2_nothing_cached(ray, capsys, tmp_path):
    from workbench.cli import main

    cache = tmp_path / "cache"
    argv = ["sweep", "digits-cnn", "--sparsity", "0,0.5", "--out", str(tmp_path / "s.json")]
    code = main([*argv, "--cache-dir", str(cache), "--ray", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "cannot reach a Ray cluster at 127.0.0.1:" in err
    assert not cache.exists() and not (tmp_path / "s.json").exists()
    assert not ray.is_initialized()


def test_frontier_is_per_machine(cnn, quick, session_cache):
    """Results of unlike machines are never compared: each machine has its frontier."""
    import dataclasses

    from workbench.pipeline import evaluate

    base = evaluate(cnn, Recipe(), settings=quick, cache=session_cache)
    dyn = evaluate(
        cnn, Recipe.of(None, QuantizeConfig("dynamic")), settings=quick, cache=session_cache
    )

    def on(result, cpu, p50):
        env = {**result.metrics.environment, "cpu_model": cpu}
        lat = dataclasses.replace(result.metrics.latency, p50=p50)
        metrics = dataclasses.replace(result.metrics, environment=env, latency=lat)
        return dataclasses.replace(result, metrics=metrics)

    # On machine B the float model is slower than both variants of machine A, so one
    # frontier over both machines would drop it; per machine it stays.
    a_base, a_dyn = on(base, "CPU A", 1.0), on(dyn, "CPU A", 0.5)
    b_base = on(base, "CPU B", 9.0)
    study = Study(cnn.name, [a_base, a_dyn, b_base])
    objectives = {"latency_p50_ms": "min", "size_bytes": "min"}
    assert study.machines() == [machine_of(a_base), machine_of(b_base)]
    fronts = study.frontiers(objectives)
    assert [r.metrics.environment["cpu_model"] for r in fronts[machine_of(b_base)]] == ["CPU B"]
    assert b_base in study.frontier(objectives)
    assert a_base not in study.frontier(objectives)  # a_dyn is faster and smaller on A


# ---------------------------------------------------------------- on a real cluster


@pytest.mark.slow
def test_workers_without_the_workbench_or_with_other_versions(ray, cluster, cnn, tmp_path):
    """A probe on every node, before anything is built: one line, nothing cached."""
    # Workers that see another ONNX Runtime: a distribution's metadata found first on
    # their path. (Not edge-workbench's: Ray puts the driver's folder, which holds this
    # checkout's egg-info, first on the workers' path.)
    fake = tmp_path / "other-version"
    dist = fake / "onnxruntime-0.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime\nVersion: 0.0.1\n")
    hidden = tmp_path / "no-workbench"
    hidden.mkdir()
    # Workers whose Python cannot import the workbench, as on a node it was never
    # installed on (the editable install here is visible to every process otherwise).
    (hidden / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('workbench', 'widgets'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NotInstalled())\n"
    )
    cache = Cache(tmp_path / "cache")
    for path, expected in (
        (fake, "has onnxruntime 0.0.1"),
        (hidden, "cannot import the workbench"),
    ):
        if ray.is_initialized():
            ray.shutdown()
        ray.init(
            address=cluster.address,
            logging_level=logging.WARNING,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(path)}},
        )
        try:
            with pytest.raises(WorkbenchError) as err:
                sweep(cnn, RECIPES, settings=None, cache=cache, executor="ray", progress=False)
        finally:
            ray.shutdown()
        message = str(err.value)
        assert expected in message and "\n" not in message, message
        assert "install edge-workbench[ray] with the same versions on every node" in message
        assert _entries(cache) == []


@pytest.mark.slow
def test_cluster_sweep_matches_local_resumes_and_never_overlaps_measuring(
    driver, cnn, quick, session_cache, tmp_path, caplog
):
    local = sweep(cnn, RECIPES, settings=quick, cache=session_cache, progress=False)

    cache = Cache(tmp_path / "cluster")
    cancel = threading.Event()
    first: list = []

    def stop_after_one(result):
        first.append(result)
        cancel.set()

    partial = sweep(
        cnn,
        RECIPES,
        settings=quick,
        cache=cache,
        executor="ray",
        progress=False,
        on_result=stop_after_one,
        cancel=cancel,
    )
    assert 1 <= len(partial.results) < len(RECIPES)
    kept = _entries(cache)
    assert kept  # what finished before the cancel is in the cache

    caplog.set_level(logging.DEBUG, logger="workbench.cluster")
    ray_study = sweep(cnn, RECIPES, settings=quick, cache=cache, executor="ray", ray_address="auto")
    done = len(partial.results)
    assert (
        f"{done} of {len(RECIPES)} variants found in the cache; {len(RECIPES) - done} sent"
        in caplog.text
    )
    assert set(kept) <= set(_entries(cache))
    # The same variants, in the same order, with the same figures and the same keys
    # (same machine, same versions), so a local rerun would find them too.
    ours, theirs = _figures(ray_study), _figures(local)
    assert [r["recipe"] for r in ours] == [r["recipe"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {}, a["recipe"]
    for r in ray_study.results:
        assert r.artifact.is_relative_to(cache.root)  # in the driver's cache
        assert (
            r.metrics.environment["cpu_model"] == local.results[0].metrics.environment["cpu_model"]
        )
        assert r.metrics.environment["node"]["hostname"] == socket.gethostname()
    assert ray_study.machines() == [machine_of(local.results[0])]
    # Measuring never overlapped on this machine, though two worker processes ran
    # variants at once. (Whether two builds overlapped depends on when each worker
    # process came up, so it is not asserted; benchmarks/scale.py shows it.)
    tasks = [r.workbench_task for r in caplog.records if hasattr(r, "workbench_task")]
    assert len(tasks) == len(RECIPES) - done
    held = sorted(span for t in tasks for span in t["measured"])
    assert len(held) >= len(tasks)  # every task measured under the host lock
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(held, held[1:], strict=False))


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_nothing_is_lost_or_doubled(driver, cnn, quick, tmp_path):
    import psutil

    cache = Cache(tmp_path / "cache")
    killed: list[int] = []

    def kill_a_running_variant(result):
        if killed:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            running = [
                p
                for p in driver.processes()
                if (p.cmdline() or [""])[0].startswith("ray::run_variant")
            ]
            if running:
                running[0].send_signal(signal.SIGKILL)
                killed.append(running[0].pid)
                return
            time.sleep(0.05)

    study = sweep(
        cnn,
        RECIPES,
        settings=quick,
        cache=cache,
        executor="ray",
        progress=False,
        on_result=kill_a_running_variant,
    )
    assert killed, "no variant was running to kill"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == "zombie"
    assert [r.recipe for r in study.results] == RECIPES
    keys = [r.key for r in study.results]
    assert len(set(keys)) == len(keys) and set(keys) <= set(_entries(cache))
    for r in study.results:
        assert cache.get(r.key) is not None  # complete and matching its checksums
    assert not list(cache.root.glob(".build-*"))  # nothing half-written


@pytest.mark.slow
def test_device_nodes_measure_their_device(driver, cnn, quick, tmp_path):
    cache = Cache(tmp_path / "cache")
    recipes = RECIPES[:2]
    study = sweep(
        cnn, recipes, settings=quick, cache=cache, executor="ray", device=DEVICE, progress=False
    )
    assert [r.recipe for r in study.results] == recipes
    for r in study.results:
        assert r.metrics.environment["node"]["device"] == DEVICE
        assert machine_of(r).startswith(f"{DEVICE}: ")
        # The device's fit and latency use these figures as the device's own, not host's.
        assert f"on {DEVICE} (node " in fit(r, DEVICE).memory_basis
        assert device_latency(r, DEVICE).kind == "measured"
        assert device_latency(r, "host").kind == "estimate"
    with pytest.raises(
        WorkbenchError, match="no node of the Ray cluster offers the resource 'device:cortex-m7'"
    ):
        sweep(
            cnn,
            recipes,
            settings=quick,
            cache=Cache(tmp_path / "c2"),
            executor="ray",
            device="cortex-m7",
        )
    with pytest.raises(WorkbenchError, match="unknown device 'toaster'"):
        sweep(
            cnn,
            recipes,
            settings=quick,
            cache=Cache(tmp_path / "c2"),
            executor="ray",
            device="toaster",
        )
    assert not (tmp_path / "c2").exists()


@pytest.mark.slow
def test_sweep_panel_uses_the_configured_cluster(driver, cnn, quick, tmp_path, monkeypatch):
    from widgets import SweepPanel
    from workbench.cluster import RAY_ADDRESS_ENV

    monkeypatch.setenv(RAY_ADDRESS_ENV, driver.address)
    study = Study(cnn.name)
    panel = SweepPanel(study, cnn, cache=Cache(tmp_path / "cache"), settings=quick)
    panel.sparsities = (0.5,)
    panel.schemes = ("none",)
    assert panel.run() is True
    assert panel.wait(300)
    assert panel.error == "" and panel.status == "done: 2 variants"
    assert [r.recipe.name for r in study.results] == ["baseline", "prune-unstructured-0.5"]
    for r in study.results:  # measured by a node of the cluster, stored in the panel's cache
        assert r.metrics.environment["node"]["ray_node_id"]
        assert r.artifact.is_relative_to(tmp_path / "cache")


@pytest.mark.slow
def test_a_failing_variant_on_the_cluster_is_recorded_and_the_rest_measured(
    driver, cnn, quick, tmp_path
):
    # Names no layer of the model: refused by the pruning step inside the Ray task,
    # which stands for any variant a worker cannot build.
    broken = Recipe.of(PruneConfig(sparsity=0.5, exclude=("no_such_layer",)))
    good = RECIPES[1]
    study = sweep(
        cnn, [broken, good], settings=quick, cache=Cache(tmp_path), executor="ray", progress=False
    )
    assert [r.recipe for r in study.results] == [Recipe(), good]
    assert [f["recipe_name"] for f in study.failures] == [broken.name]
    assert "no_such_layer" in study.failures[0]["error"]


def test_remeasure_is_refused_on_a_cluster(cnn, tmp_path):
    with pytest.raises(WorkbenchError, match="re-measuring cached variants runs on this machine"):
        sweep(cnn, [], cache=Cache(tmp_path), executor="ray", remeasure=True, progress=False)
    assert not any(tmp_path.iterdir())

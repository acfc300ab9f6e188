"""Sweeps on a Ray cluster: one Ray task per variant, the results back in the local cache.

``sweep(..., executor="ray")`` hands its recipes to :func:`sweep_on_ray`. Every node is
probed first (can it import the workbench, are its versions the driver's); then each
variant that is not cached yet becomes one Ray task. A task runs the ordinary
``evaluate()`` on its node in a scratch cache of its own and ships the entries it built
(artifact, predictions, result.json) back as bytes; the driver stores them in its
content-addressed cache, so the cluster's workers need no shared disk, a rerun finds
them, and an interrupted sweep resumes like a local one.

Building (pruning, fine-tuning, quantization) runs in parallel, one variant per CPU
slot. Measuring latency and memory takes a lock held by the host, not just the
process: Ray resources are held for a whole task and cannot be taken for part of one,
and several Ray nodes may share one machine, so the lock is an ``flock`` on a file of
the machine's temp folder (released by the kernel if the worker dies).

Ray is imported only here and only when a cluster sweep runs: ``pip install
edge-workbench[ray]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from workbench.cache import ARTIFACT_FILE, PREDICTIONS_FILE, RESULT_FILE, Cache
from workbench.errors import WorkbenchError

__all__ = [
    "DEVICE_RESOURCE_PREFIX",
    "RAY_ADDRESS_ENV",
    "device_resource",
    "sweep_on_ray",
]

log = logging.getLogger(__name__)

# The app's sweep panel runs its sweeps on this cluster when set ("auto" or host:port).
RAY_ADDRESS_ENV = "WORKBENCH_RAY_ADDRESS"
# A node started with the resource {"device:<name>": 1} measures the variants meant for
# that device: ray start ... --resources='{"device:raspberry-pi-4": 1}'.
DEVICE_RESOURCE_PREFIX = "device:"
# How much of the device resource one variant takes: a small share, so the node's own
# CPU count still decides how many variants it builds at once.
_DEVICE_SHARE = 0.01
# A task whose worker process or node dies is run again (elsewhere when possible) up to
# this many times; an error raised by the variant itself is never retried.
MAX_RETRIES = 3
# Versions the driver and every worker must share: a different one would build or
# measure something else under the same recipe.
CHECKED_VERSIONS = ("edge-workbench", "torch", "onnxruntime")
_PROBE_TIMEOUT_S = 120.0
_CONNECT_TIMEOUT_S = 5.0
_NODE_REGISTRATION_S = 30.0
# An entry's files besides its artifact (whose name is its runtime's, e.g. model.onnx).
_ENTRY_FILES = (RESULT_FILE, PREDICTIONS_FILE)
_SCRATCH_DIR = "edge-workbench-ray"
_MEASURE_LOCK_FILE = "edge-workbench-measure.lock"


def device_resource(device: str) -> str:
    """The Ray custom resource a node carries to measure for ``device``."""
    return f"{DEVICE_RESOURCE_PREFIX}{device}"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise WorkbenchError(
            "a sweep on a Ray cluster needs Ray, which is not installed",
            "pip install 'edge-workbench[ray]'",
        ) from None
    return ray


# ---------------------------------------------------------------- connecting


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when nothing listens at ``address`` (Ray itself
    retries for a long time and then raises a long error)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise WorkbenchError(
            f"{address!r} is not a Ray cluster address",
            "pass host:port of the head node (e.g. 127.0.0.1:6379), or 'auto' to join the "
            "cluster started on this machine",
        )
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise WorkbenchError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc})",
            "check the address and that `ray start --head` runs there, or leave the address "
            "out to start a cluster on this machine",
        ) from None


@contextlib.contextmanager
def connect(address: str | None) -> Iterator[Any]:
    """Connect to the cluster at ``address`` ("auto" joins the one started on this
    machine or named by RAY_ADDRESS) or, with None, start one on this machine for the
    sweep; yields the ``ray`` module. When this process is connected already (the
    caller ran ``ray.init``), that connection is used whatever ``address`` says, and
    left open."""
    if address is None and "ray" not in sys.modules:
        # A cluster of this machine alone: Ray then takes the loopback address for the
        # node and listens on nothing else (Ray reads this when it is imported).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        # Nothing leaves the machine: no usage report, no dashboard.
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    elif address != "auto":
        _check_reachable(address)
    try:
        _init(ray, address, kwargs)
    except (ConnectionError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"cannot join the Ray cluster at {address or 'this machine'} ({first})",
            "start one with `ray start --head --node-ip-address=127.0.0.1`, pass its "
            "address (host:port), or leave the address out to start one for the sweep",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _init(ray: Any, address: str | None, kwargs: dict) -> None:
    """ray.init, waiting a little for a head node that was started a moment ago (its
    GCS answers before its node has registered: "No node info found")."""
    deadline = time.monotonic() + _NODE_REGISTRATION_S
    while True:
        try:
            ray.init(address=address, **kwargs)
            return
        except RuntimeError as exc:
            if "No node info found" not in str(exc) or time.monotonic() > deadline:
                raise
            ray.shutdown()  # whatever the failed attempt set up
            time.sleep(1.0)


# ---------------------------------------------------------------- probing the nodes


def _make_probe() -> Callable[..., dict]:
    """The probe task's function. Defined inside a function so that cloudpickle ships
    it by value: it must run, and say what is missing, on a node that cannot import
    the workbench at all."""

    def probe(box: list) -> dict:
        # ``box`` holds ObjectRefs to the model and to (recipes, settings): inside a list
        # Ray does not resolve them before the call, so a node without the workbench
        # still runs the probe (unpickling them needs the workbench's classes).
        import platform
        import socket as _socket
        from importlib import metadata

        report: dict = {"hostname": _socket.gethostname(), "python": platform.python_version()}
        versions = {}
        for dist in ("edge-workbench", "torch", "onnxruntime"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = "absent"
        report["versions"] = versions
        try:
            import ray as _ray

            from workbench import pipeline
            from workbench.measure import environment
        except ImportError as exc:
            report["missing"] = str(exc)
            return report
        model, (recipes, settings) = _ray.get(box)
        report["pipeline"] = pipeline.PIPELINE_VERSION
        env = environment(settings.threads)
        report["cpu"] = [env.get("cpu_model"), env.get("logical_cores")]
        report["keys"] = [pipeline.variant_key(model, r, settings) for r in recipes]
        return report

    return probe


def _probe_nodes(ray: Any, model_ref: Any, recipes: Sequence[Any], settings: Any) -> list[dict]:
    """One probe on every alive node; each report carries the node's id, address and
    resources with what the probe found."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_make_probe())
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    box = [model_ref, ray.put((list(recipes), settings))]
    refs = [
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(box)
        for n in nodes
    ]
    try:
        reports = ray.get(refs, timeout=_PROBE_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise WorkbenchError(
            f"the cluster's nodes did not answer a probe within {_PROBE_TIMEOUT_S:.0f} s",
            "check that its workers are running (`ray status`)",
        ) from None
    except ray.exceptions.RayError as exc:
        raise WorkbenchError(
            f"a node of the cluster could not run the workbench's probe ({_first_line(exc)})",
            "install the same Python, Ray and edge-workbench[ray] on every node",
        ) from None
    for node, report in zip(nodes, reports, strict=True):
        report["node_id"] = node["NodeID"]
        report["address"] = node.get("NodeManagerAddress", "?")
        report["resources"] = dict(node.get("Resources", {}))
    return reports


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def check_nodes(driver: dict, reports: Sequence[dict]) -> None:
    """Raise WorkbenchError (one line) when a node cannot import the workbench or has
    other versions than the driver: edge-workbench, torch, onnxruntime, the pipeline."""
    problems = []
    for r in reports:
        where = f"{r.get('hostname', '?')} ({r.get('address', '?')})"
        if "missing" in r:
            problems.append(f"{where} cannot import the workbench ({r['missing']})")
            continue
        wrong = [
            f"{dist} {r['versions'].get(dist)}"
            for dist in CHECKED_VERSIONS
            if r["versions"].get(dist) != driver["versions"].get(dist)
        ]
        if r.get("pipeline") != driver["pipeline"]:
            wrong.append(f"pipeline version {r.get('pipeline')}")
        if wrong:
            problems.append(f"{where} has {', '.join(wrong)}")
    if problems:
        here = ", ".join(f"{d} {driver['versions'].get(d)}" for d in CHECKED_VERSIONS)
        raise WorkbenchError(
            "the Ray cluster's node "
            + "; node ".join(problems)
            + f", where this machine has {here}",
            "install edge-workbench[ray] with the same versions on every node of the cluster",
        )


def _driver_report() -> dict:
    from workbench import pipeline

    versions = pipeline._versions()
    return {"versions": versions, "pipeline": pipeline.PIPELINE_VERSION}


# ---------------------------------------------------------------- on the worker


class _HostMeasureLock:
    """The worker's stand-in for the pipeline's measuring lock: also excludes every
    other workbench process on this machine, and records when it was held."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.held: list[tuple[float, float]] = []
        self._file: Any = None
        self._since = 0.0

    def __enter__(self) -> _HostMeasureLock:
        import fcntl

        self.inner.acquire()
        path = Path(tempfile.gettempdir()) / _MEASURE_LOCK_FILE
        self._file = open(path, "a")  # noqa: SIM115 - held until __exit__
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self._since = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        self.held.append((self._since, time.time()))
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self.inner.release()


def _install_host_lock() -> _HostMeasureLock:
    from workbench import pipeline

    lock = pipeline._MEASURE_LOCK
    if not isinstance(lock, _HostMeasureLock):
        lock = _HostMeasureLock(lock)
        pipeline._MEASURE_LOCK = lock
    return lock


def _clear_abandoned_scratch(root: Path) -> None:
    from workbench.cache import _process_alive

    for folder in root.glob("*-*"):
        pid = folder.name.split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _entry_keys(cache: Cache) -> set[str]:
    return {p.name for p in cache.root.glob("??/*") if (p / RESULT_FILE).is_file()}


def pack_entry(cache: Cache, key: str) -> dict:
    """A cache entry as bytes, to ship between machines."""
    entry = cache.entry_dir(key)
    stored = cache.get(key)
    artifact = stored.artifact.name if stored is not None else ARTIFACT_FILE
    names = (*_ENTRY_FILES, artifact)
    return {"key": key, "files": {name: (entry / name).read_bytes() for name in names}}


def unpack_entry(cache: Cache, packed: dict) -> bool:
    """Store a shipped entry in ``cache`` (atomically, checked against its sha256s);
    returns False when the key was there already (nothing is written twice)."""
    key = packed["key"]
    if cache.get(key) is not None:
        return False
    names = set(packed["files"])
    artifacts = names - set(_ENTRY_FILES)
    if (
        not set(_ENTRY_FILES) <= names
        or len(artifacts) != 1
        or any(Path(a).name != a or a in ("", ".", "..") for a in artifacts)
    ):
        raise WorkbenchError(
            f"a worker shipped an incomplete entry {key[:12]} ({sorted(packed['files'])})",
            "rerun the sweep; check that the workers run this version of the workbench",
        )
    with cache.building(key) as work:
        for name in names:
            (work / name).write_bytes(packed["files"][name])
    if cache.get(key) is None:
        raise WorkbenchError(
            f"the entry {key[:12]} a worker shipped does not match its recorded checksums",
            "rerun the sweep (a damaged transfer is not stored)",
        )
    return True


def _label_node(cache: Cache, key: str, node: dict) -> None:
    """Name the node that measured an entry in its recorded environment (through the
    cache, so the entry's recorded digest stays true)."""
    import dataclasses

    result = cache.get(key)
    if result is None:
        raise WorkbenchError(
            f"the entry {key[:12]} this worker just built is missing or damaged",
            f"check the worker's temporary folder ({cache.root}) is writable and not cleaned",
        )
    metrics = result.metrics
    labelled = dataclasses.replace(metrics, environment={**metrics.environment, "node": node})
    cache.replace_result(key, dataclasses.replace(result, metrics=labelled))


def run_variant(model: Any, recipe: Any, settings: Any, device: str | None, *seeds: dict) -> dict:
    """One variant on a worker: ``evaluate()`` in a scratch cache seeded with the
    entries of the tasks it depends on; returns the entries it built as bytes, with
    when this task measured and ran."""
    import ray

    from workbench.pipeline import evaluate

    started = time.time()
    lock = _install_host_lock()
    held_before = len(lock.held)
    root = Path(tempfile.gettempdir()) / _SCRATCH_DIR
    root.mkdir(parents=True, exist_ok=True)
    _clear_abandoned_scratch(root)
    scratch = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    try:
        cache = Cache(scratch)
        for seed in seeds:
            for packed in seed["entries"]:
                unpack_entry(cache, packed)
        seeded = _entry_keys(cache)
        result = evaluate(model, recipe, settings=settings, cache=cache)
        node = {
            "hostname": socket.gethostname(),
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "device": device,
        }
        built = sorted(_entry_keys(cache) - seeded)
        for key in built:
            _label_node(cache, key, node)
        return {
            "key": result.key,
            "entries": [pack_entry(cache, k) for k in built],
            "measured": lock.held[held_before:],
            "span": (started, time.time()),
            "node": node,
            "pid": os.getpid(),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- the driver


def _check_device(device: str | None, reports: Sequence[dict]) -> list[dict]:
    """The nodes that may measure: those labelled ``device`` (error when none is)."""
    if device is None:
        return list(reports)
    from workbench.devices import get_device

    if device == "host":
        raise WorkbenchError(
            "device 'host' is this machine, not a cluster node",
            "leave the device out, or name the device a node of the cluster was labelled with",
        )
    get_device(device)  # an unknown name is answered with the known ones
    resource = device_resource(device)
    nodes = [r for r in reports if r["resources"].get(resource, 0) > 0]
    if not nodes:
        raise WorkbenchError(
            f"no node of the Ray cluster offers the resource {resource!r}",
            f"start the device's node with `ray start --address=HEAD "
            f"--resources='{{\"{resource}\": 1}}'`",
        )
    return nodes


class _Dispatch:
    """The tasks of one sweep: which recipe each is, and what each depends on."""

    def __init__(self, ray: Any, todo: Sequence[Any], task: Any, args: tuple) -> None:
        self.ray, self.todo, self.task, self.args = ray, todo, task, args
        self.refs: dict[int, Any] = {}  # recipe index -> its task's ObjectRef
        self.seeds: dict[int, Any] = {}  # recipe index -> cached entries, put once

    def seed_for(self, index: int, cache: Cache, keys: set[str]) -> Any:
        if index in self.refs:
            return self.refs[index]
        if index not in self.seeds:
            entries = [pack_entry(cache, k) for k in sorted(keys)]
            self.seeds[index] = self.ray.put({"entries": entries})
        return self.seeds[index]


def sweep_on_ray(
    model: Any,
    todo: Sequence[Any],
    *,
    settings: Any,
    cache: Cache,
    progress: bool,
    on_result: Callable[[Any], None] | None,
    cancel: threading.Event | None,
    address: str | None,
    device: str | None,
) -> Any:
    """Evaluate ``todo`` (baseline first) as one Ray task per variant; see the module
    docstring. Called by ``workbench.study.sweep(..., executor="ray")``."""
    from tqdm.auto import tqdm

    from workbench.recipe import Recipe
    from workbench.study import Study

    study = Study(model.name, model_info=model.describe())
    with connect(address) as ray:
        model_ref = ray.put(model)
        reports = _probe_nodes(ray, model_ref, todo, settings)
        check_nodes(_driver_report(), reports)
        measuring = _check_device(device, reports)
        # Cached under the key of any node that may measure it: not rebuilt.
        keys = [{r["keys"][i] for r in measuring} for i in range(len(todo))]
        cached: dict[int, Any] = {}
        for i, candidates in enumerate(keys):
            hit = next((h for k in sorted(candidates) if (h := cache.get(k)) is not None), None)
            if hit is not None:
                cached[i] = hit
        log.info(
            "%d of %d variants found in the cache; %d sent to the cluster",
            len(cached),
            len(todo),
            len(todo) - len(cached),
        )
        options: dict[str, Any] = {"max_retries": MAX_RETRIES, "retry_exceptions": False}
        if device is not None:
            options["resources"] = {device_resource(device): _DEVICE_SHARE}
        task = ray.remote(num_cpus=1)(run_variant).options(**options)
        dispatch = _Dispatch(ray, todo, task, (model_ref,))
        index_of = {r: i for i, r in enumerate(todo)}
        done: dict[int, Any] = dict(cached)
        pending: dict[Any, int] = {}
        # Quantized pruned variants last, so the float variant they read is in flight.
        both = [bool(r.onnx_steps() and r.torch_steps()) for r in todo]
        for i in sorted(range(len(todo)), key=lambda i: both[i]):
            recipe = todo[i]
            if i in cached:
                continue
            deps = []
            # The variants evaluate() reads: the baseline, and for a quantized pruned
            # variant the same pruning in float. When they are in the sweep too the
            # task waits for them instead of building them a second time.
            needed = [] if recipe.is_baseline else [Recipe()]
            if recipe.onnx_steps() and recipe.torch_steps():
                needed.append(Recipe(recipe.torch_steps()))
            for dep in needed:
                j = index_of.get(dep)
                if j is None:
                    continue
                present = {k for k in keys[j] if cache.get(k) is not None}
                if j in dispatch.refs or present:
                    deps.append(dispatch.seed_for(j, cache, present))
            ref = task.remote(model_ref, recipe, settings, device, *deps)
            dispatch.refs[i] = ref
            pending[ref] = i
        bar = tqdm(
            total=len(todo),
            initial=len(cached),
            desc=f"sweep {model.name} on Ray",
            unit="variant",
            disable=not progress,
        )
        for i in sorted(cached):
            study.add(cached[i])
            if on_result is not None:
                on_result(cached[i])
        try:
            while pending:
                if cancel is not None and cancel.is_set():
                    break
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        out = _get(ray, ref, todo[i])
                    except Exception as exc:  # noqa: BLE001 - as the local sweep: go on
                        if todo[i].is_baseline:
                            raise  # every variant is compared with the baseline
                        log.warning("sweep %s: %s failed: %s", model.name, todo[i].name, exc)
                        study.add_failure(todo[i], exc)
                        bar.update(1)
                        continue
                    for packed in out["entries"]:
                        unpack_entry(cache, packed)
                    result = cache.get(out["key"])
                    if result is None:
                        raise WorkbenchError(
                            f"the result of {todo[i].name} is missing from {cache.root} right "
                            "after it was stored",
                            f"check that {cache.root} is writable and not cleaned by another process",
                        )
                    # Which node measured the variant, when, and in which process: for
                    # logs, and for tests that check measuring never overlapped.
                    record = {k: out[k] for k in ("node", "measured", "span", "pid")}
                    log.debug("%s finished", todo[i].name, extra={"workbench_task": record})
                    done[i] = result
                    study.add(result)
                    bar.update(1)
                    if on_result is not None:
                        on_result(result)
        finally:
            bar.close()
            for ref in pending:  # interrupted, cancelled or failed: stop the rest
                ray.cancel(ref, force=True)
    # The same order as a local sweep, whatever order the cluster finished in.
    study.results = [done[i] for i in sorted(done)]
    return study


def _get(ray: Any, ref: Any, recipe: Any) -> dict:
    """A task's return value; a variant's own error is raised as it is, a task lost to
    dying workers as one WorkbenchError."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
        raise WorkbenchError(
            f"{recipe.name} was lost: its worker died {MAX_RETRIES + 1} times ({_first_line(exc)})",
            "check the nodes' memory and logs (`ray status`); a rerun resumes from the cache",
        ) from None

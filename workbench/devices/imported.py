"""Measurements made on a real device by the runner, imported next to the variant they belong to.

``workbench-runner`` (``workbench/devices/runner.py``) writes a results JSON on the
device; :func:`import_results` checks it (format, figures, and the artifact's sha256
against the variant's) and records it under the cache, keyed by the artifact's sha256
and the device's profile name. :func:`device_latency` and :func:`fit` then use the
device's own figures, labelled with the device, instead of an estimate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench.atomic import write_text_atomic
from workbench.cache import RESULT_FILE, Cache, sha256_file
from workbench.errors import WorkbenchError
from workbench.results import LatencyStats, MemoryStats

__all__ = ["DeviceMeasurement", "find_measurement", "import_results", "read_runner_results"]

RUNNER_FORMAT = "edge-workbench-runner-results"
RUNNER_VERSION = 1
_FOLDER = "device-results"  # under the cache root, beside the variant entries
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class DeviceMeasurement:
    """Latency and peak memory of one artifact, measured on a device by the runner."""

    device: str  # the profile name it is recorded under
    runner_device_name: str  # the name the runner was given on the device
    sha256: str  # of the artifact measured
    latency: LatencyStats
    memory: MemoryStats
    environment: dict[str, Any]
    measured_at: str

    def describe(self) -> str:
        return (
            f"measured on {self.device} by workbench-runner ({self.runner_device_name}, "
            f"{self.measured_at}; {self.environment.get('cpu_model', 'unknown CPU')}, "
            f"ONNX Runtime {self.environment.get('onnxruntime', '?')}), {self.latency.n} timed "
            f"runs, {self.latency.threads} thread(s)"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        d["memory"] = self.memory.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceMeasurement:
        d = dict(d)
        d["latency"] = LatencyStats.from_dict(d["latency"])
        d["memory"] = MemoryStats.from_dict(d["memory"])
        return cls(**d)


def _damaged(path: Path, what: str) -> WorkbenchError:
    return WorkbenchError(
        f"{path} is not a usable workbench-runner results file: {what}",
        "run workbench-runner on the device again and import the file it writes, unedited",
    )


def _number(path: Path, where: str, v: Any, *, whole: bool = False) -> float:
    ok = not isinstance(v, bool) and isinstance(v, int if whole else (int, float))
    if not ok or not math.isfinite(v) or v < 0:
        raise _damaged(path, f"{where} is {v!r}, not a {'whole ' if whole else ''}number >= 0")
    return v


def read_runner_results(path: str | Path, device: str) -> DeviceMeasurement:
    """Read and check a runner results file; every problem is one WorkbenchError."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{path} is not a file", "give the results JSON the runner wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _damaged(path, f"not JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != RUNNER_FORMAT:
        raise _damaged(path, f"its format is not {RUNNER_FORMAT!r}")
    if data.get("version") != RUNNER_VERSION:
        raise _damaged(
            path, f"version {data.get('version')!r}, this workbench reads {RUNNER_VERSION}"
        )
    try:
        sha = data["artifact"]["sha256"]
        lat, mem, env = data["latency_ms"], data["memory"], data["environment"]
        when, name = data["measured_at"], data["device_name"]
    except (KeyError, TypeError) as e:
        raise _damaged(path, f"{e} is missing") from None
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise _damaged(path, "artifact.sha256 is not a sha256 digest")
    if not isinstance(lat, dict) or not isinstance(mem, dict) or not isinstance(env, dict):
        raise _damaged(path, "latency_ms, memory and environment must be objects")
    for key in ("p50", "p90", "p99", "mean", "min", "max"):
        _number(path, f"latency_ms.{key}", lat.get(key))
    for key in ("n", "warmup", "threads"):
        _number(path, f"latency_ms.{key}", lat.get(key), whole=True)
    if not lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] or lat["n"] < 1:
        raise _damaged(path, "its latency percentiles are out of order")
    for key in ("peak_bytes", "process_peak_bytes", "baseline_bytes"):
        _number(path, f"memory.{key}", mem.get(key), whole=True)
    latency = LatencyStats(
        **{k: lat[k] for k in ("p50", "p90", "p99", "mean", "min", "max", "n", "warmup", "threads")}
    )
    memory = MemoryStats(
        **{k: mem[k] for k in ("peak_bytes", "process_peak_bytes", "baseline_bytes")}
    )
    return DeviceMeasurement(
        device=device,
        runner_device_name=str(name),
        sha256=sha,
        latency=latency,
        memory=memory,
        environment=env,
        measured_at=str(when),
    )


def _cached_artifact_shas(cache: Cache) -> set[str]:
    """sha256 of every artifact the cache holds (read from the entries' records)."""
    shas = set()
    for record in cache.root.glob(f"*/*/{RESULT_FILE}"):
        try:
            shas.add(json.loads(record.read_text())["artifact_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged entry is the cache's business
    return shas


def _record_path(cache: Cache, sha: str, device: str) -> Path:
    return cache.root / _FOLDER / sha / f"{device}.json"


def import_results(
    path: str | Path,
    *,
    device: str | None = None,
    artifact: str | Path | None = None,
    cache: Cache | None = None,
) -> DeviceMeasurement:
    """Check a runner results file and record it for its variant and device.

    Args:
        device: the profile name to record it under; default the name the runner was
            given, which must then be a known device.
        artifact: the .onnx file the results must belong to; default any variant in
            the cache (matched by the artifact's sha256).

    Raises:
        WorkbenchError: the file is damaged, the device unknown (or ``host``), or the
            results were measured on another artifact. Nothing is recorded then.
    """
    from workbench.devices.registry import HOST, get_device

    cache = cache or Cache()
    path = Path(path)
    probe = read_runner_results(path, device or "")
    name = device or probe.runner_device_name
    if name == HOST:
        raise WorkbenchError(
            "host is this machine, whose figures are measured here",
            "import results for the device they were measured on (--device NAME)",
        )
    profile = get_device(name)  # an unknown name lists the known ones
    if not _NAME.match(profile.name):
        raise WorkbenchError(
            f"device name {profile.name!r} cannot name a file", "use letters, digits, . _ -"
        )
    if artifact is not None:
        actual = sha256_file(artifact)
        if actual != probe.sha256:
            raise WorkbenchError(
                f"{path} was measured on another model: its artifact's sha256 is "
                f"{probe.sha256[:12]}..., {artifact} has {actual[:12]}...",
                "import the results of this artifact, or give the artifact they were measured on",
            )
    elif probe.sha256 not in _cached_artifact_shas(cache):
        raise WorkbenchError(
            f"no variant in the cache ({cache.root}) has the artifact {path} was measured on "
            f"(sha256 {probe.sha256[:12]}...)",
            "evaluate that variant here first (same cache), or pass --artifact FILE",
        )
    measurement = dataclasses.replace(probe, device=profile.name)
    write_text_atomic(
        _record_path(cache, probe.sha256, profile.name), json.dumps(measurement.to_dict(), indent=1)
    )
    return measurement


def _artifact_sha256(artifact: str | Path) -> str:
    st = Path(artifact).stat()
    return _sha256_of(str(artifact), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a rewritten file is hashed again. The app asks
    # for every variant on each redraw of the chart: a 44 MB artifact would otherwise
    # be hashed again each time a sweep adds a point.
    return sha256_file(path)


def find_measurement(
    artifact: str | Path, device: str, cache: Cache | None
) -> DeviceMeasurement | None:
    """The imported measurement of ``artifact`` on ``device``, or None."""
    if cache is None:
        return None
    record = _record_path(cache, _artifact_sha256(artifact), device)
    if not record.is_file():
        return None
    try:
        return DeviceMeasurement.from_dict(json.loads(record.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged record is as good as none: the estimate is shown instead

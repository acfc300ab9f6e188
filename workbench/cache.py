"""An on-disk, content-addressed cache of evaluated variants.

Each entry is a folder named by its key holding the artifact, the test-split
predictions and ``result.json``. An entry is built in a temporary folder and renamed
into place when complete, so a half-written entry is never read; an entry whose files
do not match what ``result.json`` records is treated as absent and rebuilt.

Beside the variants, ``trained/`` keeps the PyTorch modules a recipe's training steps
produced (a state_dict and the steps' reports), so every runtime and every artifact step
built from one training starts from the same weights, trained once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from workbench.atomic import write_text_atomic
from workbench.results import Result

__all__ = ["Cache", "default_cache_dir", "sha256_file"]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# The artifact's file name in entries of ONNX Runtime (other runtimes name theirs; an
# entry's artifact is the file its Result names).
ARTIFACT_FILE = "model.onnx"
PREDICTIONS_FILE = "predictions.npy"
TRAINED_DIR = "trained"
STATE_FILE = "state.pt"
REPORTS_FILE = "reports.json"
RECORD_FILE = "record.json"  # a trained module's files and their sha256


def default_cache_dir() -> Path:
    """``$WORKBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/edge-workbench`` (``~/.cache``)."""
    env = os.environ.get("WORKBENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-workbench"


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _result_digest(result: dict) -> str:
    """The sha256 of a result's figures as canonical JSON.

    Kept inside result.json beside the result, so the figures are checked like the
    artifact (an edited digit, an accuracy of 0.9926 turned into 0.4926, is caught, not
    reported) and a re-measured entry replaces figures and digest in one atomic write.
    """
    canonical = json.dumps(result, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _artifact_file(result: Result) -> str:
    """The file name of ``result``'s artifact in its entry (the runtime's, e.g.
    ``model.onnx``); a path reaching out of the entry is refused."""
    name = Path(result.artifact).name
    if name in ("", ".", "..") or name in (RESULT_FILE, PREDICTIONS_FILE):
        raise ValueError(f"artifact file {name!r} is not an artifact's file name")
    return name


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class Cache:
    """Variants stored by key under ``root`` (default: :func:`default_cache_dir`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Result | None:
        """The stored result for ``key``, or None when absent or damaged (then removed)."""
        entry = self.entry_dir(key)
        if not entry.is_dir():
            return None
        try:
            record = json.loads((entry / RESULT_FILE).read_text())
            if _result_digest(record["result"]) != record["result_sha256"]:
                raise ValueError(
                    "result.json does not match its recorded sha256 (its figures were edited)"
                )
            result = Result.from_dict(record["result"])
            artifact = entry / _artifact_file(result)
            if sha256_file(artifact) != record["artifact_sha256"]:
                raise ValueError("artifact does not match its recorded sha256")
            # Later variants read these predictions for their agreement figure.
            if sha256_file(entry / PREDICTIONS_FILE) != record["predictions_sha256"]:
                raise ValueError("predictions do not match their recorded sha256")
        except Exception as exc:  # noqa: BLE001 - any damage means: rebuild
            log.warning("ignoring damaged cache entry %s (%s); it will be rebuilt", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        # The entry may have been moved with its cache: point at where it is now.
        return dataclasses.replace(result, artifact=artifact, key=key)

    def predictions_path(self, key: str) -> Path:
        return self.entry_dir(key) / PREDICTIONS_FILE

    @contextlib.contextmanager
    def building(self, key: str) -> Iterator[Path]:
        """A scratch folder for a new entry; it becomes the entry only if the block succeeds.

        The block must write ``model.onnx``, ``predictions.npy`` and then call
        :meth:`write_result` on the scratch folder.
        """
        with self._building(key, self.entry_dir(key)) as scratch:
            yield scratch

    def trained_dir(self, key: str) -> Path:
        return self.root / TRAINED_DIR / key[:2] / key

    def get_trained(self, key: str) -> tuple[dict, list[dict]] | None:
        """The state_dict and step reports stored for ``key``, or None when absent or
        damaged (then removed). The tensors load with ``weights_only``: no code runs."""
        import torch

        entry = self.trained_dir(key)
        if not entry.is_dir():
            return None
        try:
            record = json.loads((entry / RECORD_FILE).read_text())
            for name in (STATE_FILE, REPORTS_FILE):
                if sha256_file(entry / name) != record[name]:
                    raise ValueError(f"{name} does not match its recorded sha256")
            state = torch.load(entry / STATE_FILE, map_location="cpu", weights_only=True)
            reports = json.loads((entry / REPORTS_FILE).read_text())
        except Exception as exc:  # noqa: BLE001 - any damage means: train again
            log.warning("ignoring damaged trained module %s (%s); it will be retrained", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return state, reports

    def put_trained(self, key: str, state: dict, reports: list[dict]) -> None:
        """Store a trained module's state_dict and its steps' reports under ``key``."""
        import torch

        with self._building(key, self.trained_dir(key)) as scratch:
            torch.save(state, scratch / STATE_FILE)
            (scratch / REPORTS_FILE).write_text(json.dumps(reports, indent=1))
            record = {name: sha256_file(scratch / name) for name in (STATE_FILE, REPORTS_FILE)}
            (scratch / RECORD_FILE).write_text(json.dumps(record, indent=1))

    @contextlib.contextmanager
    def _building(self, key: str, final: Path) -> Iterator[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        self._clear_abandoned_builds()
        # The builder's pid in the name lets a later run tell an abandoned build (its
        # process was killed) from one in progress in another process.
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-{os.getpid()}-", dir=self.root))
        try:
            yield scratch
            final.parent.mkdir(parents=True, exist_ok=True)
            scratch.chmod(0o755)  # mkdtemp makes it private; an entry is ordinary data
            try:
                os.rename(scratch, final)
            except OSError:
                # Another process finished the same entry first; theirs is as good.
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _clear_abandoned_builds(self) -> None:
        for scratch in self.root.glob(".build-*-*-*"):
            pid = scratch.name.split("-")[2]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def write_result(scratch: Path, result: Result) -> None:
        figures = result.to_dict()
        record = {
            "result": figures,
            "result_sha256": _result_digest(figures),
            "artifact_sha256": sha256_file(scratch / _artifact_file(result)),
            "predictions_sha256": sha256_file(scratch / PREDICTIONS_FILE),
        }
        # Through a temp file and a rename: a re-measured entry replaces its figures
        # while readers may be reading them.
        write_text_atomic(scratch / RESULT_FILE, json.dumps(record, indent=1))

    def replace_result(self, key: str, result: Result) -> None:
        """Replace the figures of the existing entry ``key`` (its files stay as they are).

        Used to re-measure a variant's latency and memory on its cached artifact.
        """
        entry = self.entry_dir(key)
        artifact = entry / _artifact_file(result)
        if not artifact.is_file():
            raise FileNotFoundError(f"no cache entry {key} to replace the figures of")
        self.write_result(entry, dataclasses.replace(result, artifact=artifact))

    def clear(self) -> None:
        """Remove every entry."""
        shutil.rmtree(self.root, ignore_errors=True)

"""An on-disk, content-addressed cache of evaluated variants.

Each entry is a folder named by its key holding the artifact, the test-split
predictions and ``result.json``. An entry is built in a temporary folder and renamed
into place when complete, so a half-written entry is never read; an entry whose files
do not match what ``result.json`` records is treated as absent and rebuilt.
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

from workbench.results import Result

__all__ = ["Cache", "default_cache_dir", "sha256_file"]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# The sha256 of result.json's bytes: the figures are checked like the artifact, so an
# edited digit (an accuracy of 0.9926 turned into 0.4926) is caught, not reported.
RESULT_DIGEST_FILE = "result.json.sha256"
# The artifact's file name in entries written before runtimes named theirs (then
# ``result.json`` records it as ``artifact_file``).
ARTIFACT_FILE = "model.onnx"
PREDICTIONS_FILE = "predictions.npy"


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
            recorded = (entry / RESULT_DIGEST_FILE).read_text().strip()
            if sha256_file(entry / RESULT_FILE) != recorded:
                raise ValueError("result.json does not match its recorded sha256")
            record = json.loads((entry / RESULT_FILE).read_text())
            result = Result.from_dict(record["result"])
            artifact_file = record.get("artifact_file", ARTIFACT_FILE)
            if not isinstance(artifact_file, str) or Path(artifact_file).name != artifact_file:
                raise ValueError(f"artifact file {artifact_file!r} is not a plain file name")
            artifact = entry / artifact_file
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

        The block must write the artifact (the runtime's file name, e.g. ``model.onnx``),
        ``predictions.npy`` and then call :meth:`write_result` on the scratch folder.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._clear_abandoned_builds()
        # The builder's pid in the name lets a later run tell an abandoned build (its
        # process was killed) from one in progress in another process.
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{key[:12]}-{os.getpid()}-", dir=self.root))
        try:
            yield scratch
            final = self.entry_dir(key)
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
        artifact_file = Path(result.artifact).name
        record = {
            "result": result.to_dict(),
            "artifact_file": artifact_file,
            "artifact_sha256": sha256_file(scratch / artifact_file),
            "predictions_sha256": sha256_file(scratch / PREDICTIONS_FILE),
        }
        (scratch / RESULT_FILE).write_text(json.dumps(record, indent=1))
        (scratch / RESULT_DIGEST_FILE).write_text(sha256_file(scratch / RESULT_FILE) + "\n")

    def clear(self) -> None:
        """Remove every entry."""
        shutil.rmtree(self.root, ignore_errors=True)

"""Export a chosen variant: its artifact, the baseline to fall back to, and a manifest.

The manifest is a model card a deployment pipeline can read: the recipe, the metrics
and the environment they were measured in, the sha256 of every file and of the base
model's weights, input/output names, shapes and preprocessing, and the baseline the
variant was derived from, so a deployment can fall back to it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import os
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from workbench.cache import Cache, sha256_file
from workbench.errors import WorkbenchError
from workbench.pipeline import TORCH_STEPS, MeasureSettings, evaluate, subject_model
from workbench.recipe import Recipe
from workbench.results import Result
from workbench.runtimes import get_runtime
from workbench.runtimes.onnxruntime import onnx_signature

# Steps after which no float PyTorch program matches the artifact cheaply: QAT's artifact
# is int8, and distillation and gradual pruning would have to train all over again.
_NO_TORCH_PROGRAM = ("qat", "distill", "gradual_prune")

__all__ = ["MANIFEST_FORMAT", "check_export_folder", "export_variant", "onnx_signature"]

MANIFEST_FORMAT = "edge-workbench-manifest/1"

# The device runner bundled with an export: a copy of workbench/devices/runner.py (one
# self-contained file: numpy + ONNX Runtime), and how to run it and import its results.
RUNNER_FILE = "workbench_runner.py"
RUN_INSTRUCTIONS_FILE = "RUN.md"
# Runtimes the runner measures in (it makes an ONNX Runtime session, as the workbench does).
RUNNER_RUNTIMES = ("onnxruntime",)


def _signature(runtime: Any, artifact: Path) -> dict[str, list[dict]]:
    """The artifact's inputs and outputs (name, shape, dtype), from its runtime."""
    rows = runtime.io_signature(artifact)

    def of(role: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "role"} for r in rows if r["role"] == role]

    return {"inputs": of("input"), "outputs": of("output")}


def _file_entry(path: Path, fmt: str) -> dict:
    return {
        "file": path.name,
        "format": fmt,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
    }


def _save_torch_program(
    model: Any, recipe: Recipe, artifact: Path, dst_dir: Path, runtime: str = "onnxruntime"
) -> dict:
    """Save the float PyTorch variant as .pt2 (TorchScript if torch.export fails), checked
    against the exported artifact in its runtime."""
    import torch

    module = copy.deepcopy(model.module)
    for step in recipe.torch_steps():
        TORCH_STEPS[type(step)](module, step, model)
    module.eval()
    example = model.example_input()
    # torch.jit warns that it is deprecated on every call: noise under the CLI's output,
    # and the fallback is chosen on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(module, (example,))
            path = dst_dir / "model.pt2"
            torch.export.save(program, str(path))
            loaded = torch.export.load(str(path)).module()
            fmt = "torch.export"
        except Exception:  # noqa: BLE001 - fall back to TorchScript for untraceable graphs
            path = dst_dir / "model.torchscript.pt"
            torch.jit.save(torch.jit.trace(module, example), str(path))
            loaded = torch.jit.load(str(path))
            fmt = "torchscript"
    with torch.no_grad():
        ours = loaded(example).numpy()
    theirs = get_runtime(runtime).predict(artifact, example.numpy())
    entry = _file_entry(path, fmt)
    entry["max_abs_diff_vs_onnx"] = float(np.max(np.abs(ours - theirs)))
    return entry


def export_variant(
    result: Result,
    model: Any,
    out_dir: str | Path,
    *,
    settings: MeasureSettings | None = None,
    cache: Cache | None = None,
    torch_program: bool = True,
) -> Path:
    """Write the variant's artifact (the runtime's file, e.g. model.onnx), the baseline's,
    a .pt2 where it applies, and manifest.json naming the runtime and the format.

    Files are written to a scratch folder first and moved in at the end, the manifest
    last, so an interrupted export leaves no half-written files in ``out_dir``.

    Args:
        result: the evaluated variant (from ``evaluate``).
        model: the Model it was derived from.
        out_dir: the folder to write (created if needed). A previous export there is
            replaced whole; a folder holding anything else is refused.
        torch_program: also save float PyTorch variants as .pt2 (or TorchScript).

    Returns:
        The path of manifest.json.
    """
    out_dir = Path(out_dir)
    check_export_folder(out_dir)
    if not result.artifact.is_file():
        raise WorkbenchError(
            f"the variant's artifact {result.artifact} is gone", "evaluate the variant again"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
    try:
        runtime = get_runtime(result.runtime)
        fmt = runtime.artifact_format
        artifact = scratch / runtime.artifact_file
        shutil.copyfile(result.artifact, artifact)
        files = [_file_entry(artifact, fmt)]
        baseline_entry = None
        if not result.recipe.is_baseline:
            # The baseline in the same runtime as the variant, to fall back to.
            settings = dataclasses.replace(settings or MeasureSettings(), runtime=runtime.name)
            base = evaluate(model, Recipe(), settings=settings, cache=cache)
            shutil.copyfile(base.artifact, scratch / f"baseline.{fmt}")
            baseline_entry = {
                **_file_entry(scratch / f"baseline.{fmt}", fmt),
                "recipe": base.recipe.to_dict(),
                "metrics": base.metrics.to_dict(),
                "cache_key": base.key,
            }
        retrained = any(s.kind in _NO_TORCH_PROGRAM for s in result.recipe.steps)
        # Runtime-made files for deployment beside the artifact (TFLite Micro: the
        # model as a C array for firmware, with its arena size).
        files += runtime.deployment_files(artifact, scratch, result.metrics)
        if (
            torch_program
            and model.module is not None
            # The artifact is what the recipe's steps made it (TFLite Micro adds int8).
            and not runtime.required_steps(result.recipe.artifact_steps())
            and not retrained
        ):
            files.append(_save_torch_program(model, result.recipe, artifact, scratch, runtime.name))
        # A distilled variant is the student: its own input and preprocessing.
        subject = subject_model(model, result.recipe)
        signature = _signature(runtime, artifact)
        device_runner = _bundle_runner(scratch, runtime.name, artifact.name, signature)
        manifest = {
            "format": MANIFEST_FORMAT,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "workbench_version": metadata.version("edge-workbench"),
            "model": model.describe(),
            "base_model_weights_sha256": model.fingerprint,
            # Not a file hash: see how it is computed, so another tool can re-check it.
            "base_model_weights_sha256_method": (
                "ONNX files: sha256 of the file's bytes (and external data); TorchScript and "
                ".pt2 archives: sha256 over the archive's entries; PyTorch weights: sha256 over "
                "the state_dict in sorted name order, each tensor as name, NUL, dtype, NUL, "
                "shape, NUL, 8-byte little-endian length, raw bytes"
            ),
            "recipe": result.recipe.to_dict(),
            "recipe_name": result.name,  # in the runtime's words (Result.name)
            "artifact": files[0],
            "other_artifacts": files[1:],
            "runtime": runtime.name,
            "artifact_format": fmt,
            "signature": signature,
            "preprocessing": subject.preprocessing.to_dict() if subject.preprocessing else None,
            "class_names": list(model.class_names) if model.class_names else None,
            "task": model.task.to_dict() if model.task else None,
            "metrics": result.metrics.to_dict(),
            # TFLite Micro: the tensor arena the interpreter needs (ARENA_SIZE), split
            # into activations and persistent buffers; None for other runtimes.
            "tensor_arena": result.metrics.arena,
            "warnings": list(result.warnings),
            "step_reports": list(result.steps),
            "baseline": baseline_entry,
            "device_runner": device_runner,
            "cache_key": result.key,
        }
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=1))
        scratch.chmod(0o755)  # mkdtemp makes it private; an export is meant to be shared
        _swap_in(scratch, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir / "manifest.json"


def _runner_input_shape(signature: dict[str, list[dict]]) -> str | None:
    """The artifact's first input shape as the runner's --input-shape (batch 1), or None
    when the file fixes every dimension (the runner reads it itself)."""
    inputs = signature.get("inputs") or []
    shape = inputs[0].get("shape") if inputs else None
    if not shape or all(isinstance(d, int) and d > 0 for d in shape):
        return None
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if any(d is None for d in dims[1:]):
        return None  # a free size other than the batch: the user must say it
    return ",".join(str(d) for d in [1, *dims[1:]])


def _run_instructions(artifact_file: str, input_shape: str | None) -> str:
    shape = f" --input-shape {input_shape}" if input_shape else ""
    return f"""# Measuring this variant on the device

`{RUNNER_FILE}` is the workbench's device runner: one file that needs only Python 3.9+,
numpy and onnxruntime on the device (no torch, no workbench). It measures latency
percentiles and peak memory the way the workbench does and writes a results JSON with
the device's environment and the sha256 of the model file.

1. Copy this folder (at least `{artifact_file}` and `{RUNNER_FILE}`) to the device and
   install the two packages there: `pip install numpy onnxruntime`.
2. Run it on the device, with the threads your application will use:

       python3 {RUNNER_FILE} {artifact_file} -o results.json --device-name my-device --threads 1{shape}

3. Bring `results.json` back and record it on the workbench machine, under the device
   profile it was measured on (`workbench devices` lists them; `--devices-file` adds
   your own):

       workbench import results.json --device raspberry-pi-4 --artifact {artifact_file}

   The import checks that the results belong to this model file (sha256). From then on
   the app, `workbench check` and device fit use the device's own latency and peak
   memory, labelled "measured on <device>", instead of the roofline estimate.
"""


def _bundle_runner(
    folder: Path, runtime: str, artifact_file: str, signature: dict[str, list[dict]]
) -> dict | None:
    """Copy the device runner and RUN.md into ``folder``; their manifest entry, or None
    when the runner cannot measure the runtime's artifact."""
    if runtime not in RUNNER_RUNTIMES:
        return None
    from workbench.devices import runner

    shutil.copyfile(runner.__file__, folder / RUNNER_FILE)
    (folder / RUN_INSTRUCTIONS_FILE).write_text(
        _run_instructions(artifact_file, _runner_input_shape(signature)), encoding="utf-8"
    )
    return {
        "runner": _file_entry(folder / RUNNER_FILE, "python"),
        "instructions": _file_entry(folder / RUN_INSTRUCTIONS_FILE, "markdown"),
        "runs": artifact_file,
        "requires": ["python>=3.9", "numpy", "onnxruntime"],
        "import_with": f"workbench import results.json --device NAME --artifact {artifact_file}",
    }


def _is_previous_export(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def check_export_folder(out_dir: str | Path) -> None:
    """Raise WorkbenchError unless ``out_dir`` can receive an export: absent, empty, or a
    previous export (replaced whole). A folder holding other files is refused: replacing
    it would delete them, and writing beside them would mix two things in one folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise WorkbenchError(
            f"{out_dir} exists and is not a folder", "choose a folder path for --out"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _is_previous_export(out_dir):
        raise WorkbenchError(
            f"{out_dir} holds files that are not a workbench export",
            "choose a new or empty folder (an earlier export's folder is replaced whole)",
        )


def _swap_in(new: Path, out_dir: Path) -> None:
    """Make the finished folder ``new`` become ``out_dir``, replacing a previous export
    whole, so no file of the old one is left beside the new ones. The old folder is
    moved aside first and removed only once the new one is in place."""
    check_export_folder(out_dir)  # again: the folder may have changed while exporting
    old = None
    if out_dir.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "previous")
    try:
        os.replace(new, out_dir)
    except BaseException:
        if old is not None:  # put the previous export back
            os.replace(old / "previous", out_dir)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

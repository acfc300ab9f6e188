"""Train the sample models on the digits fitting part and write weights.pt + meta.json.

    python -m sample_models.train --model digits-cnn          # one sample
    python -m sample_models.train --model all                 # all of them
    python -m sample_models.train --model digits-cnn --epochs 2 --out-dir /tmp/x

Training is CPU-only, seeded and deterministic as far as torch allows
(``torch.use_deterministic_algorithms(True)``, 2 threads, a seeded numpy generator for
batch order and augmentation). The training images are ``DIGITS.fitting()``'s training
part: the digits training part without the recipe search's 252 validation images, so the
search's floor is read on images the float model has not seen either. Accuracy is
measured once, after training, in float32 PyTorch on the full test split (540 images) and
on the validation part (252 images), neither of which training sees.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sample_models import META_FILE, SAMPLE_DIR, WEIGHTS_FILE
from sample_models.architectures import build_architecture
from workbench.data.digits import DIGITS, Preprocessing
from workbench.errors import WorkbenchError

__all__ = [
    "SPECS",
    "TRAINING_TASK",
    "SampleSpec",
    "TrainSettings",
    "evaluate",
    "main",
    "train_sample",
    "training_data_note",
    "validation_meta",
]

THREADS = 2  # the reference machine has 2 cores; fixed so runs are comparable
# What the samples train on: the digits training part without the validation images the
# recipe search decides on, so a search on a sample judges its candidates on images the
# float model never saw (otherwise the float scores 100% there and the floor is lenient).
TRAINING_TASK = DIGITS.fitting()


@dataclass(frozen=True)
class TrainSettings:
    """How one sample is trained (recorded verbatim in its meta.json)."""

    epochs: int  # full passes over TRAINING_TASK's training images (1005)
    batch_size: int
    optimizer: str  # a key of _OPTIMIZERS: "adamw" or "sgd"
    lr: float  # peak learning rate of the one-cycle schedule
    weight_decay: float
    momentum: float = 0.9  # SGD only
    warmup_fraction: float = 0.15  # share of steps spent rising to the peak lr
    max_shift: int = 1  # augmentation: random shift of the raw 8x8 image, in pixels


@dataclass(frozen=True)
class SampleSpec:
    """Everything needed to train one sample model and describe it."""

    name: str
    description: str
    arch: str  # a key of sample_models.architectures.ARCHITECTURES
    preprocessing: Preprocessing
    settings: TrainSettings
    accuracy_floor: float  # the test accuracy the shipped weights must reach
    arch_kwargs: dict = field(default_factory=lambda: {"num_classes": 10})
    seed: int = 0


# mean=0.5, std=0.5 maps the pixel range [0, 1] to [-1, 1]: centred inputs, and a
# symmetric range that int8 quantization of the input covers without waste.
_PREP_8 = Preprocessing(size=8, channels=1, mean=0.5, std=0.5)
_PREP_32 = Preprocessing(size=32, channels=3, mean=0.5, std=0.5)

SPECS: dict[str, SampleSpec] = {
    s.name: s
    for s in (
        SampleSpec(
            name="digits-cnn",
            description=(
                "Small CNN for 8x8 grey digits (3 conv + 2 linear layers), sized for a "
                "microcontroller; the model to compress and deploy."
            ),
            arch="sample_models.architectures:DigitsCNN",
            preprocessing=_PREP_8,
            settings=TrainSettings(
                epochs=60, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=1e-4
            ),
            accuracy_floor=0.97,
        ),
        SampleSpec(
            name="digits-mobilenetv2",
            description=(
                "torchvision MobileNetV2 (unmodified, num_classes=10) trained from scratch "
                "on digits enlarged to 32x32x3; depthwise convolutions, a classic "
                "quantization case."
            ),
            arch="torchvision:mobilenet_v2",
            preprocessing=_PREP_32,
            settings=TrainSettings(
                epochs=40, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=1e-4
            ),
            accuracy_floor=0.95,
        ),
        SampleSpec(
            name="digits-resnet18",
            description=(
                "torchvision ResNet-18 (unmodified, num_classes=10) trained from scratch on "
                "digits enlarged to 32x32x3; the large teacher for distillation."
            ),
            arch="torchvision:resnet18",
            preprocessing=_PREP_32,
            settings=TrainSettings(
                epochs=20, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4
            ),
            accuracy_floor=0.97,
        ),
    )
}

_OPTIMIZERS: dict[str, Callable[[list, TrainSettings], torch.optim.Optimizer]] = {
    "adamw": lambda params, s: torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay),
    "sgd": lambda params, s: torch.optim.SGD(
        params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, nesterov=True
    ),
}


def _random_shift(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each raw (N, 8, 8) image by up to ``max_shift`` pixels each way, filling with 0.

    0 is the digits' background, so the shifted-in border looks like the real one.
    """
    if max_shift == 0:
        return images
    m = max_shift
    padded = np.pad(images, ((0, 0), (m, m), (m, m)))
    offsets = rng.integers(0, 2 * m + 1, size=(len(images), 2))
    return np.stack([padded[i, dy : dy + 8, dx : dx + 8] for i, (dy, dx) in enumerate(offsets)])


def training_data_note() -> str:
    """What the samples are trained on, in words, with the image counts (for meta.json)."""
    n_train = len(TRAINING_TASK.raw("train")[1])
    n_validation = len(DIGITS.raw("validation")[1])
    return (
        f"digits training part without the {n_validation} validation images "
        f"({n_train} images; Task.fitting()); the validation and test splits are never seen"
    )


def evaluate(
    module: nn.Module, preprocessing: Preprocessing, part: str = "test"
) -> tuple[float, int, int]:
    """Float32 accuracy of ``module`` on a digits ``part`` ("test" or "validation"), as
    (accuracy, correct, total).

    All images go through in one batch in eval mode, so the figure does not depend
    on a batch size.
    """
    x, y = DIGITS.arrays(part, preprocessing)
    module.eval()
    with torch.no_grad():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    correct = int((pred == y).sum())
    return correct / len(y), correct, len(y)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Seeded, deterministic, fixed-thread torch inside; the caller's settings restored after.

    Restoring matters because train_sample() is also called in-process (tests, notebooks).
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.set_num_threads(THREADS)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


def _fit(spec: SampleSpec, settings: TrainSettings, log: Callable[[str], None]) -> nn.Module:
    with _deterministic_torch(spec.seed):
        return _fit_seeded(spec, settings, np.random.default_rng(spec.seed), log)


def _fit_seeded(
    spec: SampleSpec,
    settings: TrainSettings,
    rng: np.random.Generator,
    log: Callable[[str], None],
) -> nn.Module:
    module = build_architecture(spec.arch, **spec.arch_kwargs)
    x_raw, y_raw = TRAINING_TASK.raw("train")
    images = np.asarray(x_raw, dtype=np.float64).reshape(-1, 8, 8)
    labels = torch.tensor(y_raw, dtype=torch.int64)
    n = len(images)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    optimizer = _OPTIMIZERS[settings.optimizer](list(module.parameters()), settings)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=settings.lr,
        total_steps=settings.epochs * steps_per_epoch,
        pct_start=settings.warmup_fraction,
        anneal_strategy="cos",
        cycle_momentum=False,
    )
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(settings.epochs):
        module.train()
        order = rng.permutation(n)
        total_loss, correct = 0.0, 0
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            batch = _random_shift(images[idx], settings.max_shift, rng)
            xb = torch.from_numpy(spec.preprocessing.apply(batch))
            yb = labels[idx]
            logits = module(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(dim=1) == yb).sum())
        log(
            f"{spec.name} epoch {epoch + 1}/{settings.epochs}: "
            f"loss {total_loss / n:.4f}, train accuracy (augmented) {correct / n:.4f}"
        )
    return module.eval()


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write ``target`` through a temp file in the same folder, then rename over it."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates the file private (0600); shipped files must be world-readable.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _versions() -> dict[str, str]:
    import sklearn
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def train_sample(
    name: str,
    *,
    epochs: int | None = None,
    out_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train sample ``name`` on :data:`TRAINING_TASK`, evaluate it on the test split and the
    validation part, and write weights.pt + meta.json.

    Args:
        name: a key of :data:`SPECS`.
        epochs: overrides the spec's epoch count (for quick checks).
        out_dir: where ``<name>/`` is written; defaults to the shipped ``SAMPLE_DIR``.
        log: receives one progress line per epoch; defaults to stderr.

    Returns:
        The meta dict written to meta.json.

    Raises:
        WorkbenchError: unknown name or bad epoch count, or the result would overwrite
            a shipped sample with one below its accuracy floor.
    """
    if name not in SPECS:
        raise WorkbenchError(
            f"unknown sample model {name!r}", f"use one of: {', '.join(sorted(SPECS))}, all"
        )
    if epochs is not None and epochs < 1:
        raise WorkbenchError(f"epochs must be at least 1, got {epochs}", "pass --epochs 1 or more")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    spec = SPECS[name]
    settings = spec.settings if epochs is None else replace(spec.settings, epochs=epochs)
    out_dir = Path(out_dir) if out_dir is not None else SAMPLE_DIR
    shipped = out_dir.resolve() == SAMPLE_DIR

    started, cpu_started = time.perf_counter(), time.process_time()
    module = _fit(spec, settings, log)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    accuracy, correct, total = evaluate(module, spec.preprocessing)
    validation = evaluate(module, spec.preprocessing, "validation")
    log(
        f"{name}: test accuracy {accuracy:.4f} ({correct}/{total}), validation accuracy "
        f"{validation[0]:.4f} ({validation[1]}/{validation[2]}) in {train_seconds:.1f} s"
    )
    if shipped and accuracy < spec.accuracy_floor:
        raise WorkbenchError(
            f"{name} reached test accuracy {accuracy:.4f}, below its floor "
            f"{spec.accuracy_floor:.2f}; the shipped sample was left unchanged",
            "train with the default epochs (omit --epochs), or write elsewhere with --out-dir",
        )

    folder = out_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = folder / WEIGHTS_FILE
    # Serialised in memory: torch.save names the zip's root folder after the file it
    # writes to, and a random temp-file name there would make the bytes (and the sha256)
    # differ between otherwise identical runs.
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    # The weights file is written first and its hash taken from the bytes on disk, so
    # meta.json (written last) always describes the weights beside it.
    _write_atomically(weights_path, lambda p: p.write_bytes(buffer.getvalue()))
    timing = {
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(train_cpu_seconds, 1),
        "train_timing_note": (
            f"wall-clock and process CPU time of the training loop, {THREADS} torch threads "
            f"on {os.cpu_count()} logical CPUs ({platform.machine()}); wall time grows "
            "when other jobs share the machine"
        ),
    }
    meta = _meta(spec, settings, module, accuracy, correct, total, validation, timing, weights_path)
    _write_atomically(
        folder / META_FILE,
        lambda p: p.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8"),
    )
    return meta


def validation_meta(validation: tuple[float, int, int], how: str) -> dict:
    """meta.json's validation figures from an ``evaluate(..., "validation")`` result."""
    accuracy, correct, total = validation
    return {
        "validation_accuracy": accuracy,
        "validation_correct": correct,
        "validation_samples": total,
        "validation_accuracy_note": (
            f"{how}, the recipe search's validation part (a stratified fifth of the digits "
            "training part, left out of training) in one batch, measured once after training"
        ),
    }


def _meta(
    spec: SampleSpec,
    settings: TrainSettings,
    module: nn.Module,
    accuracy: float,
    correct: int,
    total: int,
    validation: tuple[float, int, int],
    timing: dict,
    weights_path: Path,
) -> dict:
    s = asdict(settings)
    optimizer = (
        f"AdamW(lr={settings.lr}, weight_decay={settings.weight_decay})"
        if settings.optimizer == "adamw"
        else f"SGD(lr={settings.lr}, momentum={settings.momentum}, nesterov=True, "
        f"weight_decay={settings.weight_decay})"
    )
    return {
        "name": spec.name,
        "description": spec.description,
        "arch": spec.arch,
        "arch_kwargs": dict(spec.arch_kwargs),
        "task": DIGITS.name,
        "class_names": list(DIGITS.class_names),
        "input_shape": list(spec.preprocessing.input_shape),
        "preprocessing": spec.preprocessing.to_dict(),
        "test_accuracy": accuracy,
        "test_correct": correct,
        "test_samples": total,
        "test_accuracy_note": (
            "float32 PyTorch, eval mode, full digits test split in one batch, "
            "measured once after training"
        ),
        **validation_meta(validation, "float32 PyTorch, eval mode"),
        "accuracy_floor": spec.accuracy_floor,
        "params": sum(p.numel() for p in module.parameters()),
        "seed": spec.seed,
        "training": {
            **s,
            "optimizer_detail": optimizer,
            "schedule": (
                f"OneCycleLR per step: cosine warm-up over the first "
                f"{settings.warmup_fraction:.0%} of steps from lr/25 to lr, then cosine "
                "decay to lr/1e5; momentum not cycled"
            ),
            "loss": "cross-entropy",
            "augmentation": (
                f"each raw 8x8 image shifted by a uniform random integer in "
                f"[-{settings.max_shift}, {settings.max_shift}] pixels along each axis, "
                "zero-filled, before preprocessing (and before enlarging)"
                if settings.max_shift
                else "none"
            ),
            "data": training_data_note(),
            "train_images": len(TRAINING_TASK.raw("train")[1]),
            "device": "cpu",
            "threads": THREADS,
            "deterministic": "torch.use_deterministic_algorithms(True); numpy default_rng(seed)",
        },
        **timing,
        "versions": _versions(),
        "weights_file": WEIGHTS_FILE,
        "weights_bytes": weights_path.stat().st_size,
        "weights_sha256": _file_sha256(weights_path),
        "command": f"python -m sample_models.train --model {spec.name}",
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sample_models.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, choices=[*sorted(SPECS), "all"])
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's epochs")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help=f"output folder (default {SAMPLE_DIR})"
    )
    args = parser.parse_args(argv)
    names = sorted(SPECS) if args.model == "all" else [args.model]
    try:
        for name in names:
            meta = train_sample(name, epochs=args.epochs, out_dir=args.out_dir)
            print(
                f"{name}: test accuracy {meta['test_accuracy']:.4f}, validation accuracy "
                f"{meta['validation_accuracy']:.4f}, {meta['params']} params, "
                f"{meta['weights_bytes']} bytes, trained in {meta['train_seconds']} s"
            )
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

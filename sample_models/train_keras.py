"""Train the Keras sample on the digits fitting part and write model.keras + meta.json.

    python -m sample_models.train_keras                        # the shipped sample
    python -m sample_models.train_keras --epochs 2 --out-dir /tmp/x

The Keras sample lives in ``sample_models/keras/<name>/`` (one level below the PyTorch
samples, so ``sample_models.sample_names()`` and the PyTorch loaders do not see it).
Training is CPU-only and seeded: ``keras.utils.set_random_seed``, TensorFlow's op
determinism, 2 threads, and the same numpy generator for batch order and augmentation
as ``sample_models.train``, on the same images (``TRAINING_TASK``: the digits training
part without the recipe search's 252 validation images). Accuracy is measured once, after
training, in float32 Keras on the full test split (540 images) and on the validation part
(252 images), neither of which training sees.

The input layout is NHWC (TensorFlow's and LiteRT's), so the preprocessing is the
PyTorch samples' one followed by a transpose from NCHW to NHWC.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sample_models import META_FILE, SAMPLE_DIR
from sample_models.train import (
    THREADS,
    TRAINING_TASK,
    TrainSettings,
    _file_sha256,
    _random_shift,
    training_data_note,
    validation_meta,
)
from workbench._tf import keras, tensorflow
from workbench.data.digits import DIGITS, Preprocessing
from workbench.errors import WorkbenchError

__all__ = [
    "KERAS_SAMPLE_DIR",
    "KERAS_SPEC",
    "MODEL_FILE",
    "build_keras_cnn",
    "evaluate_keras",
    "main",
    "nhwc",
    "train_keras_sample",
]

KERAS_SAMPLE_DIR: Path = SAMPLE_DIR / "keras"
MODEL_FILE = "model.keras"
LAYOUT = "NHWC"


@dataclass(frozen=True)
class KerasSampleSpec:
    """Everything needed to train the Keras sample and describe it."""

    name: str
    description: str
    preprocessing: Preprocessing
    settings: TrainSettings
    accuracy_floor: float
    # Keras' default BatchNorm momentum (0.99) makes the moving statistics lag far
    # behind the weights in a short training run; 0.9 (PyTorch's 0.1) tracks them.
    bn_momentum: float = 0.9
    dropout: float = 0.2
    seed: int = 0


KERAS_SPEC = KerasSampleSpec(
    name="digits-cnn-keras",
    description=(
        "Small Keras CNN for 8x8 grey digits (conv, depthwise conv, pointwise conv, conv, "
        "2 dense layers; about 15k parameters), NHWC; the Keras model to convert to "
        "TFLite and run in LiteRT and TensorFlow Lite Micro."
    ),
    preprocessing=Preprocessing(size=8, channels=1, mean=0.5, std=0.5),
    settings=TrainSettings(epochs=60, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=1e-4),
    accuracy_floor=0.97,
)


def nhwc(x_nchw: np.ndarray) -> np.ndarray:
    """NCHW float32 images (as ``Preprocessing.apply`` returns them) laid out as NHWC."""
    return np.ascontiguousarray(np.transpose(x_nchw, (0, 2, 3, 1)))


def build_keras_cnn(spec: KerasSampleSpec = KERAS_SPEC, num_classes: int = 10):
    """The untrained Keras model: only layers the TFLite converter and TFLM support.

    Convolutions carry no bias (the BatchNorm after each has its own shift, and the
    converter folds it in). Spatial sizes: 8x8 -> 8x8 -> 4x4 -> 2x2 -> 128 features.
    Outputs logits.
    """
    k = keras()
    layers = k.layers
    p = spec.preprocessing

    def bn_relu(x):
        x = layers.BatchNormalization(momentum=spec.bn_momentum)(x)
        return layers.ReLU()(x)

    inputs = k.Input(shape=(p.size, p.size, p.channels), name="image")
    x = bn_relu(layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs))
    x = bn_relu(layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x))
    x = bn_relu(layers.Conv2D(32, 1, use_bias=False)(x))
    x = layers.MaxPooling2D(2)(x)
    x = bn_relu(layers.Conv2D(32, 3, padding="same", use_bias=False)(x))
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    x = layers.Dropout(spec.dropout)(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return k.Model(inputs, outputs, name=spec.name.replace("-", "_"))


def evaluate_keras(
    model, preprocessing: Preprocessing, part: str = "test"
) -> tuple[float, int, int]:
    """Float32 accuracy of ``model`` on a digits ``part`` ("test" or "validation"), as
    (accuracy, correct, total)."""
    x, y = DIGITS.arrays(part, preprocessing)
    logits = np.asarray(model(nhwc(x), training=False))
    correct = int((logits.argmax(axis=1) == y).sum())
    return correct / len(y), correct, len(y)


def _fit(spec: KerasSampleSpec, settings: TrainSettings, log: Callable[[str], None]):
    tf = tensorflow()
    k = keras()
    # Threads must be set before TensorFlow runs its first op, so this is best effort
    # in a process that already used TensorFlow (the figures are then still seeded).
    try:
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    k.utils.set_random_seed(spec.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(spec.seed)

    model = build_keras_cnn(spec)
    x_raw, y_raw = TRAINING_TASK.raw("train")
    images = np.asarray(x_raw, dtype=np.float64).reshape(-1, 8, 8)
    labels = np.asarray(y_raw, dtype=np.int64)
    n = len(images)
    steps_per_epoch = -(-n // settings.batch_size)
    total = settings.epochs * steps_per_epoch
    warmup = int(settings.warmup_fraction * total)
    # Mirrors the PyTorch samples' one-cycle: linear warm-up from lr/25 to lr, then
    # cosine decay towards 0.
    schedule = k.optimizers.schedules.CosineDecay(
        initial_learning_rate=settings.lr / 25,
        decay_steps=max(total - warmup, 1),
        warmup_target=settings.lr,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=k.optimizers.AdamW(learning_rate=schedule, weight_decay=settings.weight_decay),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    for epoch in range(settings.epochs):
        order = rng.permutation(n)
        batch = _random_shift(images[order], settings.max_shift, rng)
        x = nhwc(spec.preprocessing.apply(batch))
        hist = model.fit(
            x, labels[order], batch_size=settings.batch_size, epochs=1, shuffle=False, verbose=0
        )
        log(
            f"{spec.name} epoch {epoch + 1}/{settings.epochs}: loss "
            f"{hist.history['loss'][-1]:.4f}, train accuracy (augmented) "
            f"{hist.history['accuracy'][-1]:.4f}"
        )
    return model


def _save_atomically(model, target: Path) -> None:
    # Keras insists on a ".keras" suffix, so the temp file keeps it.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".keras")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        model.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_text_atomically(target: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def train_keras_sample(
    *,
    epochs: int | None = None,
    out_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train the Keras sample on ``TRAINING_TASK``, evaluate it on the test split and the
    validation part, and write model.keras + meta.json.

    Args:
        epochs: overrides the spec's epoch count (for quick checks).
        out_dir: where ``<name>/`` is written; defaults to ``sample_models/keras``.
        log: receives one progress line per epoch; defaults to stderr.

    Raises:
        WorkbenchError: bad epoch count, or the result would overwrite the shipped
            sample with one below its accuracy floor.
    """
    if epochs is not None and epochs < 1:
        raise WorkbenchError(f"epochs must be at least 1, got {epochs}", "pass --epochs 1 or more")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    spec = KERAS_SPEC
    settings = spec.settings if epochs is None else replace(spec.settings, epochs=epochs)
    out_dir = Path(out_dir) if out_dir is not None else KERAS_SAMPLE_DIR
    shipped = out_dir.resolve() == KERAS_SAMPLE_DIR.resolve()

    started, cpu_started = time.perf_counter(), time.process_time()
    model = _fit(spec, settings, log)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    accuracy, correct, total = evaluate_keras(model, spec.preprocessing)
    validation = evaluate_keras(model, spec.preprocessing, "validation")
    log(
        f"{spec.name}: test accuracy {accuracy:.4f} ({correct}/{total}), validation accuracy "
        f"{validation[0]:.4f} ({validation[1]}/{validation[2]}) in {train_seconds:.1f} s"
    )
    if shipped and accuracy < spec.accuracy_floor:
        raise WorkbenchError(
            f"{spec.name} reached test accuracy {accuracy:.4f}, below its floor "
            f"{spec.accuracy_floor:.2f}; the shipped sample was left unchanged",
            "train with the default epochs (omit --epochs), or write elsewhere with --out-dir",
        )
    folder = out_dir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    # Saved from an uncompiled copy: the trained model's file would also hold the
    # optimizer's state (AdamW's two moments: three times the weights' bytes).
    inference = build_keras_cnn(spec)
    inference.set_weights(model.get_weights())
    _save_atomically(inference, model_path)
    meta = _meta(spec, settings, model, accuracy, correct, total, validation, model_path)
    meta["train_seconds"] = round(train_seconds, 1)
    meta["train_cpu_seconds"] = round(train_cpu_seconds, 1)
    meta["train_timing_note"] = (
        f"wall-clock and process CPU time of the training loop, {THREADS} TensorFlow intra-op "
        f"threads on {os.cpu_count()} logical CPUs ({platform.machine()}); wall time grows "
        "when other jobs share the machine"
    )
    _write_text_atomically(folder / META_FILE, json.dumps(meta, indent=2) + "\n")
    return meta


def _versions() -> dict[str, str]:
    import sklearn

    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow().__version__,
        "keras": keras().__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _meta(spec, settings, model, accuracy, correct, total, validation, model_path: Path) -> dict:
    p = spec.preprocessing
    preprocessing = p.to_dict()
    preprocessing["layout"] = LAYOUT
    preprocessing["description"] = preprocessing["description"].replace(
        "NCHW float32", "NCHW float32, then transposed to NHWC"
    )
    return {
        "name": spec.name,
        "description": spec.description,
        "framework": "keras",
        "arch": "sample_models.train_keras:build_keras_cnn",
        "task": DIGITS.name,
        "class_names": list(DIGITS.class_names),
        "input_shape": [1, p.size, p.size, p.channels],
        "input_layout": LAYOUT,
        "output": "logits (no softmax)",
        "preprocessing": preprocessing,
        "test_accuracy": accuracy,
        "test_correct": correct,
        "test_samples": total,
        "test_accuracy_note": (
            "float32 Keras, inference mode, full digits test split in one batch, measured "
            "once after training"
        ),
        **validation_meta(validation, "float32 Keras, inference mode"),
        "accuracy_floor": spec.accuracy_floor,
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "seed": spec.seed,
        "training": {
            **asdict(settings),
            "bn_momentum": spec.bn_momentum,
            "dropout": spec.dropout,
            "optimizer_detail": (
                f"keras.optimizers.AdamW(weight_decay={settings.weight_decay}) with the schedule"
            ),
            "schedule": (
                f"keras CosineDecay per step: linear warm-up over the first "
                f"{settings.warmup_fraction:.0%} of steps from lr/25 to lr, then cosine decay "
                "to 0"
            ),
            "loss": "sparse categorical cross-entropy on logits",
            "augmentation": (
                f"each raw 8x8 image shifted by a uniform random integer in "
                f"[-{settings.max_shift}, {settings.max_shift}] pixels along each axis, "
                "zero-filled, before preprocessing"
            ),
            "data": training_data_note(),
            "train_images": len(TRAINING_TASK.raw("train")[1]),
            "device": "cpu",
            "threads": THREADS,
            "deterministic": (
                "keras.utils.set_random_seed(seed); "
                "tf.config.experimental.enable_op_determinism(); numpy default_rng(seed)"
            ),
        },
        "versions": _versions(),
        "model_file": MODEL_FILE,
        "model_bytes": model_path.stat().st_size,
        "model_sha256": _file_sha256(model_path),
        "model_note": (
            "Keras 3 .keras zip; loads with keras.models.load_model(path) in safe mode (no "
            "custom objects, no Lambda layers). Its bytes include a save date, so the sha256 "
            "changes between otherwise identical runs."
        ),
        "command": "python -m sample_models.train_keras",
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sample_models.train_keras", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's epochs")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help=f"output folder (default {KERAS_SAMPLE_DIR})"
    )
    args = parser.parse_args(argv)
    try:
        meta = train_keras_sample(epochs=args.epochs, out_dir=args.out_dir)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{meta['name']}: test accuracy {meta['test_accuracy']:.4f}, validation accuracy "
        f"{meta['validation_accuracy']:.4f}, {meta['params']} params, "
        f"{meta['model_bytes']} bytes, trained in {meta['train_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``digits`` task: scikit-learn's 8x8 handwritten digits, split reproducibly.

The test split is exactly ``train_test_split(X, y, test_size=0.3, random_state=0,
stratify=y)`` on ``sklearn.datasets.load_digits()``: anyone can re-check a number.
Calibration, fine-tuning and distillation draw only from the training part.

The *validation* part is a stratified fifth of the training part (252 images, again
``train_test_split``, stored beside the split and checked against scikit-learn by the
tests): the recipe search decides on it, never on the test split. ``Task.fitting()``
is the task whose training part leaves those images out, so the variants the search
builds (fine-tuned, distilled, calibrated) never see the images they are judged on.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["DIGITS", "LAYOUTS", "Preprocessing", "Task", "get_task"]

Part = Literal["train", "test", "validation"]

# Input layouts a preprocessing can produce: channels first (PyTorch, ONNX) or last
# (Keras, TFLite).
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocessing:
    """How raw 8x8 digit images (integers 0..16) become a model's float32 input.

    In order: divide by ``divisor``; subtract ``mean`` and divide by ``std``;
    enlarge by nearest-neighbour repetition to ``size`` x ``size`` (each pixel
    becomes a ``size // 8`` square block: ``np.repeat`` on both axes); lay out as
    ``layout`` (NCHW for PyTorch and ONNX models, NHWC for Keras and TFLite ones) with
    ``channels`` identical channels. Nearest repetition is used because it is exact
    and trivial to re-implement in any language.
    """

    size: int = 8  # output height and width; a multiple of 8
    channels: int = 1  # the grey image repeated this many times
    divisor: float = 16.0  # the digits' pixel maximum
    mean: float = 0.0  # subtracted after dividing
    std: float = 1.0  # divided by after subtracting the mean
    layout: str = "NCHW"  # one of LAYOUTS: channels first (PyTorch) or last (Keras, TFLite)

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8:
            raise WorkbenchError(
                f"preprocessing size {self.size} is not a multiple of 8",
                "use 8, 16, 32, ... (the digits are 8x8 and are enlarged by whole blocks)",
            )
        if self.channels < 1 or self.std <= 0 or self.divisor <= 0:
            raise WorkbenchError(
                "preprocessing needs channels >= 1, std > 0 and divisor > 0",
                "fix the preprocessing settings in the model's metadata",
            )
        if self.layout not in LAYOUTS:
            raise WorkbenchError(
                f"preprocessing layout {self.layout!r} is not supported",
                f"use one of: {', '.join(LAYOUTS)} (NHWC for Keras and TFLite models)",
            )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The model input shape for one image, batch first, in ``layout``."""
        if self.layout == "NHWC":
            return (1, self.size, self.size, self.channels)
        return (1, self.channels, self.size, self.size)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Turn raw images of shape (N, 8, 8) or (N, 64) into float32 (N, C, S, S), or
        (N, S, S, C) when ``layout`` is NHWC."""
        x = np.asarray(images, dtype=np.float64).reshape(-1, 8, 8)
        x = (x / self.divisor - self.mean) / self.std
        factor = self.size // 8
        if factor > 1:
            x = x.repeat(factor, axis=1).repeat(factor, axis=2)
        if self.layout == "NHWC":
            x = np.repeat(x[:, :, :, None], self.channels, axis=3)
        else:
            x = np.repeat(x[:, None, :, :], self.channels, axis=1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def summary(self) -> str:
        """One line a reader can check a score against, e.g.
        ``x = (pixels / 16 - 0.5) / 0.5, 8x8, 1 channel(s)`` (", NHWC" when channels last)."""
        return (
            f"x = (pixels / {self.divisor:g} - {self.mean:g}) / {self.std:g}, "
            f"{self.size}x{self.size}, {self.channels} channel(s)"
            + (", NHWC" if self.layout == "NHWC" else "")
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["description"] = (
            "x = pixels / divisor; x = (x - mean) / std; enlarge each pixel to a "
            "(size/8)x(size/8) block (nearest, np.repeat on both axes); float32 laid out "
            "as `layout` (NCHW or NHWC), the grey channel repeated `channels` times"
        )
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        """The Preprocessing a ``to_dict()`` output describes (one without ``layout``,
        written before layouts existed, is NCHW)."""
        return cls(**{k: d[k] for k in (*_FIELDS,) if k in d})

    @classmethod
    def for_input_shape(
        cls, shape: tuple[int, ...], layout: str = "NCHW", **settings
    ) -> Preprocessing:
        """The preprocessing whose ``input_shape`` is ``shape`` (batch-1, 4-D, in ``layout``),
        with ``settings`` (divisor, mean, std) for the rest.

        Raises:
            WorkbenchError: ``shape`` is not a square image of ``layout``.
        """
        if len(shape) != 4:
            raise WorkbenchError(
                f"input shape {tuple(shape)} is not an image batch (1, C, H, W) or (1, H, W, C)",
                "use a model that takes images",
            )
        size, channels = (shape[1], shape[3]) if layout == "NHWC" else (shape[2], shape[1])
        return cls(size=int(size), channels=int(channels), layout=layout, **settings)


_FIELDS = ("size", "channels", "divisor", "mean", "std", "layout")

# The split's row indices, checked against scikit-learn's own split by the tests.
_SPLIT_FILE = Path(__file__).with_name("digits_split.json")


def _digits_csv() -> Path | None:
    """scikit-learn's copy of the digits (what load_digits reads), found without importing
    scikit-learn (about 1.3 s of start-up the CLI would pay on every run)."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    csv = _digits_csv()
    if csv is not None:
        table = np.loadtxt(csv, delimiter=",")  # as load_digits reads it
        data, target = table[:, :-1], table[:, -1].astype(int)
        split = json.loads(_SPLIT_FILE.read_text())
        train, test = np.asarray(split["train"]), np.asarray(split["test"])
        x_train, x_test, y_train, y_test = data[train], data[test], target[train], target[test]
    else:  # a scikit-learn that keeps its data elsewhere: let it do the work
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
        )
    for a in (x_train, x_test, y_train, y_test):
        a.setflags(write=False)
    return x_train, x_test, y_train, y_test


@lru_cache(maxsize=1)
def _validation_mask() -> np.ndarray:
    """True at the training part's positions that form the validation part."""
    positions = json.loads(_SPLIT_FILE.read_text())["validation"]
    mask = np.zeros(len(_digits_split()[2]), dtype=bool)
    mask[np.asarray(positions, dtype=int)] = True
    mask.setflags(write=False)
    return mask


@dataclass(frozen=True)
class Task:
    """A labelled classification task with a fixed, documented train/test split."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    split_description: str
    # True: the training part leaves the validation images out (see ``fitting``).
    excludes_validation: bool = False

    def raw(self, part: Part) -> tuple[np.ndarray, np.ndarray]:
        """The raw images (N, 64) and integer labels (N,) of ``part``.

        "validation" is a fixed fifth of the training part; "train" is the whole training
        part, or the rest of it when ``excludes_validation``."""
        x_train, x_test, y_train, y_test = _digits_split()
        if part == "train":
            if self.excludes_validation:
                keep = ~_validation_mask()
                return x_train[keep], y_train[keep]
            return x_train, y_train
        if part == "validation":
            mask = _validation_mask()
            return x_train[mask], y_train[mask]
        if part == "test":
            return x_test, y_test
        raise WorkbenchError(f"unknown split {part!r}", "use 'train', 'validation' or 'test'")

    def fitting(self) -> Task:
        """This task with the validation images taken out of its training part: what
        fine-tuning, distillation and calibration may use when choices are then judged on
        the validation part."""
        return dataclasses.replace(self, excludes_validation=True)

    @property
    def identity(self) -> str:
        """The task as a cache key names it: its name, marked when the training part
        leaves the validation images out (a variant trained on fewer images differs)."""
        return self.name + ("-without-validation" if self.excludes_validation else "")

    def arrays(self, part: Part, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed inputs (N, C, S, S) float32 and labels (N,) int64 of ``part``."""
        x, y = self.raw(part)
        return preprocessing.apply(x), y.astype(np.int64)

    def check_calibration_count(self, n: int) -> None:
        """Raise WorkbenchError unless ``n`` images can be drawn from the training part."""
        available = len(self.raw("train")[0])
        if not 1 <= n <= available:
            raise WorkbenchError(
                f"calibration needs between 1 and {available} samples, got {n}",
                f"choose a sample count from 1 to {available} (the training part's size)",
            )

    def _calibration_indices(self, n: int, seed: int) -> np.ndarray:
        self.check_calibration_count(n)
        x, _ = self.raw("train")
        return np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))

    def calibration(self, preprocessing: Preprocessing, n: int, seed: int = 0) -> np.ndarray:
        """``n`` preprocessed images drawn without replacement from the training part only."""
        x, _ = self.raw("train")
        return preprocessing.apply(x[self._calibration_indices(n, seed)])

    def held_out(
        self, preprocessing: Preprocessing, n_calibration: int, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The training images (and labels) that ``calibration(..., n_calibration, seed)``
        does not draw: a held-out part of the training split, never the test split."""
        x, y = self.raw("train")
        keep = np.ones(len(x), dtype=bool)
        keep[self._calibration_indices(n_calibration, seed)] = False
        return preprocessing.apply(x[keep]), y[keep].astype(np.int64)

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "split": self.split_description,
        }
        if self.excludes_validation:
            d["training_part"] = "without the validation images"
        return d


DIGITS = Task(
    name="digits",
    num_classes=10,
    class_names=tuple(str(i) for i in range(10)),
    split_description=(
        "sklearn.model_selection.train_test_split(X, y, test_size=0.3, random_state=0, "
        "stratify=y) on sklearn.datasets.load_digits(); the test part (540 images) is "
        "used for accuracy, the training part (1257 images) for calibration and training; "
        "the recipe search decides on a stratified fifth of the training part (252 "
        "validation images) that its candidates do not train or calibrate on"
    ),
)

_TASKS = {DIGITS.name: DIGITS}


def get_task(name: str) -> Task:
    """The task called ``name``; raises WorkbenchError naming the known tasks."""
    try:
        return _TASKS[name]
    except KeyError:
        raise WorkbenchError(
            f"unknown task {name!r}", f"use one of: {', '.join(sorted(_TASKS))}"
        ) from None

"""The digits task loads without scikit-learn's import, yet is exactly its split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from workbench.data import DIGITS
from workbench.data.digits import _digits_split


def test_the_stored_split_is_scikit_learns_split():
    digits = load_digits()
    expected = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    for ours, theirs in zip(_digits_split(), expected, strict=True):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


def test_loading_the_task_does_not_import_scikit_learn():
    code = (
        "import sys; from workbench.data import DIGITS; x, y = DIGITS.raw('test'); "
        "print(len(y), 'sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["540", "False"]
    assert len(DIGITS.raw("train")[1]) == 1257


def test_the_stored_validation_part_is_scikit_learns_split_of_the_training_part():
    _, _, y_train, _ = _digits_split()
    _, expected = train_test_split(
        np.arange(len(y_train)), test_size=0.2, random_state=0, stratify=y_train
    )
    x_val, y_val = DIGITS.raw("validation")
    x_train, y_train = DIGITS.raw("train")
    np.testing.assert_array_equal(x_val, x_train[np.sort(expected)])
    np.testing.assert_array_equal(y_val, y_train[np.sort(expected)])
    assert len(y_val) == 252 and np.bincount(y_val).min() >= 24  # stratified


def test_the_fitting_task_leaves_the_validation_images_out_of_everything_it_trains_on():
    from workbench.data import Preprocessing

    fitting = DIGITS.fitting()
    x_train, _ = DIGITS.raw("train")
    x_fit, y_fit = fitting.raw("train")
    x_val, _ = fitting.raw("validation")
    assert len(y_fit) + len(x_val) == len(x_train) == 1257
    rows = {row.tobytes() for row in x_val}
    assert not any(row.tobytes() in rows for row in x_fit)  # disjoint (no duplicate digits)
    np.testing.assert_array_equal(fitting.raw("test")[0], DIGITS.raw("test")[0])
    prep = Preprocessing()
    val_inputs = {row.tobytes() for row in prep.apply(x_val)}
    # Calibration and the accuracy-aware quantization's held-out images draw from it too.
    for drawn in (fitting.calibration(prep, 128), fitting.held_out(prep, 128)[0]):
        assert not any(row.tobytes() in val_inputs for row in drawn)
    assert fitting.identity != DIGITS.identity == "digits"
    assert fitting.to_dict()["training_part"] == "without the validation images"

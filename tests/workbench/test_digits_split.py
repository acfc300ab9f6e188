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

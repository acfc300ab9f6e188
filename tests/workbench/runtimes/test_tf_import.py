"""TensorFlow is imported lazily, and one process can use TensorFlow and PyTorch in any order.

Each case runs in a fresh interpreter: a crash (segmentation fault) there is the
failure being tested, and the import order is only meaningful in a clean process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[3]

# Each step loads triton in its own way: the three entry points seen crashing.
_TORCH_TRITON_STEPS = """
import torch
torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
torch.export.export(torch.nn.Linear(2, 2), (torch.ones(1, 2),))
assert torch.compile(lambda x: x * 2 + 1)(torch.ones(3)).tolist() == [3.0, 3.0, 3.0]
"""

_TF_STEP = """
from workbench._tf import tensorflow
tf = tensorflow()
assert float(tf.reduce_sum(tf.ones(3))) == 3.0
"""


def _run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=_ROOT,
    )


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-3000:]}"


@pytest.mark.slow
def test_tensorflow_first_then_torch_export_adam_and_compile():
    _ok(_run(_TF_STEP + _TORCH_TRITON_STEPS + "print('done')"))


@pytest.mark.slow
def test_torch_first_then_tensorflow_then_triton_users():
    # torch imported (triton not yet loaded), TensorFlow next, then the triton users
    # (torch.compile left out: after the accessor this is the case above, and it is slow).
    steps = _TORCH_TRITON_STEPS.rsplit("assert torch.compile", 1)[0]
    _ok(_run("import torch\n" + _TF_STEP + steps))


@pytest.mark.slow
def test_torch_export_before_tensorflow():
    # torch.compile is left out here: it is the slowest step and adds nothing in this order.
    steps = _TORCH_TRITON_STEPS.rsplit("assert torch.compile", 1)[0]
    _ok(_run(steps + _TF_STEP))


@pytest.mark.slow
def test_plain_tensorflow_import_first_crashes_which_is_why_the_accessor_exists():
    # The hazard itself: without the accessor, TensorFlow first then torch.optim.Adam
    # kills the process. If this starts passing, a new TensorFlow or triton fixed it
    # and load_triton_first may be dropped.
    proc = _run(
        """
        import tensorflow
        import torch
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
        """
    )
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.slow
def test_tensorflow_imported_elsewhere_before_triton_is_refused_with_a_clear_error():
    proc = _run(
        """
        import tensorflow
        from workbench._tf import tensorflow as get_tf
        from workbench.errors import WorkbenchError
        try:
            get_tf()
        except WorkbenchError as e:
            print("ERROR", e)
        """
    )
    _ok(proc)
    assert "ERROR TensorFlow was imported before PyTorch's triton" in proc.stdout


def test_import_workbench_and_cli_help_do_not_import_tensorflow():
    proc = _run(
        """
        import sys
        import workbench
        import workbench._tf
        from workbench import cli
        try:
            cli.main(["--help"])
        except SystemExit:
            pass
        heavy = [m for m in ("tensorflow", "keras", "ai_edge_litert", "tflite_micro", "tf2onnx")
                 if m in sys.modules]
        print("HEAVY", heavy)
        """
    )
    _ok(proc)
    assert "HEAVY []" in proc.stdout, proc.stdout

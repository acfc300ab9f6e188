"""Start-up cost: the CLI and the pipeline import only what every run needs."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_the_pipeline_load_no_library_a_cached_result_does_not_need():
    # torch comes with a PyTorch model, onnx with a build, scikit-learn never (the digits
    # are read from its data file): none is loaded by the CLI and pipeline themselves.
    code = (
        "import sys, workbench.cli, workbench.pipeline, workbench.study; "
        "print(sorted(m for m in ('torch', 'onnx', 'sklearn', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

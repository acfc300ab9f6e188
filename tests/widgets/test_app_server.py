"""The app server's defaults: kernels of pages gone without a word are reclaimed soon."""

from __future__ import annotations

from widgets.app_server import IDLE_KERNEL_SECONDS, server_argv


def test_a_vanished_page_s_kernel_is_culled_within_two_minutes_but_never_a_connected_one():
    argv = dict(a.split("=", 1) for a in server_argv(["notebooks/app.ipynb"])[1:])
    # Was 600 s: a closed browser held ~1.2 GB for 10 minutes.
    assert int(argv["--MappingKernelManager.cull_idle_timeout"]) == IDLE_KERNEL_SECONDS <= 120
    assert int(argv["--MappingKernelManager.cull_interval"]) <= 30
    assert argv["--MappingKernelManager.cull_connected"] == "False"


def test_the_command_line_overrides_the_defaults():
    argv = server_argv(["app.ipynb", "--MappingKernelManager.cull_idle_timeout=5"])
    assert [a for a in argv if "cull_idle_timeout" in a] == [
        "--MappingKernelManager.cull_idle_timeout=5"
    ]

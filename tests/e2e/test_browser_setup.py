"""Without Chromium the set-up says, in one line, what to run; it never skips silently."""

from __future__ import annotations

import os
import subprocess

from headless import INSTALL_COMMAND, REPO, chromium_missing


def test_a_missing_browser_is_one_line_naming_the_install_command(tmp_path):
    line = chromium_missing(str(tmp_path / "chromium"))
    assert INSTALL_COMMAND in line and "\n" not in line
    assert chromium_missing("/bin/sh") == ""


def test_the_set_up_script_stops_with_the_command_when_it_cannot_install(tmp_path):
    # Run the script on a copy that looks for a browser that is not there, with
    # installing forbidden (as for a user who is not root).
    script = (REPO / ".ci" / "install-browser").read_text()
    assert "CHROMIUM=/usr/bin/chromium" in script
    copy = tmp_path / "install-browser"
    copy.write_text(script.replace("CHROMIUM=/usr/bin/chromium", f"CHROMIUM={tmp_path}/none"))
    proc = subprocess.run(
        ["bash", str(copy)],
        capture_output=True,
        text=True,
        env={**os.environ, "WORKBENCH_NO_APT": "1"},
        timeout=30,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "apt-get install -y chromium" in proc.stderr


def test_make_test_runs_the_browser_set_up_before_pytest():
    out = subprocess.run(
        ["make", "-n", "test", "STAMP=/dev/null"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    lines = out.splitlines()
    setup = next(i for i, line in enumerate(lines) if "install-browser" in line)
    tests = next(i for i, line in enumerate(lines) if "pytest" in line)
    assert setup < tests

"""What several viewers of one app server cost: real pages in headless Chromium.

Starts the app server (``python -m widgets.app_server notebooks/app.ipynb``, as
``make app`` does) on 127.0.0.1, opens ``--viewers`` pages at once (one browser
context each, so each page gets its own kernel, as separate people would), waits
until every page shows its baseline's figures, and then reads every kernel's memory
with psutil:

* RSS: resident memory, counting shared libraries (torch's ~0.4 GB) in full in
  every kernel, so a sum of RSS overstates what several kernels take;
* PSS: each shared page divided among the processes sharing it; the sum of PSS is
  what the kernels take together;
* USS: memory only that kernel holds, what one more viewer adds.

With ``--switch NAME`` every page then picks sample NAME (e.g. digits-resnet18), and
the memory is read again once each shows that model's baseline. The first page
measures each baseline; the others find it in the shared cache, as on a real server.

    python benchmarks/viewers.py [--viewers 4] [--switch digits-resnet18] [--json FILE]

Bounded: every wait has a timeout, the server and browser are stopped at the end.
Needs Debian's /usr/bin/chromium. Exits 1 if a page did not show its figures in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
CARD = ".edge-workbench-card"
BUSY = ".edge-workbench-busy"
PAGE_TIMEOUT_MS = 300_000  # a page on a loaded 2-core machine: kernel start, imports, baseline
MB = 1e6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(tmp: Path):
    """The app server on a free localhost port; yields (url, process)."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "widgets.app_server",
        "notebooks/app.ipynb",
        f"--port={port}",
        "--no-browser",
        "--Voila.ip=127.0.0.1",
    ]
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "voila/static/voila.js", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"the app server did not start: see {tmp / 'server.log'}"
                    ) from None
                time.sleep(0.5)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def kernels(server: psutil.Process) -> list[psutil.Process]:
    """The kernel processes the server started (one per open page)."""
    found = []
    for p in server.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "ipykernel" in " ".join(p.cmdline()):
                found.append(p)
    return found


def memory(server: psutil.Process) -> dict:
    """RSS, PSS and USS of every kernel, and of the server itself, in MB."""
    rows = []
    for k in kernels(server):
        with contextlib.suppress(psutil.Error):
            m = k.memory_full_info()
            rows.append({"pid": k.pid, "rss": m.rss / MB, "pss": m.pss / MB, "uss": m.uss / MB})
    s = server.memory_full_info()
    return {
        "kernels": rows,
        "server": {"rss": s.rss / MB, "pss": s.pss / MB, "uss": s.uss / MB},
        "sum": {key: sum(r[key] for r in rows) for key in ("rss", "pss", "uss")},
    }


def wait_for_baseline(page, model: str | None = None) -> None:
    page.wait_for_function(
        """([card, busy, model]) => {
            const c = document.querySelector(card);
            const b = c && c.querySelector('b');
            // The picker's status names the model once the kernel has loaded it (the
            // <select> shows the choice before the kernel has even seen it).
            const picked = !model || document.body.innerText.includes('loaded ' + model + ' (');
            return b && !document.querySelector(busy) && b.innerText.trim() === 'baseline'
                && picked;
        }""",
        arg=[CARD, BUSY, model],
        timeout=PAGE_TIMEOUT_MS,
    )


def report(title: str, figures: dict, viewers: int) -> None:
    print(f"\n{title}")
    print(f"{'kernel':>8} {'RSS MB':>8} {'PSS MB':>8} {'USS MB':>8}")
    for r in figures["kernels"]:
        print(f"{r['pid']:>8} {r['rss']:8.0f} {r['pss']:8.0f} {r['uss']:8.0f}")
    total = figures["sum"]
    print(f"{'sum':>8} {total['rss']:8.0f} {total['pss']:8.0f} {total['uss']:8.0f}")
    s = figures["server"]
    print(f"{'server':>8} {s['rss']:8.0f} {s['pss']:8.0f} {s['uss']:8.0f}")
    per_viewer = total["pss"] / max(viewers, 1)
    print(f"per viewer (sum of PSS / {viewers}): {per_viewer:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=4, help="pages open at once")
    parser.add_argument("--switch", help="then pick this sample on every page")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    results: dict = {"viewers": args.viewers, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, app_server(Path(tmp)) as (url, proc):
        server = psutil.Process(proc.pid)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                pages = []
                started = time.monotonic()
                # The first page measures the baseline into the cache; the others open
                # together, as viewers arriving at a shared app.
                for i in range(args.viewers):
                    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                    page.goto(url, timeout=PAGE_TIMEOUT_MS)
                    if i == 0:
                        wait_for_baseline(page)
                    pages.append(page)
                for page in pages:
                    wait_for_baseline(page)
                results["open_seconds"] = time.monotonic() - started
                time.sleep(2)  # let allocations settle
                results["at_load"] = memory(server)
                report(
                    f"{args.viewers} pages open, each showing digits-cnn's baseline "
                    f"({results['open_seconds']:.0f} s to open them all)",
                    results["at_load"],
                    args.viewers,
                )
                if args.switch:
                    for page in pages:
                        page.locator(
                            '.widget-dropdown:has(label:text-is("sample")) select'
                        ).select_option(args.switch)
                        wait_for_baseline(page, args.switch)
                    time.sleep(2)
                    results["after_switch"] = memory(server)
                    report(
                        f"every page switched to {args.switch}, showing its baseline",
                        results["after_switch"],
                        args.viewers,
                    )
            finally:
                browser.close()
    total_gb = psutil.virtual_memory().total / 1e9
    print(f"\nthis machine: {os.cpu_count()} CPUs, {total_gb:.1f} GB memory")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

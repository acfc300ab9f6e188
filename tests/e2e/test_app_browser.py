"""The Voila app in a real headless Chromium: slide, watch it measure, export, stay offline.

The server is started with the exact command ``make app`` runs (read from
``make -n app``), on a free localhost port, with a temporary ``WORKBENCH_CACHE_DIR``.
The browser is Debian's Chromium (Playwright's own download does not work offline).

What a user does and sees: the app renders; the card shows the baseline's figures;
pruning is switched to structured and the sparsity slider is moved one step with the
keyboard; the card's figures change and one new point lands on the chart (counted from
the chart's SVG marks); Export writes manifest.json and model.onnx to disk; the graph
tab draws the artifact in Netron. Every request the page, its frames and its workers
make stays on this machine. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest
from headless import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LOCAL_HOSTS, REPO

from widgets.app_server import IDLE_KERNEL_SECONDS

SERVER_START_TIMEOUT = 60  # s until the server answers HTTP
MEASURE_TIMEOUT_MS = 60_000  # one new variant: export, quantize/prune, measure
# Voila serves the page once the notebook has run (torch imported, Vega bundled, the
# app built): on a loaded 2-core machine that took more than 60 s (1 run in 15).
PAGE_TIMEOUT_MS = 150_000

# A hang guard, not a speed limit: a loaded run of the slider test took up to ~180 s.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(360)]

# Selectors. The pruning panel's method buttons are the ones offering "none" (the sweep
# panel's do not); "sparsity" labels the one slider.
PRUNING_METHOD = (
    '.widget-toggle-buttons:has(label:text-is("pruning")):has(button[data-value="none"])'
)
SPARSITY_HANDLE = '.widget-slider:has(label:text-is("sparsity")) .noUi-handle'
SPARSITY_READOUT = '.widget-slider:has(label:text-is("sparsity")) .widget-readout'
CARD = ".edge-workbench-card"
NETRON_IFRAME = "iframe[title^='Netron graph']"
BUSY = ".edge-workbench-busy"
# The chart's variant points: Vega's SVG renderer labels each mark from its encodings,
# and only the points layer encodes the "variant" (family) colour.
VARIANT_POINTS = 'svg path[aria-roledescription="point"][aria-label*="variant: "]'
DROPDOWN = '.widget-dropdown:has(label:text-is("{}")) select'
DEVICE_LINE = ".edge-workbench-device > b"
# The chosen device's budget line (red, dashed 6,3) and the dashed ring (2,2) around a
# variant that does not fit.
BUDGET_RULE = 'svg.marks line[stroke="#b00020"][stroke-dasharray="6,3"]'
UNFIT_RING = 'svg.marks path[aria-roledescription="point"][stroke-dasharray="2,2"]'
BUDGET_LABEL = "svg.marks text"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app_command(port: int) -> list[str]:
    """The command ``make app`` would run, for ``port``, listening on localhost only."""
    out = subprocess.run(
        ["make", "-s", "-n", "app", f"PORT={port}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    # Earlier lines, if any, are the install steps (skipped: the venv is the one running us).
    command = shlex.split([line for line in out.splitlines() if line.strip()][-1])
    # Keep make's flags; only narrow the listening address to this machine.
    return [a for a in command if not a.startswith("--Voila.ip=")] + ["--Voila.ip=127.0.0.1"]


@contextlib.contextmanager
def _serving(tmp, extra_args: tuple[str, ...] = ()):
    """Run the ``make app`` command (plus ``extra_args``); yields (base URL, log path, process)."""
    port = _free_port()
    command = make_app_command(port) + list(extra_args)
    env = {
        **os.environ,
        "WORKBENCH_CACHE_DIR": str(tmp / "cache"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        # A process group of its own, signalled as a whole at the end; on SIGTERM the
        # server shuts down the kernels it started (they run in sessions of their own).
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-3000:]
                pytest.fail(f"`{shlex.join(command)}` exited with {proc.returncode}:\n{tail}")
            try:
                # A static file: fetching "/" would make Voila start a kernel and run the app.
                with urllib.request.urlopen(url + "voila/static/voila.js", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = log_path.read_text()[-3000:]
                pytest.fail(f"the app did not answer within {SERVER_START_TIMEOUT} s:\n{tail}")
            time.sleep(0.5)
        yield url, log_path, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """A running app server: yields (base URL, log path, process); stopped and reaped afterwards."""
    with _serving(tmp_path_factory.mktemp("app")) as served:
        yield served


def _card_figures(page) -> dict[str, str]:
    """The card's rows as {label: value shown}."""
    return page.eval_on_selector_all(
        f"{CARD} table tr",
        """rows => Object.fromEntries(
            rows.map(r => [r.cells[0].innerText.trim(), r.cells[1].innerText.trim()]))""",
    )


def _point_labels(page) -> list[str]:
    return page.eval_on_selector_all(
        VARIANT_POINTS, "ps => ps.map(p => p.getAttribute('aria-label'))"
    )


def _as_bytes(frame: str | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.encode()


def _wait_for_variant(page, recipe: str) -> None:
    """Wait until the card shows ``recipe``'s measured figures (not the busy state)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([card, busy, recipe]) => {
                const c = document.querySelector(card);
                return c && !document.querySelector(busy) && c.querySelector('b')
                    && c.querySelector('b').innerText.trim() === recipe;
            }""",
            arg=[CARD, BUSY, recipe],
            timeout=MEASURE_TIMEOUT_MS,
        )
    except PlaywrightTimeout:
        # What the page showed instead: a stale card, an error, or still measuring.
        shown = page.evaluate(
            "card => (document.querySelector(card) || {innerText: 'no card'}).innerText", CARD
        )
        pytest.fail(f"the card did not show {recipe} in time; it showed:\n{shown[:1500]}")


def _wait_for_point(page, recipe: str) -> None:
    page.wait_for_function(
        """([sel, recipe]) => [...document.querySelectorAll(sel)].some(
            p => (p.getAttribute('aria-label') || '').includes('recipe: ' + recipe + ';'))""",
        arg=[VARIANT_POINTS, recipe],
        timeout=MEASURE_TIMEOUT_MS,
    )


def _kernels(server: subprocess.Popen) -> list:
    """The kernel processes the app server started (each page view gets one)."""
    import psutil

    running = []
    for p in psutil.Process(server.pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()):
                running.append(p)
        except psutil.Error:  # it ended while we looked
            pass
    return running


def test_app_slider_chart_export_offline(app_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, log_path, server = app_server
    ARTIFACTS.mkdir(exist_ok=True)
    export_dir = tmp_path / "exported"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1900})
            # Context-wide: requests of the page, its iframes (Netron) and its workers.
            context.on("request", lambda r: requests.append(r.url))
            context.on("websocket", lambda ws: requests.append(ws.url))
            page = context.new_page()
            # The page tells the kernel it rendered the app (widgets.frontend_sync), so
            # an update sent while it loaded is sent again.
            rendered: list[bytes] = []
            page.on(
                "websocket",
                lambda ws: ws.on(
                    "framesent",
                    lambda f: rendered.append(f) if b'"rendered"' in _as_bytes(f) else None,
                ),
            )
            page.goto(url, timeout=PAGE_TIMEOUT_MS)

            # The app renders and measures the baseline by itself.
            _wait_for_variant(page, "baseline")
            # The report comes when the probe's script has loaded, which may be after the
            # card's first figures on a cold machine.
            deadline = time.monotonic() + 30
            while not rendered and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert rendered, "the page never reported that it rendered the app"
            _wait_for_point(page, "baseline")
            baseline = _card_figures(page)
            assert re.fullmatch(r"\d+\.\d+%", baseline["accuracy"]), baseline
            assert baseline["latency p50"].endswith(" ms"), baseline
            page.screenshot(path=str(ARTIFACTS / "app-1-baseline.png"), full_page=True)

            # The device selector: host first; a Cortex-M4 with peak memory on x draws its
            # budget line, the baseline greyed and ringed, and the card says it does not fit.
            assert "fits host: " in page.locator(DEVICE_LINE).inner_text()
            page.locator(DROPDOWN.format("device")).select_option("cortex-m4")
            page.locator(DROPDOWN.format("x axis")).select_option(label="peak memory")
            page.wait_for_function(
                """([line, rule]) => (document.querySelector(line) || {}).innerText
                    ?.startsWith('does not fit cortex-m4') && document.querySelector(rule)""",
                arg=[DEVICE_LINE, BUDGET_RULE],
                timeout=30_000,
            )
            assert page.locator(UNFIT_RING).count() == 1  # the baseline, ringed
            label = page.locator(BUDGET_LABEL, has_text="cortex-m4 memory budget")
            assert label.count() == 1 and label.is_visible()
            page.screenshot(path=str(ARTIFACTS / "app-1b-device-cortex-m4.png"), full_page=True)
            page.locator(DROPDOWN.format("x axis")).select_option(label="latency p50")
            page.locator(DROPDOWN.format("device")).select_option("host")
            page.wait_for_function(
                "line => (document.querySelector(line) || {}).innerText?.startsWith('fits host')",
                arg=DEVICE_LINE,
                timeout=30_000,
            )
            page.wait_for_selector(BUDGET_RULE, state="detached", timeout=30_000)

            # Structured pruning at the slider's starting sparsity (50%).
            page.locator(PRUNING_METHOD).locator('button[data-value="structured"]').click()
            _wait_for_variant(page, "prune-structured-0.5")
            _wait_for_point(page, "prune-structured-0.5")
            before = _card_figures(page)
            points_before = _point_labels(page)

            # One keyboard step on the slider's handle: 50% -> 55%.
            handle = page.locator(SPARSITY_HANDLE)
            handle.focus()
            handle.press("ArrowRight")
            _wait_for_variant(page, "prune-structured-0.55")
            _wait_for_point(page, "prune-structured-0.55")
            after = _card_figures(page)
            points_after = _point_labels(page)
            page.screenshot(path=str(ARTIFACTS / "app-2-after-slider.png"), full_page=True)

            assert page.locator(SPARSITY_READOUT).inner_text().strip() == "55%"
            changed = {k for k in after if after[k] != before.get(k)}
            # Removing more channels must remove weights and operations.
            assert {"params", "MACs"} <= changed, (before, after)
            assert len(points_after) == len(points_before) + 1, (points_before, points_after)
            assert any("recipe: prune-structured-0.55;" in label for label in points_after)
            assert not page.get_by_text("JavaScript Error").count(), "the chart failed to draw"

            # Export the current variant to a folder of our choosing.
            page.locator(".lm-TabBar-tab", has_text="Export").click()
            page.locator('.widget-text:has(label:text-is("folder")) input').fill(str(export_dir))
            page.locator('.widget-text:has(label:text-is("folder")) input').press("Enter")
            page.locator('button.widget-button[title="Export"]').click()
            link = page.locator("a.edge-workbench-download")
            link.wait_for(timeout=MEASURE_TIMEOUT_MS)
            page.screenshot(path=str(ARTIFACTS / "app-3-exported.png"), full_page=True)
            # A real download from this server (any size), not a data: link.
            href = link.get_attribute("href")
            assert re.fullmatch(r"/edge-workbench/download/[0-9a-f]{32}/exported\.zip", href), href
            assert link.evaluate("a => getComputedStyle(a).textDecorationLine") == "underline"
            with page.expect_download(timeout=30_000) as info:
                link.click()
            download = info.value
            assert download.suggested_filename == "exported.zip"
            downloaded = tmp_path / "downloaded.zip"
            download.save_as(downloaded)
            with urllib.request.urlopen(url + href.lstrip("/"), timeout=30) as response:
                disposition = response.headers["Content-Disposition"]
                assert disposition == 'attachment; filename="exported.zip"', disposition
                assert response.headers["Content-Type"] == "application/zip"
            # Nothing but the zip the export made: no other name, token or path.
            token = href.split("/")[3]
            for bad in (
                f"edge-workbench/download/{token}/other.zip",
                f"edge-workbench/download/{token}/..%2F..%2Fserver.log",
                f"edge-workbench/download/{'0' * 32}/exported.zip",
                f"edge-workbench/download/{token}/..%2F{token}.json",
                "edge-workbench/download/..%2F..%2Fcache/x.zip",
            ):
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(url + bad, timeout=10)
                assert refused.value.code == 404, bad

            # The current artifact's graph, drawn by Netron from this server.
            page.locator(".lm-TabBar-tab", has_text="Netron").click()
            iframe = page.locator(NETRON_IFRAME)
            iframe.wait_for(timeout=30_000)
            frame = iframe.element_handle().content_frame()
            frame.wait_for_selector("svg#canvas g.graph-node", timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "app-4-graph.png"), full_page=True)

            # With the graph open, the keyboard stays on the slider while the graph
            # follows the variant: two steps, two new variants.
            shown = iframe.get_attribute("src")
            handle.focus()
            handle.press("ArrowRight")
            _wait_for_variant(page, "prune-structured-0.6")
            # The new variant's graph comes in a new iframe, a moment after the card:
            # wait for that one (the old frame is detached when it is replaced).
            page.wait_for_function(
                """([sel, shown]) => {
                    const f = document.querySelector(sel);
                    return f && f.getAttribute('src') !== shown;
                }""",
                arg=[NETRON_IFRAME, shown],
                timeout=30_000,
            )
            frame = iframe.element_handle().content_frame()
            frame.wait_for_selector("svg#canvas g.graph-node", timeout=30_000)
            page.wait_for_timeout(1000)  # Netron has drawn; give any focus grab its chance
            active = page.evaluate("document.activeElement && document.activeElement.tagName")
            assert active != "IFRAME", "the graph view took the keyboard focus"
            handle.press("ArrowRight")
            _wait_for_variant(page, "prune-structured-0.65")
            assert _kernels(server), "no kernel runs the open page"
            # Closing the page asks the server to shut its kernel down.
            page.close(run_before_unload=True)
            deadline = time.monotonic() + 30
            while _kernels(server) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not _kernels(server), "the closed page's kernel is still running"
        finally:
            browser.close()

    import zipfile

    with zipfile.ZipFile(downloaded) as zf:
        assert zf.read("exported/model.onnx") == (export_dir / "model.onnx").read_bytes()
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["recipe_name"] == "prune-structured-0.55"  # exported before the last steps
    model_onnx = export_dir / "model.onnx"
    assert model_onnx.stat().st_size == manifest["artifact"]["size_bytes"]

    offsite = sorted(
        {
            u
            for u in requests
            if urlparse(u).scheme not in ("data", "blob")
            and urlparse(u).hostname not in LOCAL_HOSTS
        }
    )
    assert not offsite, f"the app made requests off this machine: {offsite}"
    assert len(requests) > 10  # the recorder saw the page's own requests
    log = log_path.read_text()
    assert "Traceback" not in log and " 403 " not in log, log[-3000:]
    grace = f"Culling kernels with idle durations > {IDLE_KERNEL_SECONDS} seconds"
    assert grace in log, log[-3000:]


SLIDER = '.widget-slider:has(label:text-is("sparsity"))'
CHART = ".vega-embed svg.marks"


def _in_viewport(page, selector: str) -> dict:
    """The element's box, and whether all of it is inside the viewport."""
    return page.eval_on_selector(
        selector,
        """e => { const r = e.getBoundingClientRect();
            return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                    inside: r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight
                            && r.right <= innerWidth}; }""",
    )


def test_a_laptop_screen_shows_the_slider_and_the_chart_together(app_server):
    """At 1280x800 the sparsity slider and the whole chart are in view without scrolling;
    the chart's menu exports images but has no "Open in Vega Editor"; the Variants tab
    lists the baseline."""
    from playwright.sync_api import sync_playwright

    url, _log, _server = app_server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(url, timeout=PAGE_TIMEOUT_MS)
            _wait_for_variant(page, "baseline")
            _wait_for_point(page, "baseline")
            page.screenshot(path=str(ARTIFACTS / "app-1280x800.png"))
            assert page.evaluate("scrollY") == 0
            slider, chart = _in_viewport(page, SLIDER), _in_viewport(page, CHART)
            assert slider["inside"] and chart["inside"], (slider, chart)
            assert chart["bottom"] - chart["top"] >= 300  # a large chart, not a thumbnail
            # vega-embed's menu: PNG/SVG made in the page, nothing sent to a public editor.
            actions = page.eval_on_selector_all(
                ".vega-embed .vega-actions a", "as => as.map(a => a.textContent.trim())"
            )
            assert "Save as SVG" in actions and "Save as PNG" in actions, actions
            assert not [a for a in actions if "Editor" in a or "View" in a], actions
            assert not page.locator('a[href*="vega.github.io"]').count()
            page.locator(".lm-TabBar-tab", has_text="Variants").click()
            table = page.locator("table.edge-workbench-variants")
            table.wait_for(timeout=10_000)
            assert "baseline" in table.inner_text()
            assert page.locator("a.edge-workbench-csv").count() == 1

            # Another model: the old one's points and figures go at once, and its
            # baseline is what is measured (no recipe carried over).
            page.locator(PRUNING_METHOD).locator('button[data-value="unstructured"]').click()
            page.wait_for_function(
                "sel => document.querySelector(sel).innerText.includes('unstructured')",
                arg=CARD,
                timeout=MEASURE_TIMEOUT_MS,
            )
            page.locator('.widget-dropdown:has(label:text-is("sample")) select').select_option(
                "digits-mobilenetv2"
            )
            page.wait_for_function(
                """([card, points]) => {
                    const c = document.querySelector(card);
                    return c && c.innerText.includes("digits-mobilenetv2's baseline")
                        && !c.querySelector('table')
                        && document.querySelectorAll(points).length === 0;
                }""",
                arg=[CARD, VARIANT_POINTS],
                timeout=30_000,
            )
            selected = page.locator(PRUNING_METHOD).locator("button.mod-active")
            assert selected.get_attribute("data-value") == "none"
            # The table holds the new model's variants only (its baseline may be in already).
            variants = page.locator(".edge-workbench-variants, .widget-html:has-text('No variant')")
            assert "prune-unstructured" not in variants.first.inner_text()
            page.screenshot(path=str(ARTIFACTS / "app-switched-model.png"))
        finally:
            browser.close()


def test_a_killed_browser_leaves_no_kernel(tmp_path_factory):
    """A page gone without beforeunload (its browser killed) loses its kernel after the
    grace: here 5 s, for the test; the app's default is IDLE_KERNEL_SECONDS."""
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("killed")
    grace = (
        "--MappingKernelManager.cull_idle_timeout=5",
        "--MappingKernelManager.cull_interval=1",
    )
    with _serving(tmp, grace) as (url, log_path, server):
        debug_port = _free_port()
        # Our own Chromium process group, so it can be killed outright: no unload event,
        # no shutdown beacon, only the connection dropping.
        chromium = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                f"--remote-debugging-port={debug_port}",
                f"--user-data-dir={tmp / 'profile'}",
                *CHROMIUM_ARGS,
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            with sync_playwright() as p:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{debug_port}")
                        break
                    except Exception:  # noqa: BLE001 - not listening yet
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                page = browser.contexts[0].new_page()
                page.goto(url, timeout=PAGE_TIMEOUT_MS)
                _wait_for_variant(page, "baseline")
                assert len(_kernels(server)) == 1
                os.killpg(chromium.pid, signal.SIGKILL)
                chromium.wait(timeout=10)
            deadline = time.monotonic() + 30
            while _kernels(server) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not _kernels(server), "the killed page's kernel is still running"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(chromium.pid, signal.SIGKILL)
            chromium.wait(timeout=10)
        log = log_path.read_text()
        assert "Culling 'idle' kernel" in log and "with 0 connections" in log, log[-3000:]

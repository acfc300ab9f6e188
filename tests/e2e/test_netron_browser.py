"""NetronView in a real browser: the graph renders, and nothing leaves localhost.

Starts the real servers as subprocesses on free localhost ports (the Voila app
launcher that `make app` runs, and JupyterLab with the graph-view extension and a
login token), opens them in headless Chromium and records every request of the page,
its frames and workers. Each test takes ~15 s here and is cut off at 90 s.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from headless import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, LOCAL_HOSTS, REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(90)]

START_TIMEOUT = 30.0  # s for a server to answer
# Far enough past Netron's build date that, unpatched, it would block with
# "Please update to the newest version." (it nags after 180 days).
FUTURE = dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)


def _tiny_onnx(path: Path) -> Path:
    """A 4-node CNN (Conv, Relu, Reshape, Gemm) small enough to build in milliseconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.zeros(4, np.float32), "conv_b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((10, 144)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT/
    log: Path
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def _wait_until_up(server: Server, probe: str, deadline: float) -> None:
    """Poll ``probe`` until the server answers (any HTTP status) or fail with its log."""
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            urllib.request.urlopen(server.url + probe, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: a 403/404 is still a running server
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"server did not answer within {START_TIMEOUT:.0f} s:\n{server.log_tail()}")


def _start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, port: int) -> Server:
    full_env = {**os.environ, **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the kernels it starts go with it
        )
    return Server(proc=proc, url=f"http://127.0.0.1:{port}/", log=log, env=env)


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=5)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with tiny.onnx and view.ipynb, a notebook showing NetronView of it."""
    import nbformat

    _tiny_onnx(tmp_path / "tiny.onnx")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from widgets.netron_view import NetronView\n"
            f"NetronView({str(tmp_path / 'tiny.onnx')!r}, height=520)"
        )
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "view.ipynb")
    return tmp_path


def _isolated_env(workdir: Path) -> dict[str, str]:
    return {
        "EDGE_WORKBENCH_NETRON_REGISTRY": str(workdir / "registry"),
        "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }


@pytest.fixture
def voila_app(workdir: Path) -> Iterator[Server]:
    """``python -m widgets.app_server`` on view.ipynb (what ``make app`` runs)."""
    port = _free_port()
    server = _start(
        [
            sys.executable,
            "-m",
            "widgets.app_server",
            "view.ipynb",
            f"--port={port}",
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0",
        ],
        workdir,
        _isolated_env(workdir),
        workdir / "voila.log",
        port,
    )
    try:
        _wait_until_up(server, "edge-workbench/netron/index.html", time.monotonic() + START_TIMEOUT)
        yield server
    finally:
        _stop(server)


@pytest.fixture
def lab_server(workdir: Path) -> Iterator[Server]:
    """JupyterLab with the graph-view extension enabled by its config file, and a token."""
    port = _free_port()
    token = "edge-workbench-test-" + os.urandom(8).hex()
    env = {
        **_isolated_env(workdir),
        "JUPYTER_CONFIG_DIR": str(workdir / "config"),
        # The config file the install puts in <venv>/etc/jupyter enables the
        # extension; use the repository's copy so this tests that very file.
        "JUPYTER_CONFIG_PATH": str(REPO / "jupyter-config"),
    }
    server = _start(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            f"--port={port}",
            "--ip=127.0.0.1",
            "--no-browser",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={workdir}",
            f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
        ],
        workdir,
        env,
        workdir / "jupyterlab.log",
        port,
    )
    server.token = token
    try:
        _wait_until_up(server, "api/status", time.monotonic() + START_TIMEOUT)
        yield server
    finally:
        _stop(server)


@dataclass
class Recorded:
    urls: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        return [
            u
            for u in self.urls
            if u.startswith(("http:", "https:", "ws:", "wss:"))
            and urlsplit(u).hostname not in LOCAL_HOSTS
        ]


def _browse(url: str, screenshot: Path, recorded: Recorded, lab: bool = False) -> dict:
    """Open ``url``, wait for Netron's graph in the widget's iframe, return what it shows.

    With ``lab``, ``url`` is JupyterLab's view of the notebook, whose cell is run
    first (Voila runs it by itself); the clock is then left alone, since a clock
    years ahead expires JupyterLab's login cookie.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            # Every request of the page, its frames and workers passes here: it is
            # recorded, and one not for this machine is refused, never sent.
            def route(r) -> None:
                recorded.urls.append(r.request.url)
                if urlsplit(r.request.url).hostname in LOCAL_HOSTS or r.request.url.startswith(
                    ("data:", "blob:")
                ):
                    r.continue_()
                else:
                    r.abort()

            context.route("**/*", route)
            context.on("request", lambda req: recorded.urls.append(req.url))
            page = context.new_page()
            if not lab:
                page.clock.set_system_time(FUTURE)
            # What year each document believes it is, before its own scripts run.
            page.add_init_script(
                "document.addEventListener('DOMContentLoaded', () => "
                "document.documentElement.setAttribute('data-test-year', "
                "new Date().getFullYear()));"
            )
            page.goto(url, wait_until="domcontentloaded", timeout=30_000)
            if lab:
                _run_first_cell(page)
            iframe = page.locator("iframe[title^='Netron graph']")
            try:
                iframe.wait_for(timeout=30_000)
            except PlaywrightTimeout:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(screenshot))
                raise
            frame = iframe.element_handle().content_frame()
            try:
                frame.wait_for_selector("svg#canvas g.graph-node", timeout=20_000)
            except PlaywrightTimeout:
                pass  # reported below, after the requests (a blocking banner is likelier)
            page.wait_for_timeout(1000)  # let any late request (telemetry, nag) show up
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot))
            # Netron disables window.eval, which Playwright's evaluate and most
            # locator reads use: read the frame's serialized DOM instead.
            html = frame.content()
            body = re.search(r"<body[^>]*>", html)
            message = re.search(r'id="message-text"[^>]*>([^<]*)<', html)
            year = re.search(r'data-test-year="(\d+)"', html)
            seen = {
                "texts": re.findall(r"<text[^>]*>([^<]*)</text>", html),
                "nodes": len(re.findall(r'<g id="node-name-[^"]*" class="node graph-node"', html)),
                "bodyClass": re.search(r'class="([^"]*)"', body.group(0)).group(1) if body else "",
                "message": message.group(1) if message else "",
                "year": int(year.group(1)) if year else 0,
                "title": frame.title(),
            }
            seen["cookies"] = [c["name"] for c in context.cookies()]
            seen["frame_url"] = frame.url
            return seen
        finally:
            browser.close()


def _run_first_cell(page) -> None:
    """Run the notebook's first cell in JupyterLab once its kernel is connected."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    editor.wait_for(timeout=30_000)
    # JupyterLab drops a run requested before the kernel connection is up, and
    # its toolbar can say "idle" a moment before that: retry until it runs.
    for _ in range(3):
        page.get_by_text("| Idle").first.wait_for(timeout=30_000)
        editor.click()
        page.keyboard.press("Shift+Enter")
        try:
            # "[*]" running or "[1]" done: either way the kernel took it.
            page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]")).first.wait_for(
                timeout=10_000
            )
            return
        except PlaywrightTimeout:
            pass
    raise AssertionError("JupyterLab never ran the notebook's cell")


def _assert_private_and_rendered(seen: dict, recorded: Recorded, year: int) -> None:
    assert not recorded.outside(), "requests left localhost:\n" + "\n".join(recorded.outside())
    assert "notification" not in seen["bodyClass"] and "alert" not in seen["bodyClass"], seen
    assert any("/edge-workbench/netron/model/" in u for u in recorded.urls), recorded.urls
    texts = " ".join(seen["texts"])
    for op in ("Conv", "Relu", "Reshape", "Gemm"):
        assert op in texts, f"{op} missing from the rendered graph: {texts}"
    assert seen["nodes"] == 4
    # No cookie banner, no update nag: Netron shows both through #message-text.
    assert "notification" not in seen["bodyClass"] and "alert" not in seen["bodyClass"]
    assert "cookies" not in seen["message"] and "update" not in seen["message"].lower()
    assert not [c for c in seen["cookies"] if c == "consent" or c.startswith("_ga")]
    assert seen["title"] == "tiny.onnx"
    assert seen["year"] == year  # with FUTURE, past Netron's 180-day update nag


def test_voila_app_renders_graph_and_stays_local(voila_app: Server) -> None:
    recorded = Recorded()
    seen = _browse(voila_app.url, ARTIFACTS / "netron_voila.png", recorded)
    _assert_private_and_rendered(seen, recorded, FUTURE.year)


def test_jupyterlab_renders_graph_behind_login_and_stays_local(
    lab_server: Server, workdir: Path
) -> None:
    # Without the token: no Netron page and no model bytes.
    opener = urllib.request.build_opener(_NoRedirect)
    for route in (
        "edge-workbench/netron/index.html",
        "edge-workbench/netron/model/" + "0" * 64 + "/tiny.onnx",
    ):
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(lab_server.url + route, timeout=5)
        assert err.value.code in (302, 403), route

    recorded = Recorded()
    url = f"{lab_server.url}lab/tree/view.ipynb?token={lab_server.token}"
    seen = _browse(url, ARTIFACTS / "netron_jupyterlab.png", recorded, lab=True)
    _assert_private_and_rendered(seen, recorded, dt.datetime.now().year)

    # The kernel registered the file; the server hands out exactly its bytes, with
    # the token, under the offline-only policy.
    model_url = next(u for u in recorded.urls if "/edge-workbench/netron/model/" in u)
    authed = model_url.split("?")[0] + f"?token={lab_server.token}"
    tiny = workdir / "tiny.onnx"
    with opener.open(authed, timeout=5) as r:
        assert r.read() == tiny.read_bytes()
        assert "connect-src 'self'" in r.headers["Content-Security-Policy"]
    # Netron's multi-MB metadata goes out compressed (a Voila app on another machine).
    meta = urllib.request.Request(
        f"{lab_server.url}edge-workbench/netron/onnx-metadata.json?token={lab_server.token}",
        headers={"Accept-Encoding": "gzip"},
    )
    with opener.open(meta, timeout=5) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(r.read()))  # the real file, intact
    # Nothing else: not another name, and not the file once its bytes changed.
    for url, code in ((authed.replace("/tiny.onnx?", "/other.onnx?"), 404), (authed, 410)):
        tiny.write_bytes(tiny.read_bytes() + (b"\0" if code == 410 else b""))
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(url, timeout=5)
        assert err.value.code == code, url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _digits_tflite(path: Path) -> Path:
    """The Keras digits sample converted to .tflite by the workbench's own LiteRT export."""
    from sample_models.train_keras import KERAS_SAMPLE_DIR, KERAS_SPEC, MODEL_FILE
    from workbench.runtimes.keras_io import load_keras
    from workbench.runtimes.litert.export import export_tflite

    keras_model = load_keras(KERAS_SAMPLE_DIR / KERAS_SPEC.name / MODEL_FILE)
    return export_tflite(keras_model, path, "float")


@pytest.fixture
def tflite_voila_app(tmp_path: Path) -> Iterator[Server]:
    """The Voila app on a notebook showing NetronView of a real .tflite file."""
    import nbformat

    tflite = _digits_tflite(tmp_path / "digits.tflite")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"from widgets.netron_view import NetronView\nNetronView({str(tflite)!r}, height=520)"
        )
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "view.ipynb")
    port = _free_port()
    server = _start(
        [
            sys.executable, "-m", "widgets.app_server", "view.ipynb", f"--port={port}",
            "--no-browser", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
        ],
        tmp_path,
        _isolated_env(tmp_path),
        tmp_path / "voila.log",
        port,
    )  # fmt: skip
    try:
        _wait_until_up(server, "edge-workbench/netron/index.html", time.monotonic() + START_TIMEOUT)
        yield server
    finally:
        _stop(server)


@pytest.mark.timeout(150)  # the .tflite is converted first (TensorFlow: ~20 s here)
def test_voila_app_renders_a_tflite_graph_offline(tflite_voila_app: Server, tmp_path: Path) -> None:
    recorded = Recorded()
    seen = _browse(tflite_voila_app.url, ARTIFACTS / "netron_tflite.png", recorded)
    assert not recorded.outside(), "requests left localhost:\n" + "\n".join(recorded.outside())
    assert "notification" not in seen["bodyClass"] and "alert" not in seen["bodyClass"], seen
    assert seen["title"] == "digits.tflite"
    texts = " ".join(seen["texts"])
    # TFLite's operators, as Netron names them from the file's own flatbuffer.
    for op in ("Conv2D", "DepthwiseConv2D", "FullyConnected"):
        assert op in texts, f"{op} missing from the rendered graph: {texts}"
    assert seen["texts"].count("Conv2D") >= 2  # the sample's two plain convolutions
    # Netron read TFLite's schema and metadata from this server (nothing from elsewhere).
    served = [urlsplit(u).path.rsplit("/", 1)[-1] for u in recorded.urls]
    assert "tflite.js" in served and "tflite-schema.js" in served, served
    # The server hands out exactly the registered bytes.
    model_url = next(u for u in recorded.urls if "/edge-workbench/netron/model/" in u)
    with urllib.request.urlopen(model_url.split("?")[0], timeout=5) as r:
        assert r.read() == (tmp_path / "digits.tflite").read_bytes()
        assert r.headers["Content-Type"] == "application/octet-stream"

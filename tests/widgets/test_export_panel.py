"""ExportPanel: export_variant on a worker thread, the files listed, a zip to download."""

from __future__ import annotations

import base64
import io
import json
import re
import zipfile

import pytest

from widgets import ExportPanel
from widgets.netron_server.downloads import lookup_download
from widgets.netron_server.registry import BASE_URL_ENV, REGISTRY_ENV
from workbench import Cache, MeasureSettings, QuantizeConfig, Recipe, load_model
from workbench.pipeline import evaluate

FAST = MeasureSettings(warmup=3, min_runs=30, min_seconds=0.05)


@pytest.fixture(autouse=True)
def no_server(monkeypatch):
    """No page server serves the workbench's routes unless a test says so."""
    monkeypatch.delenv(BASE_URL_ENV, raising=False)


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """The int8 digits-cnn variant (ONNX only: no .pt2 to trace, so a quick export)."""
    cache = Cache(tmp_path_factory.getbasetemp() / "digits-cnn-cache")
    model = load_model("digits-cnn")
    result = evaluate(
        model, Recipe.of(quantize=QuantizeConfig(scheme="int8")), settings=FAST, cache=cache
    )
    return model, result, cache


@pytest.mark.slow
def test_export_writes_the_folder_and_offers_a_zip(variant, tmp_path):
    model, result, cache = variant
    panel = ExportPanel(cache=cache, settings=FAST)
    panel.model, panel.result = model, result
    assert panel.folder == "export/digits-cnn-int8-minmax-pc"  # follows the variant
    panel.folder_w.value = str(tmp_path / "out")  # as a user types a folder
    panel.export_w.click()
    assert panel.wait(120)
    assert panel.error == ""
    # The device runner and how to run it travel with the model.
    assert panel.files == [
        "RUN.md",
        "baseline.onnx",
        "manifest.json",
        "model.onnx",
        "workbench_runner.py",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["recipe_name"] == "int8-minmax-pc"
    assert panel.manifest_path == str(tmp_path / "out" / "manifest.json")
    shown = panel._out_w.value
    assert "manifest.json" in shown and "download out.zip" in shown

    b64 = re.search(r'href="data:application/zip;base64,([^"]+)"', panel.download_html).group(1)
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(b64))) as zf:
        assert sorted(zf.namelist()) == [
            f"out/{name}" for name in ("RUN.md", "baseline.onnx", "manifest.json", "model.onnx")
        ] + ["out/workbench_runner.py"]
        assert zf.read("out/model.onnx") == (tmp_path / "out" / "model.onnx").read_bytes()


@pytest.mark.slow
def test_a_zip_over_the_limit_is_not_offered_and_says_where_the_files_are(variant, tmp_path):
    model, result, cache = variant
    panel = ExportPanel(cache=cache, settings=FAST, limit_bytes=1000)
    panel.model, panel.result = model, result
    panel.folder = str(tmp_path / "big")
    assert panel.export()
    assert panel.wait(120)
    assert "data:" not in panel.download_html
    assert "above the 1 kB" in panel.download_html
    assert str((tmp_path / "big").resolve()) in panel.download_html

    (tmp_path / "a-file").write_text("x")
    panel.folder = str(tmp_path / "a-file")
    panel.export()
    assert panel.wait(60)
    assert "a-file exists and is not a folder" in panel.error
    assert "a-file exists" in panel._out_w.value


def test_export_without_a_variant_shows_the_error():
    panel = ExportPanel()
    assert panel.export_w.disabled
    assert panel.export() is False
    assert "no variant to export" in panel.error


@pytest.mark.slow
def test_with_a_page_server_any_size_is_a_served_download_link(variant, tmp_path, monkeypatch):
    """The server route, not a data: link: no size limit, only the zip the export made."""
    model, result, cache = variant
    monkeypatch.setenv(BASE_URL_ENV, "/base/")
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "registry"))
    panel = ExportPanel(
        cache=cache, settings=FAST, limit_bytes=1000
    )  # a limit that no longer applies
    panel.model, panel.result = model, result
    panel.folder = str(tmp_path / "big")
    assert panel.export() and panel.wait(120)
    assert panel.error == "" and "data:" not in panel.download_html
    href = re.search(r'href="([^"]+)"', panel.download_html).group(1)
    match = re.fullmatch(r"/base/edge-workbench/download/([0-9a-f]{32})/(big\.zip)", href)
    assert match, href
    assert "text-decoration: underline" in panel.download_html  # looks like a link
    zipped = lookup_download(*match.groups())
    with zipfile.ZipFile(zipped) as zf:
        assert {"big/baseline.onnx", "big/manifest.json", "big/model.onnx"} <= set(zf.namelist())
        assert zf.read("big/model.onnx") == (tmp_path / "big" / "model.onnx").read_bytes()
    # Only what was registered, under its own name: no other name, token or path.
    token, name = match.groups()
    (tmp_path / "secret.zip").write_text("no")
    for bad in [
        (token, "other.zip"),
        (token, "../" + name),
        (token, "big.json"),
        ("0" * 32, name),
        ("../../" + token, name),
        (token[:-1], name),
        (token, "..%2Fsecret.zip"),
    ]:
        assert lookup_download(*bad) is None, bad
    # A new export replaces the zip: the old one is deleted from the server's folder.
    assert panel.export() and panel.wait(120)
    newer = re.search(r'href="([^"]+)"', panel.download_html).group(1).split("/")
    assert newer[-2] != token and lookup_download(token, name) is None
    assert lookup_download(newer[-2], newer[-1]) is not None
    panel.clear()
    assert (panel.files, panel.download_html, panel.result) == ([], "", None)
    assert lookup_download(newer[-2], newer[-1]) is None

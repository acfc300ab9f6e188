"""NetronView without a browser: registration, the iframe's URL, errors, and the
privacy patches applied to the installed Netron."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import pytest

from widgets.netron_server import assets, registry
from widgets.netron_server.assets import PATCHES, NetronPatchError, netron_asset
from widgets.netron_server.registry import (
    BASE_URL_ENV,
    REGISTRY_ENV,
    lookup_model_file,
    register_model,
)
from widgets.netron_view import NetronView


def _onnx(path: Path, external_data: bool = False) -> Path:
    """A one-node ONNX model (MatMul by a 16x16 weight)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external_data:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(path))
    return path


@pytest.fixture
def server_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private registry, and a kernel environment as our server sets it."""
    reg = tmp_path / "registry"
    monkeypatch.setenv(REGISTRY_ENV, str(reg))
    monkeypatch.setenv(BASE_URL_ENV, "/")
    return reg


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_empty_path_shows_placeholder(server_env: Path) -> None:
    view = NetronView()
    assert view.path == "" and view.url == "" and view.error == ""
    assert "No model selected" in view.children[0].value
    assert "<iframe" not in view.children[0].value
    assert not server_env.exists()  # nothing registered


def test_path_registers_file_and_points_iframe_at_it(tmp_path: Path, server_env: Path) -> None:
    model = _onnx(tmp_path / "tiny.onnx")
    sha = _sha(model)
    view = NetronView(model, height=480)

    assert view.error == ""
    assert view.url == f"/edge-workbench/netron/index.html?url=model/{sha}/tiny.onnx"
    page = view.children[0].value
    assert f'src="{html.escape(view.url, quote=True)}"' in page
    assert "height: 480px" in page
    assert 'sandbox="allow-scripts allow-same-origin allow-downloads"' in page  # no popups
    entry = json.loads((server_env / f"{sha}.json").read_text())
    assert entry["files"] == {"tiny.onnx": [str(model.resolve()), sha]}
    assert lookup_model_file(sha, "tiny.onnx") == (model.resolve(), sha)

    view.height = 300
    assert "height: 300px" in view.children[0].value


def test_changing_path_shows_the_other_model(tmp_path: Path, server_env: Path) -> None:
    a = _onnx(tmp_path / "a.onnx")
    b = tmp_path / "b.onnx"
    b.write_bytes(a.read_bytes() + b"\0")  # different bytes, different sha256
    view = NetronView(a)
    first = view.url
    view.path = str(b)
    assert view.url != first and _sha(b) in view.url and view.url.endswith("/b.onnx")
    assert lookup_model_file(_sha(a), "a.onnx") is not None  # earlier one still served
    view.path = b  # a Path works as well as a str
    assert view.path == str(b)
    view.path = None
    assert view.path == "" and view.url == "" and "No model selected" in view.children[0].value


def test_base_url_comes_from_the_serving_server(
    tmp_path: Path, server_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BASE_URL_ENV, "/user/alice")
    view = NetronView(_onnx(tmp_path / "m.onnx"))
    assert view.url.startswith("/user/alice/edge-workbench/netron/index.html?url=model/")


def test_file_names_are_made_url_safe(tmp_path: Path, server_env: Path) -> None:
    model = _onnx(tmp_path / "my model (v2).onnx")
    view = NetronView(model)
    assert view.url.endswith("/my_model__v2_.onnx")
    assert lookup_model_file(_sha(model), "my_model__v2_.onnx") == (model.resolve(), _sha(model))


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_bad_path_shows_error_not_exception(tmp_path: Path, server_env: Path, make: str) -> None:
    target = tmp_path / "nope.onnx"
    if make == "folder":
        target.mkdir()
    view = NetronView(target)
    assert view.url == ""
    assert ("does not exist" if make == "missing" else "is not a file") in view.error
    assert "nope.onnx" in view.error
    assert html.escape(view.error) in view.children[0].value
    assert "<iframe" not in view.children[0].value


def test_unreadable_file_shows_error(
    tmp_path: Path, server_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _onnx(tmp_path / "m.onnx")

    def denied(path: Path) -> str:
        raise PermissionError(13, "Permission denied")

    # Tests run as root here, where chmod 000 does not stop a read.
    monkeypatch.setattr(registry, "_sha256", denied)
    view = NetronView()
    view.path = str(model)
    assert "cannot read model file" in view.error and "Permission denied" in view.error
    assert view.url == ""


def test_unwritable_registry_shows_error(
    tmp_path: Path, server_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(REGISTRY_ENV, str(blocker / "registry"))
    view = NetronView(_onnx(tmp_path / "m.onnx"))
    assert "cannot write the graph view's registry" in view.error
    assert REGISTRY_ENV in view.error and view.url == ""


def test_without_the_graph_server_says_how_to_get_it(
    tmp_path: Path, server_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain `voila` would answer the iframe's URL with the app itself, recursively:
    # so no iframe at all when the server did not announce the graph view.
    monkeypatch.delenv(BASE_URL_ENV)
    view = NetronView(_onnx(tmp_path / "m.onnx"))
    assert view.url == "" and "<iframe" not in view.children[0].value
    assert "make app" in view.error and "widgets.netron_server" in view.error


def test_onnx_external_data_is_registered_with_the_model(tmp_path: Path, server_env: Path) -> None:
    model = _onnx(tmp_path / "big.onnx", external_data=True)
    data = tmp_path / "big.onnx.data"
    assert data.is_file()
    reg = register_model(model)
    assert set(reg.files) == {"big.onnx", "big.onnx.data"}
    assert lookup_model_file(reg.token, "big.onnx.data") == (data.resolve(), _sha(data))


def test_lookup_serves_only_registered_names(tmp_path: Path, server_env: Path) -> None:
    reg = register_model(_onnx(tmp_path / "m.onnx"))
    assert lookup_model_file(reg.token, "m.onnx") is not None
    assert lookup_model_file(reg.token, "other.onnx") is None
    assert lookup_model_file(reg.token, "../m.onnx") is None
    assert lookup_model_file("0" * 64, "m.onnx") is None
    assert lookup_model_file("../" + reg.token, "m.onnx") is None
    assert lookup_model_file(reg.token.upper(), "m.onnx") is None


def test_every_privacy_patch_applies_to_the_installed_netron() -> None:
    # Fails loudly after a Netron upgrade that moved a patched line.
    assets._cache.clear()
    for name in {p.file for p in PATCHES}:
        data, _, _ = netron_asset(name)
        text = data.decode()
        for patch in (p for p in PATCHES if p.file == name):
            assert patch.replacement in text, patch.why
            if patch.target not in patch.replacement:  # not an insertion next to it
                assert patch.target not in text, patch.why
    browser = netron_asset("browser.js")[0].decode()
    for call in ("await age();", "await consent();", "await telemetry();"):
        assert call not in browser


def test_text_assets_are_gzipped_when_asked_and_patched_the_same() -> None:
    import gzip

    plain, _, _ = netron_asset("browser.js")
    packed, content_type, compressed = netron_asset("browser.js", gzipped=True)
    assert compressed and content_type.startswith("text/javascript")
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) / 3
    icon, _, icon_compressed = netron_asset("icon.png", gzipped=True)
    assert not icon_compressed and icon.startswith(b"\x89PNG")


def test_a_vanished_patch_target_refuses_to_serve() -> None:
    with pytest.raises(NetronPatchError, match="ipinfo.io"):
        assets._patched("browser.js", b"await age(); // a Netron that moved consent()")


def test_only_netron_ui_files_are_served() -> None:
    page, content_type, compressed = netron_asset("index.html")
    assert content_type.startswith("text/html") and b"<title>Netron</title>" in page
    assert not compressed
    assert netron_asset("onnx-metadata.json")[1] == "application/json"
    for name in ("server.py", "__init__.py", "../netron/index.html", ".hidden.js", "nope.js"):
        assert netron_asset(name) is None, name


@pytest.fixture(scope="module")
def digits_tflite(tmp_path_factory) -> Path:
    """A real .tflite: the Keras digits sample through the workbench's LiteRT export."""
    from sample_models.train_keras import KERAS_SAMPLE_DIR, KERAS_SPEC, MODEL_FILE
    from workbench.runtimes.keras_io import load_keras
    from workbench.runtimes.litert.export import export_tflite

    keras_model = load_keras(KERAS_SAMPLE_DIR / KERAS_SPEC.name / MODEL_FILE)
    return export_tflite(keras_model, tmp_path_factory.mktemp("tflite") / "digits.tflite", "float")


@pytest.mark.slow
def test_a_tflite_file_is_registered_and_netron_reads_it_from_this_server(
    digits_tflite: Path, server_env: Path
) -> None:
    sha = _sha(digits_tflite)
    view = NetronView(digits_tflite)
    assert view.error == ""
    # The extension tells Netron the format; the bytes are served as they are.
    assert view.url == f"/edge-workbench/netron/index.html?url=model/{sha}/digits.tflite"
    entry = json.loads((server_env / f"{sha}.json").read_text())
    assert entry["files"] == {"digits.tflite": [str(digits_tflite.resolve()), sha]}
    assert lookup_model_file(sha, "digits.tflite") == (digits_tflite.resolve(), sha)
    # Netron's TFLite reader, its flatbuffer schema and its operator metadata are among
    # the UI files served (a browser renders it: tests/e2e/test_netron_browser.py).
    for name, kind in (
        ("tflite.js", "text/javascript"),
        ("tflite-schema.js", "text/javascript"),
        ("flatbuffers.js", "text/javascript"),
        ("tflite-metadata.json", "application/json"),
    ):
        asset = netron_asset(name)
        assert asset is not None and asset[1].startswith(kind), name
    assert json.loads(netron_asset("tflite-metadata.json")[0])

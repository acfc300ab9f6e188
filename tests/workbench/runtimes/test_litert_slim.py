"""The slimmed .tflite export (shared vectors, no empty buffers, compact names) and the byte
accounting of a file: digits-cnn converted at test time, raw and slimmed, run in LiteRT and
TensorFlow Lite Micro on the whole digits test split."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.runtimes import litert
from workbench.runtimes.litert.slim import compact_names

CALIBRATION_SAMPLES = 50


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    """digits-cnn as float and int8 .tflite, each as the converter wrote it ("raw") and as
    export_tflite writes it (slimmed, compact names), plus the test split."""
    from workbench.models import load_model
    from workbench.runtimes.onnx_keras import keras_for

    m = load_model("digits-cnn")
    out = tmp_path_factory.mktemp("slim")
    km = keras_for(m, m.module, out / "work")
    calibration = m.task.calibration(m.preprocessing, CALIBRATION_SAMPLES)
    files = {}
    for scheme in ("float", "int8"):
        raw = litert.convert_keras(km, scheme, calibration=calibration, slim=False)
        files[f"{scheme}-raw"] = out / f"{scheme}-raw.tflite"
        files[f"{scheme}-raw"].write_bytes(raw)
        files[scheme] = litert.export_tflite(
            km, out / f"{scheme}.tflite", scheme, calibration=calibration
        )
    x, y = m.task.arrays("test", m.preprocessing)
    return files, x, y


def _model(path):
    return litert.read_tflite(path).model


def _names(path) -> list[str | None]:
    return [t.name.decode() if t.name else None for t in _model(path).subgraphs[0].tensors]


def test_compact_names_keep_the_layer_and_stay_unique():
    names = [
        "wrap_1/model_1/conv/Relu;wrap_1/model_1/conv/BiasAdd",
        "wrap_1/model_1/conv/Relu;wrap_1/model_1/conv/convolution",
        "wrap_1/model_1/dense/MatMul",
        "arith.constant",
    ]
    assert compact_names(names) == ["conv/Relu", "conv/Relu_2", "dense/MatMul", "arith.constant"]
    # One scoped name has no shared scope to drop.
    assert compact_names(["a/b;c"]) == ["a/b"]


@pytest.mark.slow
def test_footprint_sums_to_the_file_size_and_finds_weights_and_zero_points(cnn_files):
    files, _, _ = cnn_files
    params = litert.graph_stats(files["int8-raw"]).params
    for key, path in files.items():
        fp = litert.footprint(path)
        assert fp.total == path.stat().st_size, key
        assert sum(fp.categories.values()) == fp.total, key
        assert set(fp.categories) == set(litert.FOOTPRINT_CATEGORIES), key
        # Everything is itemized (no option vectors in this model) and nothing is orphaned.
        assert fp.categories["unattributed"] == 0 and fp.categories["unreferenced"] == 0, key
    raw = litert.footprint(files["int8-raw"]).categories
    # int8 weights (1 byte) plus int32 biases: at least one byte per parameter.
    assert params <= raw["constants"] <= 4 * params
    assert raw["zero_point"] > 0 and raw["scale"] > 0 and raw["names"] > 0
    assert litert.footprint(files["float-raw"]).categories["zero_point"] == 0
    with pytest.raises(WorkbenchError, match="not a TFLite model"):
        litert.footprint(b"not a flatbuffer")
    with pytest.raises(WorkbenchError, match="truncated or corrupt"):
        litert.footprint(files["int8-raw"].read_bytes()[:2000])


@pytest.mark.slow
def test_slimmed_int8_is_smaller_and_bit_identical_in_litert_and_tflm(cnn_files):
    from workbench.runtimes import tflite_micro as tflm

    files, x, y = cnn_files
    raw, slim = litert.footprint(files["int8-raw"]), litert.footprint(files["int8"])
    # The per-channel zero-point arrays (all zeros) are stored once per channel count,
    # and the fused names shrink to the layer's; the weights stay byte for byte.
    assert slim.total < raw.total - 3000
    assert slim.categories["zero_point"] < raw.categories["zero_point"] / 2
    assert slim.categories["names"] < raw.categories["names"] / 2
    assert slim.categories["constants"] == raw.categories["constants"]
    for runtime in (litert, tflm):
        before = runtime.predict(files["int8-raw"], x, raw=True)
        after = runtime.predict(files["int8"], x, raw=True)
        assert before.dtype == np.int8 and before.shape == (len(y), 10)
        assert np.array_equal(before, after), runtime.__name__
    f_before, f_after = litert.predict(files["float-raw"], x), litert.predict(files["float"], x)
    assert np.array_equal(f_before, f_after)
    assert files["float"].stat().st_size < files["float-raw"].stat().st_size


def _quant(t):
    q = t.quantization
    if q is None or q.scale is None:
        return None
    return (
        np.asarray(q.scale).tolist(),
        np.asarray(q.zeroPoint).tolist(),
        int(q.quantizedDimension),
        None if q.min is None else np.asarray(q.min).tolist(),
        None if q.max is None else np.asarray(q.max).tolist(),
    )


def _data(model, t) -> bytes:
    b = model.buffers[t.buffer]
    return b"" if b.data is None else np.asarray(b.data, np.uint8).tobytes()


@pytest.mark.slow
def test_slim_keeps_every_weight_scale_zero_point_and_operator(cnn_files):
    files, _, _ = cnn_files
    for scheme in ("float", "int8"):
        a, b = _model(files[f"{scheme}-raw"]), _model(files[scheme])
        sa, sb = a.subgraphs[0], b.subgraphs[0]
        assert len(sa.tensors) == len(sb.tensors)
        for ta, tb in zip(sa.tensors, sb.tensors, strict=True):
            assert list(ta.shape) == list(tb.shape) and ta.type == tb.type
            assert _quant(ta) == _quant(tb)
            assert _data(a, ta) == _data(b, tb)
        assert [list(o.inputs) + list(o.outputs) for o in sa.operators] == [
            list(o.inputs) + list(o.outputs) for o in sb.operators
        ]
        assert [a.operatorCodes[o.opcodeIndex].builtinCode for o in sa.operators] == [
            b.operatorCodes[o.opcodeIndex].builtinCode for o in sb.operators
        ]
        assert list(sa.inputs) == list(sb.inputs) and list(sa.outputs) == list(sb.outputs)
        # The data-less buffers are gone: only buffer 0, constants and metadata remain.
        with_data = sum(1 for buf in b.buffers if buf.data is not None and len(buf.data))
        assert len(b.buffers) == 1 + with_data < len(a.buffers)


@pytest.mark.slow
def test_constant_data_stays_16_byte_aligned(cnn_files):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    files, _, _ = cnn_files
    data = files["int8"].read_bytes()
    root = schema.Model.GetRootAs(data, 0)
    starts = []
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        o = flatbuffers.number_types.UOffsetTFlags.py_type(buf._tab.Offset(4))
        if o and buf.DataLength():
            starts.append(buf._tab.Vector(o))
    assert starts and all(s % 16 == 0 for s in starts), starts


@pytest.mark.slow
def test_name_modes(cnn_files, tmp_path):
    files, x, _ = cnn_files
    raw_names, compact = _names(files["int8-raw"]), _names(files["int8"])
    sub = _model(files["int8"]).subgraphs[0]
    io = [int(i) for i in [*sub.inputs, *sub.outputs]]
    for i in io:  # what a user looks up keeps its name
        assert compact[i] == raw_names[i]
    assert len(set(compact)) == len(compact) and not any(";" in n for n in compact)
    data = files["int8-raw"].read_bytes()
    keep = tmp_path / "keep.tflite"
    keep.write_bytes(litert.slim_tflite(data, names="keep"))
    assert _names(keep) == raw_names
    strip = tmp_path / "strip.tflite"
    strip.write_bytes(litert.slim_tflite(data, names="strip"))
    stripped = _names(strip)
    assert [stripped[i] for i in io] == [raw_names[i] for i in io]
    assert sum(n is None for n in stripped) == len(stripped) - len(set(io))
    sizes = [p.stat().st_size for p in (strip, files["int8"], keep, files["int8-raw"])]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    want = litert.predict(files["int8-raw"], x[:50], raw=True)
    for path in (keep, strip):
        assert np.array_equal(litert.predict(path, x[:50], raw=True), want)
    with pytest.raises(WorkbenchError, match="tensor-name mode"):
        litert.slim_tflite(data, names="short")

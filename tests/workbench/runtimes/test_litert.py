"""LiteRT: Keras -> .tflite export, flatbuffer statistics, I/O signature, prediction, latency,
memory, and clear errors for bad files. Uses the Keras sample, converted at test time."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.results import LatencyStats
from workbench.runtimes import litert

pytestmark = pytest.mark.slow  # the session fixture converts five models (~15 s)

# The Keras sample after the converter folds each BatchNorm into the convolution before
# it (adding a bias), counted by hand from build_keras_cnn:
#   conv 3x3 1->16: 144 + 16    depthwise 3x3 x16: 144 + 16    pointwise 16->32: 512 + 32
#   conv 3x3 32->32: 9216 + 32  dense 128->32: 4096 + 32       dense 32->10: 320 + 10
SAMPLE_PARAMS = 14570
# MACs at batch 1: output elements x (kernel elements per output)
#   conv1 8*8*16*9, depthwise 8*8*16*9, pointwise 8*8*32*16, conv 4*4*32*(9*32),
#   dense 32*128 + 10*32
SAMPLE_MACS_BY_OP = {
    "CONV_2D": 8 * 8 * 16 * 9 + 8 * 8 * 32 * 16 + 4 * 4 * 32 * 288,
    "DEPTHWISE_CONV_2D": 8 * 8 * 16 * 9,
    "FULLY_CONNECTED": 32 * 128 + 10 * 32,
}


def _accuracy(path, x, y) -> float:
    return float((litert.predict(path, x).argmax(axis=1) == y).mean())


def test_graph_stats_count_weights_and_macs_of_every_scheme(tflite_files):
    for key, path in tflite_files.items():
        s = litert.graph_stats(path)
        assert s.params == SAMPLE_PARAMS, key
        assert s.macs_by_op == SAMPLE_MACS_BY_OP, key
        assert s.macs == sum(SAMPLE_MACS_BY_OP.values()) and not s.uncounted_ops, key
    assert set(litert.graph_stats(tflite_files["float"]).weight_dtypes) == {"float32"}
    # fp16 weights sit behind DEQUANTIZE operators and are still found and counted.
    fp16 = litert.graph_stats(tflite_files["fp16"])
    assert fp16.weight_dtypes == {"float16": SAMPLE_PARAMS} and fp16.op_counts["DEQUANTIZE"] > 0
    # Full int8: int8 weights, int32 biases.
    assert set(litert.graph_stats(tflite_files["int8"]).weight_dtypes) == {"int8", "int32"}


def test_zeroed_weights_are_counted_as_zero_in_float_and_int8(tmp_path, keras_sample):
    from workbench._tf import keras

    clone = keras().models.clone_model(keras_sample)
    clone.set_weights(keras_sample.get_weights())
    dense = clone.get_layer(index=-3)  # Dense(32): its kernel is not folded with anything
    kernel, bias = dense.get_weights()
    kernel = kernel.copy()
    kernel.flat[:500] = 0.0
    dense.set_weights([kernel, bias])
    float_path = litert.export_tflite(clone, tmp_path / "sparse.tflite", "float")
    sparse = litert.graph_stats(float_path)
    assert sparse.params == SAMPLE_PARAMS
    natural_zeros = (
        SAMPLE_PARAMS
        - litert.graph_stats(
            litert.export_tflite(keras_sample, tmp_path / "dense.tflite", "float")
        ).nonzero_params
    )
    assert sparse.nonzero_params == SAMPLE_PARAMS - natural_zeros - 500
    int8_path = litert.export_tflite(
        clone,
        tmp_path / "sparse-int8.tflite",
        "int8",
        calibration=np.zeros((4, 8, 8, 1), np.float32),
    )
    # Zero stays zero under symmetric int8 weights; small weights may round to it too.
    assert litert.graph_stats(int8_path).nonzero_params <= sparse.nonzero_params


def test_io_signature_reports_int8_scaling(tflite_files):
    inputs, outputs = litert.io_signature(tflite_files["int8"])
    (inp,), (out,) = inputs, outputs
    assert inp.shape == (1, 8, 8, 1) and inp.dtype == "int8" and out.dtype == "int8"
    assert inp.quantized and inp.scale > 0 and -128 <= inp.zero_point <= 127
    assert out.quantized and out.to_dict()["shape"] == [1, 10]
    (finp,), (fout,) = litert.io_signature(tflite_files["int8-float-io"])
    assert finp.dtype == "float32" and not finp.quantized and fout.dtype == "float32"


def test_sizes_shrink_with_each_scheme(tflite_files):
    size = {k: p.stat().st_size for k, p in tflite_files.items()}
    assert size["int8"] < size["fp16"] < size["float"]
    assert size["dynamic"] < size["fp16"]


def test_float_tflite_matches_keras_and_int8_loses_at_most_one_point(
    keras_sample, tflite_files, digits_nhwc
):
    x, y = digits_nhwc
    keras_logits = np.asarray(keras_sample(x, training=False))
    float_logits = litert.predict(tflite_files["float"], x)
    assert float_logits.shape == (540, 10)
    assert np.abs(float_logits - keras_logits).max() < 1e-3
    assert (float_logits.argmax(1) == keras_logits.argmax(1)).all()
    float_acc = float((float_logits.argmax(1) == y).mean())
    for key in ("fp16", "dynamic", "int8", "int8-float-io"):
        assert _accuracy(tflite_files[key], x, y) >= float_acc - 0.01, key


def test_int8_outputs_are_dequantized_unless_raw(tflite_files, digits_nhwc):
    x = digits_nhwc[0][:5]
    raw = litert.predict(tflite_files["int8"], x, raw=True)
    real = litert.predict(tflite_files["int8"], x)
    assert raw.dtype == np.int8 and real.dtype == np.float32
    (_,), (out,) = litert.io_signature(tflite_files["int8"])
    assert np.allclose(real, out.scale * (raw.astype(np.float32) - out.zero_point))


def test_predict_rejects_inputs_in_the_wrong_layout(tflite_files, digits_nhwc):
    nchw = np.transpose(digits_nhwc[0][:2], (0, 3, 1, 2))
    with pytest.raises(WorkbenchError, match="NHWC"):
        litert.predict(tflite_files["float"], nchw)


def test_latency_has_the_onnx_runtime_statistics_and_records_threads(tflite_files):
    for key in ("float", "int8"):
        stats = litert.measure_latency(
            tflite_files[key], threads=2, warmup=2, min_runs=20, min_seconds=0.02
        )
        assert isinstance(stats, LatencyStats)
        assert stats.threads == 2 and stats.n >= 20 and stats.warmup == 2
        assert 0 < stats.min <= stats.p50 <= stats.p90 <= stats.p99 <= stats.max


def test_xnnpack_is_applied_as_a_user_gets_it(tflite_files):
    d = litert.delegation(litert.make_interpreter(tflite_files["float"]))
    assert d.xnnpack_partitions >= 1
    assert d.op_counts["CONV_2D"] == 3 and d.nodes == sum(d.op_counts.values())


def test_memory_is_measured_in_a_fresh_process(tflite_files):
    m = litert.measure_memory(tflite_files["int8"], runs=2)
    assert m.peak_bytes > 0 and m.process_peak_bytes > m.baseline_bytes > 0


def test_operator_profile_says_litert_offers_none(tflite_files):
    with pytest.raises(WorkbenchError, match="no per-operator profiler"):
        litert.operator_profile(tflite_files["float"])


def test_version_is_the_installed_package():
    assert litert.litert_version() == importlib.metadata.version("ai-edge-litert")
    v = litert.versions()
    assert v["ai-edge-litert"] == litert.litert_version()
    assert v["keras"] == importlib.metadata.version("keras") and v["tensorflow"]


@pytest.mark.parametrize("kind", ["truncated", "not-tflite", "garbage-after-id", "empty"])
def test_bad_files_get_one_clear_error_everywhere(tmp_path, tflite_files, kind):
    good = tflite_files["float"].read_bytes()
    bad = tmp_path / f"{kind}.tflite"
    bad.write_bytes(
        {
            "truncated": good[: len(good) // 3],
            "not-tflite": b"PK\x03\x04 this is a zip, not a model",
            "garbage-after-id": good[:8] + bytes(range(256)) * 4,
            "empty": b"",
        }[kind]
    )
    for call in (
        litert.read_tflite,
        litert.graph_stats,
        litert.io_signature,
        litert.make_interpreter,
        litert.measure_memory,
        lambda p: litert.predict(p, np.zeros((1, 8, 8, 1), np.float32)),
    ):
        with pytest.raises(WorkbenchError, match=r"not a TFLite model|truncated or corrupt"):
            call(bad)


def test_export_rejects_bad_settings_before_converting(keras_sample, tmp_path):
    with pytest.raises(WorkbenchError, match="unknown TFLite scheme"):
        litert.export_tflite(keras_sample, tmp_path / "x.tflite", "int4")
    with pytest.raises(WorkbenchError, match="representative dataset"):
        litert.export_tflite(keras_sample, tmp_path / "x.tflite", "int8")
    with pytest.raises(WorkbenchError, match="layout"):
        litert.export_tflite(
            keras_sample, tmp_path / "x.tflite", "int8", calibration=np.zeros((2, 1, 8, 8))
        )
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_per_tensor_int8_has_one_weight_scale_per_tensor_and_keeps_accuracy(
    tmp_path, keras_sample, calibration_nhwc, tflite_files, digits_nhwc
):
    from ai_edge_litert.interpreter import Interpreter

    from workbench.runtimes.litert import export_tflite

    def scale_counts(path) -> set[int]:
        """How many scales each int8 tensor carries (activations always one)."""
        details = Interpreter(model_path=str(path)).get_tensor_details()
        return {
            len(d["quantization_parameters"]["scales"])
            for d in details
            if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"])
        }

    per_tensor = export_tflite(
        keras_sample,
        tmp_path / "pt.tflite",
        "int8",
        calibration=calibration_nhwc,
        per_channel=False,
    )
    assert max(scale_counts(tflite_files["int8"])) > 1  # the default: per channel
    assert scale_counts(per_tensor) == {1}
    x, y = digits_nhwc
    assert _accuracy(per_tensor, x, y) >= _accuracy(tflite_files["float"], x, y) - 0.01

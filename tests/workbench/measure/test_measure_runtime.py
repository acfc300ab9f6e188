"""Sessions, prediction, latency and scores on tiny ONNX models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from workbench.errors import WorkbenchError
from workbench.measure import (
    accuracy,
    agreement,
    make_session,
    measure_latency,
    model_input,
    predict,
)


def _reference_logits(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The Conv+Linear model computed in numpy, to check what ONNX Runtime returns."""
    w, b = weights["conv.weight"], weights["conv.bias"]
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(pad, (3, 3), axis=(2, 3))  # N,1,8,8,3,3
    conv = np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]
    flat = np.maximum(conv, 0).reshape(len(x), -1)
    return flat @ weights["fc.weight"].T + weights["fc.bias"]


def test_predict_matches_numpy_and_batches(conv_linear, models):
    x = np.random.default_rng(3).standard_normal((37, 1, 8, 8)).astype(np.float32)
    out = predict(conv_linear, x, batch_size=8)  # 5 batches, the last one partial
    assert out.shape == (37, 10)
    np.testing.assert_allclose(out, _reference_logits(models.conv_linear_weights(), x), atol=1e-4)


def test_predict_loops_over_a_fixed_batch_of_one(tmp_path, conv_linear, models):
    fixed = models.write_conv_linear(tmp_path / "b1.onnx", batch=1)
    assert model_input(make_session(fixed)).shape == (1, 1, 8, 8)
    x = np.random.default_rng(4).standard_normal((5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(predict(fixed, x), predict(conv_linear, x), atol=1e-6)


def test_float16_model_takes_float32_inputs(tmp_path, conv_linear, models):
    half = models.write_conv_linear(tmp_path / "h.onnx", dtype=np.float16)
    assert model_input(make_session(half)).dtype == np.float16
    x = np.random.default_rng(5).standard_normal((6, 1, 8, 8)).astype(np.float32)
    out = predict(half, x)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), predict(conv_linear, x), atol=0.1)
    stats = measure_latency(half, (1, 1, 8, 8), warmup=2, min_runs=5, min_seconds=0.0)
    assert stats.n == 5


def test_latency_stats_are_ordered_and_recorded(conv_linear):
    stats = measure_latency(
        conv_linear, (1, 1, 8, 8), threads=2, warmup=3, min_runs=30, min_seconds=0.05
    )
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p99 <= stats.max
    assert stats.min <= stats.mean <= stats.max
    assert stats.min > 0
    assert stats.n >= 30
    assert (stats.warmup, stats.threads) == (3, 2)


def test_latency_runs_until_min_seconds_and_stops_at_max_runs(conv_linear):
    capped = measure_latency(conv_linear, warmup=0, min_runs=10, min_seconds=60.0, max_runs=40)
    assert capped.n == 40  # 60 s were not reached: the cap ended it
    timed = measure_latency(conv_linear, warmup=0, min_runs=1, min_seconds=0.1, max_runs=10**6)
    # It ran for at least 0.1 s of timed runs (n * mean covers only the runs themselves).
    assert timed.n * timed.mean >= 0.1 * 1000 * 0.5
    assert timed.n > 1


def test_latency_grows_with_the_batch(conv_linear):
    one = measure_latency(conv_linear, (1, 1, 8, 8), min_runs=30, min_seconds=0.05)
    many = measure_latency(conv_linear, (256, 1, 8, 8), min_runs=30, min_seconds=0.05)
    assert many.p50 > 2 * one.p50


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage" * 10, "truncate"])
def test_corrupt_file_gives_problem_and_fix(tmp_path, conv_linear, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(conv_linear.read_bytes()[:300] if content == "truncate" else content)
    with pytest.raises(WorkbenchError, match="is not a loadable ONNX model") as e:
        make_session(bad)
    assert "re-export the model" in str(e.value)


def test_unsupported_operator_is_named(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    with pytest.raises(WorkbenchError, match="cannot run custom.onnx: .*FancyOp") as e:
        make_session(path)
    assert "supported" in e.value.fix


def test_an_output_without_a_batch_dimension_is_a_clear_error(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
        "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(WorkbenchError, match=r"output 'y' has shape \[\] for a batch of 3") as e:
        predict(path, np.ones((3, 4), np.float32))
    assert "batch as the first dimension" in e.value.fix


def test_wrong_shape_names_both_shapes(tmp_path, conv_linear, models):
    with pytest.raises(
        WorkbenchError, match=r"expects input of shape \[N,1,8,8\] but got \[1,3,32,32\]"
    ):
        measure_latency(conv_linear, (1, 3, 32, 32))
    fixed = models.write_conv_linear(tmp_path / "b1.onnx", batch=1)
    with pytest.raises(WorkbenchError, match=r"\[1,1,8,8\] but got \[1,3,32,32\]") as e:
        measure_latency(fixed, (1, 3, 32, 32))
    assert "input_shape=(1, 1, 8, 8)" in str(e.value)
    with pytest.raises(WorkbenchError, match=r"\[N,1,8,8\] but got \[4,1,8\]"):
        predict(conv_linear, np.zeros((4, 1, 8), np.float32))


def test_bad_settings_rejected(conv_linear):
    with pytest.raises(WorkbenchError, match="threads"):
        make_session(conv_linear, threads=0)
    with pytest.raises(WorkbenchError, match="run counts"):
        measure_latency(conv_linear, min_runs=10, max_runs=5)
    with pytest.raises(WorkbenchError, match="no artifact file"):
        make_session(conv_linear.with_name("missing.onnx"))


def test_accuracy_and_agreement_accept_logits_or_labels():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    assert accuracy(logits, labels) == 0.75
    assert accuracy(labels, labels) == 1.0
    assert agreement(logits, np.array([[0, 1], [1, 0], [1, 0], [1, 0]])) == 0.75
    assert agreement(logits, logits.argmax(1)) == 1.0


def test_scores_reject_mismatched_lengths():
    with pytest.raises(WorkbenchError, match="3 predictions cannot be compared with 2 labels"):
        accuracy(np.zeros((3, 4)), np.zeros(2))
    with pytest.raises(WorkbenchError, match="cannot be compared"):
        agreement(np.zeros(3), np.zeros(4))
    with pytest.raises(WorkbenchError, match="shape"):
        accuracy(np.zeros((2, 3, 4)), np.zeros(2))

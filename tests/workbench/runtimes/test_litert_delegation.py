"""XNNPACK delegation recorded: how many partitions LiteRT's default delegate made and
which of the graph's nodes it took, on the Result, the card and the CLI's lines."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.pipeline import evaluate
from workbench.results import delegation_text


@pytest.fixture(scope="module")
def cumsum_tflite(tmp_path_factory):
    """Dense -> CUMSUM -> Dense: XNNPACK has no CUMSUM kernel, so it takes the two Dense
    layers in two partitions and leaves CUMSUM to LiteRT's built-in kernels."""
    from workbench._tf import keras
    from workbench.runtimes.litert import export_tflite

    k = keras()
    inp = k.Input((6,))
    x = k.layers.Dense(8)(inp)
    x = k.layers.Lambda(lambda t: k.ops.cumsum(t, axis=-1))(x)
    model = k.Model(inp, k.layers.Dense(3)(x))
    return export_tflite(model, tmp_path_factory.mktemp("cumsum") / "cumsum.tflite", "float")


def test_the_nodes_xnnpack_took_and_left_are_counted(cumsum_tflite):
    from workbench.runtimes.litert import delegation_of

    d = delegation_of(cumsum_tflite)
    assert d.applied and d.xnnpack_partitions == 2
    assert (d.nodes, d.delegated_nodes) == (3, 2)
    assert d.undelegated_ops == {"CUMSUM": 1}
    assert delegation_text(d.to_dict()) == (
        "XNNPACK took 2 of 3 nodes (2 partitions); left on the runtime's kernels: CUMSUM x1"
    )


def test_without_the_default_delegate_nothing_is_taken(cumsum_tflite):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from workbench.runtimes.litert import delegation

    interpreter = Interpreter(
        model_path=str(cumsum_tflite),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    d = delegation(interpreter)
    assert not d.applied and d.delegated_nodes == 0 and d.undelegated_ops == d.op_counts
    assert delegation_text(d.to_dict()) == (
        "XNNPACK not applied: all 3 nodes on the runtime's own kernels"
    )


def test_a_litert_result_records_the_delegation_beside_the_runtime(quick, session_cache):
    from widgets.metrics_card import card_html
    from workbench.cli import _text
    from workbench.models import load_model

    settings = dataclasses.replace(quick, runtime="litert")
    r = evaluate(load_model("digits-cnn-keras"), settings=settings, cache=session_cache)
    d = r.metrics.delegation
    assert d["applied"] and d["delegate"] == "XNNPACK" and d["xnnpack_partitions"] >= 1
    # Every node of the Keras sample has an XNNPACK kernel.
    assert d["delegated_nodes"] == d["nodes"] == sum(d["op_counts"].values()) > 0
    line = f"XNNPACK took {d['nodes']} of {d['nodes']} nodes"
    version = r.metrics.environment["runtime_versions"]["ai-edge-litert"]
    assert f"ai-edge-litert {version}" in card_html(r, None)
    assert line in card_html(r, None) and line in _text(r)
    # The report puts it beside the runtime and its version, under the variant's row.
    from workbench.report import report_html
    from workbench.study import Study

    page = report_html(Study(r.model, [r]))
    assert f"litert (ai-edge-litert {version}): {line}" in page


def test_an_onnx_runtime_result_has_no_delegation(cnn, quick, session_cache):
    r = evaluate(cnn, settings=quick, cache=session_cache)
    assert r.metrics.delegation is None and delegation_text(None) == ""

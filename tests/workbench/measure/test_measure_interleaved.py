"""measure_latency_interleaved: models timed in alternating rounds in one run."""

from __future__ import annotations

import pytest

from workbench.errors import WorkbenchError
from workbench.measure import measure_latency_interleaved, runtime


def test_rounds_alternate_the_order_of_the_models(tmp_path, models, monkeypatch):
    order: list[str] = []

    class Recording:
        """A real session that notes each run under its model's name."""

        def __init__(self, session, name):
            self.session, self.name = session, name

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, outputs, feed):
            order.append(self.name)
            return self.session.run(outputs, feed)

    paths = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for p in paths:
        models.write_linear(p, 4, 3)
    names = iter("AB")
    real_make = runtime.make_session
    monkeypatch.setattr(
        runtime, "make_session", lambda *a, **k: Recording(real_make(*a, **k), next(names))
    )
    timing = measure_latency_interleaved(paths, warmup=0, rounds=4, min_runs=4, min_seconds=0)
    per_round = runtime.MIN_RUNS_PER_ROUND
    # A, B / B, A / A, B / B, A: each model goes first in every other round.
    assert order == [m for block in "ABBAABBA" for m in block * per_round]
    assert [len(r) for r in timing.round_p50] == [4, 4]
    for stats, p50s in zip(timing.latency, timing.round_p50, strict=True):
        assert stats.n == 4 * per_round and stats.rounds == 4
        assert min(p50s) <= stats.p50_low <= stats.p50_high <= max(p50s)
    assert timing.preempted_share >= 0


def test_models_with_different_inputs_are_timed_side_by_side(tmp_path, models):
    """A distilled student and its teacher take different inputs: one shape per model."""
    small, large = models.write_linear(tmp_path / "s.onnx", 4, 3), tmp_path / "l.onnx"
    models.write_linear(large, 16, 3)
    for shapes in ([(1, 4), (1, 16)], [(2, 4), None]):
        timing = measure_latency_interleaved(
            [small, large], input_shapes=shapes, warmup=0, rounds=2, min_runs=2, min_seconds=0
        )
        assert [s.rounds for s in timing.latency] == [2, 2]
    with pytest.raises(WorkbenchError, match="1 input shape"):
        measure_latency_interleaved([small, large], input_shapes=[(1, 4)])
    with pytest.raises(WorkbenchError, match="input_shape too"):
        measure_latency_interleaved([small, large], (1, 4), input_shapes=[(1, 4), (1, 16)])


def test_bad_requests_are_refused(tmp_path, models):
    path = tmp_path / "a.onnx"
    models.write_linear(path, 4, 3)
    with pytest.raises(WorkbenchError, match="rounds=0"):
        measure_latency_interleaved([path], rounds=0)
    with pytest.raises(WorkbenchError, match="0 model"):
        measure_latency_interleaved([])

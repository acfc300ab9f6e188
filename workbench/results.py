"""Result values: LatencyStats, SpeedComparison, NoiseCheck, Metrics, Result, Progress.

Frozen, with ``to_dict()``/``from_dict()`` (they round-trip through the cache's
``result.json``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.recipe import Recipe

__all__ = [
    "PROGRESS_STAGES",
    "LatencyStats",
    "MemoryStats",
    "Metrics",
    "NO_LATENCY",
    "NoiseCheck",
    "Progress",
    "Result",
    "RuntimeParity",
    "SpeedComparison",
    "delegation_text",
    "quartiles",
]


# What every view says in place of a latency for a variant measured in a runtime that
# times nothing here (TFLite Micro: its reference kernels on this machine say nothing
# about a microcontroller's speed). Defined once; the device estimate is the honest
# figure for a device's latency.
NO_LATENCY = "no latency measured: a microcontroller's time is not this machine's"


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """The 25th percentile, median and 75th percentile of ``values`` (linear interpolation)."""
    ordered = sorted(float(v) for v in values)
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0]
    low, mid, high = statistics.quantiles(ordered, n=4, method="inclusive")
    return low, mid, high


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of one inference (batch 1) in ONNX Runtime, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float
    n: int  # timed runs, after warm-up
    warmup: int  # untimed runs first
    threads: int  # intra-op threads of the session
    # Timing runs in rounds (interleaved with the models it is compared with): the
    # number of rounds and the middle half (25th-75th percentile) of the rounds' p50s,
    # the p50's uncertainty on a busy machine. None when timed in one round.
    rounds: int = 1
    p50_low: float | None = None
    p50_high: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        return cls(**d)


@dataclass(frozen=True)
class SpeedComparison:
    """A variant's speed against a reference model, both timed in the same run.

    The two ONNX Runtime sessions are timed in alternating rounds (A, B, B, A, ...), so
    a busy machine slows both alike and their ratio survives it. ``speedup`` is the
    median over rounds of (reference p50 / variant p50): above 1 the variant is faster.
    ``low``/``high`` are the 25th and 75th percentiles of the rounds' ratios.
    """

    reference: str  # "baseline", or "float" (the variant's PyTorch steps without quantization)
    reference_recipe: str  # the reference's recipe name
    speedup: float
    low: float
    high: float
    rounds: int
    round_speedups: tuple[float, ...] = ()
    variant_p50: float = 0.0  # ms, median over the rounds
    reference_p50: float = 0.0

    @classmethod
    def from_rounds(
        cls,
        reference: str,
        reference_recipe: str,
        variant_round_p50: Sequence[float],
        reference_round_p50: Sequence[float],
    ) -> SpeedComparison:
        """The comparison from the per-round p50s of the variant and its reference."""
        ratios = tuple(
            float(r) / float(v) for v, r in zip(variant_round_p50, reference_round_p50, strict=True)
        )
        low, mid, high = quartiles(ratios)
        return cls(
            reference=reference,
            reference_recipe=reference_recipe,
            speedup=mid,
            low=low,
            high=high,
            rounds=len(ratios),
            round_speedups=ratios,
            variant_p50=statistics.median(variant_round_p50),
            reference_p50=statistics.median(reference_round_p50),
        )

    @property
    def relative_spread(self) -> float:
        """Width of the middle half of the rounds' ratios, as a fraction of the median."""
        return (self.high - self.low) / self.speedup if self.speedup else float("inf")

    @property
    def slower_beyond_spread(self) -> bool:
        """True when even the upper quartile of the rounds says the variant is slower."""
        return self.high < 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["round_speedups"] = list(self.round_speedups)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SpeedComparison:
        d = dict(d)
        d["round_speedups"] = tuple(d.get("round_speedups", ()))
        return cls(**d)


@dataclass(frozen=True)
class NoiseCheck:
    """Whether a latency measurement was disturbed, with the figures that say so.

    A noisy result is kept, but not as final: the next ``evaluate`` of the same variant
    measures its latency again (on the cached artifact).
    """

    noisy: bool
    reasons: tuple[str, ...]  # one sentence per threshold exceeded
    spread: float  # relative width of the middle half of the rounds (ratio, else p50)
    preempted_share: float  # involuntary context switches of the timing thread per timed run
    load_average: float | None  # the 1-minute load average at the end of the timing
    usable_cores: int | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NoiseCheck:
        d = dict(d)
        d["reasons"] = tuple(d.get("reasons", ()))
        return cls(**d)


@dataclass(frozen=True)
class MemoryStats:
    """Peak memory of inference, measured in a fresh subprocess.

    ``peak_bytes`` is the process's peak resident set (VmHWM) minus its resident set
    just before the session was created: what loading and running the model added.
    ``process_peak_bytes`` is the whole process's peak, interpreter included.

    For TensorFlow Lite Micro, whose memory is one static block, ``peak_bytes`` and
    ``process_peak_bytes`` are the tensor arena the interpreter needs (``firmware_bytes``
    of ``Metrics.arena``) and ``baseline_bytes`` is 0.
    """

    peak_bytes: int
    process_peak_bytes: int
    baseline_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MemoryStats:
        return cls(**d)


@dataclass(frozen=True)
class RuntimeParity:
    """How closely a variant's file agrees with the same variant built for another runtime.

    Both files run on the same inputs (``basis``: the task's test split, else seeded
    random inputs), each in its own runtime, one input at a time; int8 outputs are
    dequantized first. ``top1_agreement`` is the share of inputs whose top-1 class is the
    same in both; ``max_abs_diff``/``mean_abs_diff`` compare their float outputs element
    by element. ``runtime``, ``key`` and ``artifact`` name the other variant (its cache
    entry), so a record whose partner was rebuilt is known to be stale.
    """

    runtime: str
    key: str
    artifact: str
    samples: int
    basis: str
    top1_agreement: float
    disagreements: int
    max_abs_diff: float
    mean_abs_diff: float

    def text(self) -> str:
        """One line: "matches onnxruntime: 100% top-1, max |Δ| 3.8e-06"."""
        top1 = "100%" if self.top1_agreement == 1.0 else f"{self.top1_agreement:.2%}"
        return f"matches {self.runtime}: {top1} top-1, max |\u0394| {self.max_abs_diff:.2g}"

    def detail(self) -> str:
        """What the line was measured on and against which file."""
        return (
            f"{self.disagreements} of {self.samples} top-1 predictions differ; mean |\u0394| "
            f"{self.mean_abs_diff:.2g}; on {self.basis}; against {self.artifact}"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RuntimeParity:
        return cls(**d)


def delegation_text(delegation: dict[str, Any] | None) -> str:
    """How the runtime ran the graph, in a few words ("" when not recorded):
    "XNNPACK took 9 of 9 nodes (1 partition)", with the operators it left out."""
    if not delegation:
        return ""
    name, nodes = delegation.get("delegate", "delegate"), delegation.get("nodes", 0)
    parts = delegation.get("xnnpack_partitions", 0)
    if not parts:
        return f"{name} not applied: all {nodes} nodes on the runtime's own kernels"
    text = (
        f"{name} took {delegation.get('delegated_nodes', 0)} of {nodes} nodes "
        f"({parts} partition{'s' if parts != 1 else ''})"
    )
    left = delegation.get("undelegated_ops") or {}
    if left:
        text += "; left on the runtime's kernels: " + ", ".join(
            f"{op} x{n}" for op, n in sorted(left.items())
        )
    return text


@dataclass(frozen=True)
class Metrics:
    """Everything measured on one exported artifact."""

    accuracy: float | None  # top-1 on the task's test split; None without a task
    agreement: float | None  # top-1 match rate with the uncompressed model's predictions
    agreement_basis: str  # what agreement was measured on, e.g. "540 test images"
    size_bytes: int  # the artifact's bytes on disk
    compressed_bytes: int  # the artifact deflate-compressed (zlib level 6, zip's default)
    params: int  # weight elements in the graph
    nonzero_params: int  # of which not zero
    macs: int  # multiply-accumulates of one batch-1 inference
    latency: LatencyStats | None  # None: the runtime times nothing here (see NO_LATENCY)
    memory: MemoryStats
    operator_ms: dict[str, float] = field(default_factory=dict)  # op type -> ms per inference
    parity_max_abs_diff: float | None = None  # ONNX vs PyTorch outputs, when exported here
    environment: dict[str, Any] = field(default_factory=dict)
    # Speed against the baseline (and, for a quantized variant with PyTorch steps, its
    # float version), timed interleaved in the same run; empty for the baseline.
    comparisons: tuple[SpeedComparison, ...] = ()
    noise: NoiseCheck | None = None
    # TensorFlow Lite Micro: its tensor arena as found by the interpreter
    # (workbench.runtimes.tflite_micro.ArenaReport.to_dict(): arena, activations and
    # persistent bytes, flash bytes, method); None for other runtimes.
    arena: dict[str, Any] | None = None
    # How the runtime ran the artifact: for LiteRT, the XNNPACK delegate's partitions and
    # the nodes it took (``workbench.runtimes.litert.Delegation.to_dict()``, see
    # delegation_text); None where the runtime has no delegate or it was not recorded.
    delegation: dict[str, Any] | None = None
    # Agreement with the same variant built for other runtimes (measured on both files
    # once both exist, see workbench.runtimes.parity.link_cross_runtime_parity).
    cross_runtime: tuple[RuntimeParity, ...] = ()

    @property
    def latency_measured(self) -> bool:
        """False for a runtime that times nothing here (TFLite Micro): show NO_LATENCY."""
        return self.latency is not None

    def parity_with(self, runtime: str) -> RuntimeParity | None:
        """The agreement with this variant built for ``runtime``, if measured."""
        return next((p for p in self.cross_runtime if p.runtime == runtime), None)

    def comparison(self, reference: str) -> SpeedComparison | None:
        """The comparison with ``reference`` ("baseline" or "float"), if measured."""
        return next((c for c in self.comparisons if c.reference == reference), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency"] = None if self.latency is None else self.latency.to_dict()
        d["memory"] = self.memory.to_dict()
        d["comparisons"] = [c.to_dict() for c in self.comparisons]
        d["noise"] = None if self.noise is None else self.noise.to_dict()
        d["cross_runtime"] = [p.to_dict() for p in self.cross_runtime]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Metrics:
        d = dict(d)
        d["latency"] = None if d.get("latency") is None else LatencyStats.from_dict(d["latency"])
        d["memory"] = MemoryStats.from_dict(d["memory"])
        d["comparisons"] = tuple(SpeedComparison.from_dict(c) for c in d.get("comparisons", ()))
        d["noise"] = None if d.get("noise") is None else NoiseCheck.from_dict(d["noise"])
        d["cross_runtime"] = tuple(RuntimeParity.from_dict(p) for p in d.get("cross_runtime", ()))
        return cls(**d)


@dataclass(frozen=True)
class Result:
    """One variant: the model, its recipe, the artifact it produced and what was measured."""

    model: str
    recipe: Recipe
    artifact: Path
    metrics: Metrics
    warnings: tuple[str, ...] = ()
    key: str = ""  # the cache key this result is stored under
    steps: tuple[dict, ...] = ()  # each step's own report (layers pruned, nodes quantized, ...)
    runtime: str = "onnxruntime"  # the runtime the artifact was built for and measured in

    @property
    def name(self) -> str:
        """The variant's name as its runtime words it (``int8-minmax-pc`` in ONNX Runtime,
        ``int8-full`` in LiteRT; see ``workbench.runtimes.recipe_name``)."""
        from workbench.runtimes import recipe_name

        return recipe_name(self.recipe, self.runtime)

    @property
    def noisy(self) -> bool:
        """True when its latency was measured on a disturbed machine (not final)."""
        return self.metrics.noise is not None and self.metrics.noise.noisy

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "recipe": self.recipe.to_dict(),
            "recipe_name": self.name,
            "artifact": str(self.artifact),
            "metrics": self.metrics.to_dict(),
            "warnings": list(self.warnings),
            "key": self.key,
            "steps": list(self.steps),
            "runtime": self.runtime,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        return cls(
            model=d["model"],
            recipe=Recipe.from_dict(d["recipe"]),
            artifact=Path(d["artifact"]),
            metrics=Metrics.from_dict(d["metrics"]),
            warnings=tuple(d.get("warnings", ())),
            key=d.get("key", ""),
            steps=tuple(d.get("steps", ())),
            # Results saved before runtimes had names were all measured in ONNX Runtime.
            runtime=d.get("runtime", "onnxruntime"),
        )


# The order in which ``evaluate(..., on_progress=...)`` reports a new variant's figures.
PROGRESS_STAGES = ("accuracy", "latency", "complete")


@dataclass(frozen=True)
class Progress:
    """What is known of a variant while it is measured (``evaluate``'s ``on_progress``).

    ``figures`` holds the Metrics fields measured so far, by field name (accuracy,
    agreement, sizes, params and MACs at the "accuracy" stage; latency, comparisons and
    noise at "latency"; memory and the operator profile at "complete"); ``pending``
    names the fields still to come.
    """

    stage: str  # one of PROGRESS_STAGES
    recipe: Recipe
    figures: dict[str, Any]
    pending: tuple[str, ...]

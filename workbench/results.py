"""Result values: LatencyStats, Metrics, Result. Frozen, with ``to_dict()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.recipe import Recipe

__all__ = ["LatencyStats", "MemoryStats", "Metrics", "Result"]


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        return cls(**d)


@dataclass(frozen=True)
class MemoryStats:
    """Peak memory of inference, measured in a fresh subprocess.

    ``peak_bytes`` is the process's peak resident set (VmHWM) minus its resident set
    just before the session was created: what loading and running the model added.
    ``process_peak_bytes`` is the whole process's peak, interpreter included.
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
class Metrics:
    """Everything measured on one exported artifact."""

    accuracy: float | None  # top-1 on the task's test split; None without a task
    agreement: float | None  # top-1 match rate with the uncompressed model's predictions
    agreement_basis: str  # what agreement was measured on, e.g. "540 test images"
    size_bytes: int  # the artifact's bytes on disk
    compressed_bytes: int  # the artifact deflate-compressed (zlib level 9)
    params: int  # weight elements in the graph
    nonzero_params: int  # of which not zero
    macs: int  # multiply-accumulates of one batch-1 inference
    latency: LatencyStats
    memory: MemoryStats
    operator_ms: dict[str, float] = field(default_factory=dict)  # op type -> ms per inference
    parity_max_abs_diff: float | None = None  # ONNX vs PyTorch outputs, when exported here
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["latency"] = self.latency.to_dict()
        d["memory"] = self.memory.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Metrics:
        d = dict(d)
        d["latency"] = LatencyStats.from_dict(d["latency"])
        d["memory"] = MemoryStats.from_dict(d["memory"])
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

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "recipe": self.recipe.to_dict(),
            "recipe_name": self.recipe.name,
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

"""Gradual magnitude pruning: sparsity raised over a schedule, fine-tuning between steps.

One-shot pruning to a high sparsity removes weights the network still relies on, with
nothing to take their work over (structured 50% one-shot on digits-resnet18 measured
9.6% accuracy). Pruning in steps (Zhu & Gupta 2017) lets fine-tuning after each step
move the function into the weights that remain before the next cut.

Unstructured steps prune to the schedule's *cumulative* sparsity: the weights already
zeroed have the lowest magnitude, so each global L1 step keeps them and adds more.
Structured steps remove channels physically, so step ``k`` removes the fraction
``1 - (1 - s_k) / kept`` of the channels that remain, ``kept`` being the fraction the
earlier steps actually left (channel counts are rounded, see ``PruneConfig.round_to``).

With ``macs_ratio`` the schedule is one of MACs kept (``GradualPruneConfig.macs_schedule``)
and each step's channel sparsity is searched (``search_structured_sparsity``) on the module
as the earlier steps left it, pruned and fine-tuned: fine-tuning re-ranks the channels, so
a channel sparsity found once on the float weights removes more MACs gradually than it
did one-shot (digits-resnet18: 0.393 of the MACs, not half). The last step must land
within ``MACS_TOLERANCE`` of the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from workbench.compress.finetune import finetune_
from workbench.compress.prune import prune_, search_structured_sparsity
from workbench.errors import WorkbenchError
from workbench.recipe import GradualPruneConfig

__all__ = ["MACS_TOLERANCE", "GradualPruneReport", "gradual_prune_"]

# Unstructured global pruning reaches its target exactly; below this it did not.
_REACHED = 1e-3
# How far (in fractions of the float MACs) a MACs-ratio schedule's last step may land
# from its target. Whole channels (multiples of round_to in wide layers) move the MACs
# in steps; the search ends within 0.01 of the MACs it was asked for where a channel
# count allows it.
MACS_TOLERANCE = 0.02


@dataclass(frozen=True)
class GradualPruneReport:
    """What each step of the schedule did and where the schedule ended."""

    method: str
    requested_sparsity: float | None
    achieved_sparsity: (
        float  # unstructured: exact; structured: product of the steps' kept fractions
    )
    weight_sparsity: float  # zero weights over all prunable weights after the last step
    schedule: tuple[float, ...]
    steps: tuple[dict, ...]  # per step: target, achieved, fine-tuning loss and train accuracy
    macs_before: int | None
    macs_after: int | None
    notes: tuple[str, ...]
    # Per prunable layer after the last step (LayerPruning.to_dict(): name, weights,
    # non-zeros, sparsity, why kept dense), to see which layers the schedule emptied.
    layers: tuple[dict, ...] = ()
    # With GradualPruneConfig.macs_ratio: the target (fraction of the float MACs kept)
    # and the per-step targets; requested_sparsity is then None.
    requested_macs_ratio: float | None = None
    macs_schedule: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = list(self.schedule)
        d["steps"] = list(self.steps)
        d["notes"] = list(self.notes)
        d["layers"] = list(self.layers)
        d["macs_schedule"] = list(self.macs_schedule)
        return d


def gradual_prune_(
    module: nn.Module, config: GradualPruneConfig, model: Any, teacher: Any | None = None
) -> GradualPruneReport:
    """Prune ``module`` in place over ``config``'s schedule, fine-tuning after each step.

    Args:
        module: the copy of the model's module to prune and train.
        config: the GradualPruneConfig.
        model: the Model the module came from (its task, preprocessing, example input).
        teacher: a Model to distil from while fine-tuning, or None.

    Raises:
        WorkbenchError: as prune_ and finetune_ do, when an unstructured schedule ends
            short of its sparsity, and when a MACs-ratio schedule ends further than
            MACS_TOLERANCE from its target.
    """
    by_macs = config.macs_ratio is not None
    schedule = config.macs_schedule() if by_macs else config.schedule_values()
    rows: list[dict] = []
    notes: list[str] = []
    kept = 1.0  # structured: fraction of prunable channels left
    macs_before = macs_after = None
    report = None
    for k, target in enumerate(schedule):
        row: dict = {}
        if by_macs:
            # The MACs this step must leave, as a ratio of the module's MACs now.
            wanted = target if macs_after is None else target * macs_before / macs_after
            step_sparsity = _sparsity_for_macs(module, config, model, wanted)
            row = {"target_macs": target, "step_sparsity": step_sparsity}
            if step_sparsity == 0.0:
                notes.append(
                    f"step {k + 1}: the earlier steps already left {macs_after / macs_before:.3f}"
                    f" of the MACs, at or below this step's {target:.3f}; nothing pruned"
                )
        elif config.method == "unstructured":
            step_sparsity = target
        else:
            # Of the channels left (as achieved, after rounding), remove what takes the
            # cumulative fraction kept down to 1 - target.
            step_sparsity = 1.0 - (1.0 - target) / kept
        report = prune_(module, config.step_config(step_sparsity), model.example_input())
        if config.method == "structured":
            kept *= 1.0 - report.achieved_sparsity
            macs_before = macs_before if macs_before is not None else report.macs_before
            macs_after = report.macs_after
            if by_macs:
                row["macs"] = macs_after / macs_before
        tuned = finetune_(module, config.finetune_config(k), model, teacher)
        achieved = report.achieved_sparsity if config.method == "unstructured" else 1.0 - kept
        rows.append(
            {
                # with macs_ratio: the cumulative channel sparsity the searched steps
                # reached (the MACs targets are in target_macs)
                "target": 1.0 - kept if by_macs else target,
                "achieved": achieved,
                **row,
                "train_loss": tuned.final_loss,
                "train_accuracy": tuned.final_train_accuracy,
            }
        )
        notes += [f"step {k + 1}: {note}" for note in report.notes]
    assert report is not None  # the config guarantees at least one step
    achieved = rows[-1]["achieved"]
    if config.method == "unstructured" and achieved < config.sparsity - _REACHED:
        raise WorkbenchError(
            f"the pruning schedule ended at sparsity {achieved:.3f}, short of the requested "
            f"{config.sparsity:g}",
            "lower the sparsity, or prune more layers (keep_first_last=False, fewer excludes)",
        )
    if by_macs and abs(rows[-1]["macs"] - config.macs_ratio) > MACS_TOLERANCE:
        raise WorkbenchError(
            f"the pruning schedule ended at {rows[-1]['macs']:.3f} of the MACs, more than "
            f"{MACS_TOLERANCE:g} from the requested {config.macs_ratio:g}: whole channels "
            "move the MACs in larger steps here",
            "use round_to=1 (exact channel counts), more steps, or another macs_ratio",
        )
    return GradualPruneReport(
        method=config.method,
        requested_sparsity=config.sparsity,  # None with macs_ratio
        achieved_sparsity=achieved,
        weight_sparsity=report.weight_sparsity,
        # with macs_ratio: the cumulative channel sparsity each searched step reached
        schedule=tuple(r["target"] for r in rows) if by_macs else schedule,
        steps=tuple(rows),
        macs_before=macs_before,
        macs_after=macs_after,
        notes=tuple(notes),
        layers=tuple(layer.to_dict() for layer in report.layers),
        requested_macs_ratio=config.macs_ratio,
        macs_schedule=schedule if by_macs else (),
    )


def _sparsity_for_macs(
    module: nn.Module, config: GradualPruneConfig, model: Any, wanted: float
) -> float:
    """The channel sparsity of ``module`` as it is now that leaves ``wanted`` of its MACs
    (0 when ``wanted`` is 1 or more: the earlier steps already went that far)."""
    if wanted >= 1.0:
        return 0.0
    found = search_structured_sparsity(
        module, model.example_input(), wanted, config=config.step_config(0.0)
    )
    return found.sparsity

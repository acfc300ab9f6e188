"""Fine-tuning after pruning, optionally distilled from a teacher model.

Pruning without retraining can cost a small model most of its accuracy (structured
pruning of digits-cnn at 50% measured 99.1% -> 64.6%); a few epochs on the task's
training part recover most of it. With a teacher (e.g. ``digits-resnet18``) the
student also learns the teacher's softened output distribution (Hinton et al.,
"Distilling the Knowledge in a Neural Network"): loss = alpha * T^2 * KL(teacher_T ||
student_T) + (1 - alpha) * cross-entropy. The teacher sees the same raw images through
its own preprocessing, so a 32x32 teacher can teach an 8x8 student.

Weights that pruning set to zero stay zero: their masks are re-applied after every
optimiser step, so the sparsity the recipe asked for survives fine-tuning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.errors import WorkbenchError

__all__ = ["FineTuneReport", "finetune_"]


@dataclass(frozen=True)
class FineTuneReport:
    """What fine-tuning did: epochs, samples, the last epoch's loss and training accuracy."""

    epochs: int
    samples: int
    teacher: str | None
    final_loss: float
    final_train_accuracy: float
    masked_tensors: int  # weight tensors whose pruned zeros were kept at zero

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _zero_masks(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask) for every conv/linear weight holding exact zeros (pruned weights)."""
    out = []
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            w = m.weight.data
            mask = w != 0
            if not bool(mask.all()):
                out.append((w, mask))
    return out


# Teacher logits by (weights fingerprint, task, preprocessing). A stacked recipe asks
# for the same teacher's logits once per gradual step and again for QAT: digits-resnet18
# over the training part is the costliest forward pass of such a run, repeated 5 times.
_TEACHER_LOGITS: dict[tuple, np.ndarray] = {}
_TEACHER_LOGITS_KEPT = 4


def teacher_logits(teacher: Any, task: Any) -> np.ndarray:
    """The teacher's logits on the task's training part, through its own preprocessing
    (computed once per teacher weights, task and preprocessing in a process)."""
    fingerprint = getattr(teacher, "fingerprint", None)
    key = (fingerprint, task.name, repr(teacher.preprocessing))
    if fingerprint is not None and key in _TEACHER_LOGITS:
        return _TEACHER_LOGITS[key].copy()
    x, _ = task.arrays("train", teacher.preprocessing)
    module = teacher.module.eval()
    with torch.no_grad():
        logits = torch.cat(
            [module(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)]
        ).numpy()
    if fingerprint is not None:
        while len(_TEACHER_LOGITS) >= _TEACHER_LOGITS_KEPT:
            _TEACHER_LOGITS.pop(next(iter(_TEACHER_LOGITS)))
        _TEACHER_LOGITS[key] = logits.copy()  # the caller may change its own copy
    return logits


def finetune_(
    module: nn.Module, config: Any, model: Any, teacher: Any | None = None
) -> FineTuneReport:
    """Train ``module`` in place on ``model``'s task training part for ``config.epochs``.

    Args:
        module: the (pruned) copy of the model's module to train.
        config: a FineTuneConfig.
        model: the Model the module came from (its task and preprocessing).
        teacher: a Model to distil from, or None.

    Raises:
        WorkbenchError: without a labelled task, or for a module that cannot train.
    """
    if model.task is None:
        raise WorkbenchError(
            f"fine-tuning {model.name} needs a labelled task to train on",
            "load the model with a task (e.g. task='digits' / --task digits), or leave fine-tuning out",
        )
    if model.source == "pt2":
        raise WorkbenchError(
            "a torch.export (.pt2) program cannot be trained",
            "fine-tune a sample, torchvision or state_dict model, or leave fine-tuning out",
        )
    params = [p for p in module.parameters() if p.is_floating_point()]
    if not params:
        raise WorkbenchError(f"{model.name} has no trainable parameters", "leave fine-tuning out")
    x, y = model.task.arrays("train", model.preprocessing)
    soft = None
    if teacher is not None:
        if teacher.task is None or teacher.task.name != model.task.name:
            raise WorkbenchError(
                f"the teacher {teacher.name} was not trained on the {model.task.name} task",
                "choose a teacher of the same task, e.g. digits-resnet18",
            )
        soft = torch.from_numpy(teacher_logits(teacher, model.task))
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    masks = _zero_masks(module)
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    steps = config.epochs * -(-len(xs) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=steps)
    t = config.temperature
    loss_sum = correct = seen = 0.0
    with _seeded(config.seed):
        module.train()
        try:
            for _ in range(config.epochs):
                order = torch.randperm(len(xs))
                loss_sum = correct = seen = 0.0
                for i in range(0, len(xs), config.batch_size):
                    idx = order[i : i + config.batch_size]
                    logits = module(xs[idx])
                    loss = nn.functional.cross_entropy(logits, ys[idx])
                    if soft is not None:
                        kd = nn.functional.kl_div(
                            nn.functional.log_softmax(logits / t, dim=1),
                            nn.functional.softmax(soft[idx] / t, dim=1),
                            reduction="batchmean",
                        ) * (t * t)
                        loss = config.alpha * kd + (1 - config.alpha) * loss
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    with torch.no_grad():
                        for w, mask in masks:
                            w.mul_(mask)
                    loss_sum += loss.item() * len(idx)
                    correct += float((logits.argmax(1) == ys[idx]).sum())
                    seen += len(idx)
        finally:
            module.eval()
    return FineTuneReport(
        epochs=config.epochs,
        samples=len(xs),
        teacher=None if teacher is None else teacher.name,
        final_loss=loss_sum / max(seen, 1),
        final_train_accuracy=correct / max(seen, 1),
        masked_tensors=len(masks),
    )

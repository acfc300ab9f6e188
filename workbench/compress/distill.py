"""Distillation on its own: a student architecture trained on a teacher's predictions.

The student is a sample model (e.g. digits-cnn taught by digits-resnet18), or the
model's own architecture at a channel ``width`` (MobileNetV2's ``width_mult``,
DigitsCNN's ``width``), from seeded random weights or from the student sample's own
weights. Training is finetune's loop with its distillation loss; the teacher sees the
task's images through its own preprocessing, the student through its own, so a 32x32
teacher can teach an 8x8 student.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from workbench.compress.finetune import FineTuneReport, finetune_
from workbench.errors import WorkbenchError
from workbench.recipe import DistillConfig

__all__ = ["check_student", "distill_", "student_model"]


def _arch_of(model: Any) -> tuple[str, dict] | None:
    """The registered architecture string and kwargs a model was built from, if known."""
    arch = model.meta.get("arch") if isinstance(model.meta, dict) else None
    if isinstance(arch, str):
        return arch, dict(model.meta.get("arch_kwargs") or {})
    if isinstance(model.name, str) and model.name.startswith("torchvision:"):
        return model.name, {}
    return None


def student_model(model: Any, config: DistillConfig) -> Any:
    """The student as a Model: its module (untrained unless ``init="pretrained"``), input
    shape, preprocessing and task.

    Raises:
        WorkbenchError: an unknown student, or a width on an architecture without one.
    """
    from sample_models.architectures import WIDTH_KWARGS, build_architecture
    from workbench.models import load_model
    from workbench.models.model import RANDOM_INIT_SEED, weights_fingerprint

    if config.student:
        base = load_model(config.student, pretrained=config.init == "pretrained")
    else:
        if model.module is None:
            raise WorkbenchError(
                f"{model.name} has no PyTorch architecture to build a student from",
                "name a student sample, e.g. student='digits-cnn' (CLI --student digits-cnn)",
            )
        base = model
    if config.width == 1.0 and config.student:
        return base
    arch = _arch_of(base)
    if arch is None or (config.width != 1.0 and arch[0] not in WIDTH_KWARGS):
        widths = ", ".join(sorted(WIDTH_KWARGS))
        raise WorkbenchError(
            f"the architecture of {base.name} takes no width multiplier",
            f"choose a student sample built on one that does ({widths}), e.g. "
            "student='digits-mobilenetv2' with width=0.5, or keep width=1",
        )
    kwargs = dict(arch[1])
    if config.width != 1.0:
        kwargs[WIDTH_KWARGS[arch[0]]] = config.width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED + config.seed)
        module = build_architecture(arch[0], **kwargs).float().eval()
    return dataclasses.replace(
        base, module=module, fingerprint=weights_fingerprint(module), meta=dict(base.meta)
    )


def _classes(model: Any) -> int:
    with torch.no_grad():
        out = model.module.eval()(model.example_input())
    return int(out.reshape(out.shape[0], -1).shape[1])


def check_student(model: Any, config: DistillConfig, teacher: Any) -> Any:
    """The student Model, after checking it can learn from ``teacher``.

    Raises:
        WorkbenchError: the student's output classes differ from the teacher's, or the
            two are not on the same labelled task.
    """
    student = student_model(model, config)
    if teacher.module is None:
        raise WorkbenchError(
            f"the teacher {teacher.name} is not a PyTorch module", "teach from a PyTorch model"
        )
    ours, theirs = _classes(student), _classes(teacher)
    if ours != theirs:
        raise WorkbenchError(
            f"the student {student.name} outputs {ours} classes, the teacher {teacher.name} {theirs}",
            "choose a student with the teacher's classes (the same task's sample models)",
        )
    if student.task is None or teacher.task is None or student.task.name != teacher.task.name:
        raise WorkbenchError(
            f"the student {student.name} and the teacher {teacher.name} are not on one labelled task",
            "distil between models of the same task, e.g. digits-cnn from digits-resnet18",
        )
    return student


def distill_(module: torch.nn.Module, config: DistillConfig, student: Any, teacher: Any) -> dict:
    """Train the student's ``module`` in place on the teacher's softened predictions."""
    report: FineTuneReport = finetune_(module, config.finetune_config(), student, teacher)
    return {
        "student": student.name,
        "width": config.width,
        "init": config.init,
        "student_params": sum(p.numel() for p in module.parameters()),
        **report.to_dict(),
    }

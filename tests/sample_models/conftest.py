"""Fixtures shared by the sample-model tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def training_reads(monkeypatch) -> list[bool]:
    """For every read of a task's training part, whether that task leaves the search's
    validation images out (the training scripts must only read such a task)."""
    from workbench.data.digits import Task

    reads: list[bool] = []
    raw = Task.raw

    def spy(task, part):
        if part == "train":
            reads.append(task.excludes_validation)
        return raw(task, part)

    monkeypatch.setattr(Task, "raw", spy)
    return reads

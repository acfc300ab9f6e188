"""Tasks and datasets: splits, preprocessing and calibration sets."""

from workbench.data.digits import DIGITS, Preprocessing, Task, get_task

__all__ = ["DIGITS", "Preprocessing", "Task", "get_task"]

"""The one exception type the workbench raises for bad input.

Every message names the problem and the fix, so the CLI can print it as one line
and the panels can show it as it is.
"""

from __future__ import annotations

__all__ = ["WorkbenchError"]


class WorkbenchError(ValueError):
    """Bad input or an unsupported request: ``problem`` and ``fix`` are both shown.

    Args:
        problem: what is wrong, naming the offending value or file.
        fix: what the user should do instead.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")
        super().__init__(f"{self.problem}. {self.fix}." if self.fix else f"{self.problem}.")

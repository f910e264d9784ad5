"""The default executor: every cell in this process, one after another (progress bars included)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from . import Done, Executor

if TYPE_CHECKING:
    from ..execute import CellRunner, Environment
    from ..runner import Cell


class LocalExecutor(Executor):
    name = "local"
    description = "in this process, one cell after another"

    def run(self, cells: Iterable["Cell"], environment: "Environment", done: Done, local: "CellRunner") -> None:
        for cell in cells:
            done(cell, local.outcome(cell))

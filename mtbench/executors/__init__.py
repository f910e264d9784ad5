"""Executors decide where cells run; the driver decides what runs and alone writes the results store.

An executor is a plugin registered through the ``register_executors`` hook (``register(MyExecutor)``, its
``name`` is what ``--executor`` takes). Its :meth:`Executor.run` pulls cells from an iterable as it has
room for them (the driver locks each cell as it hands it over) and reports each cell's :class:`Outcome`
through ``done`` in the driver's thread. Built-ins: ``local`` (in this process), ``processes`` (worker
processes on this machine) and ``ray`` (tasks on a Ray cluster).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from ..errors import MtbenchError

if TYPE_CHECKING:
    from ..execute import CellRunner, Environment, Outcome
    from ..runner import Cell

Done = Callable[["Cell", "Outcome"], None]


class Executor:
    """Base class of executors: ``jobs`` cells at a time (where the executor has a notion of it)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, jobs: int = 1, address: str | None = None, **options: Any) -> None:
        if jobs < 1:
            raise MtbenchError(f"--jobs must be at least 1, got {jobs}")
        self.jobs, self.address, self.options = jobs, address, options

    def run(self, cells: Iterable["Cell"], environment: "Environment", done: Done, local: "CellRunner") -> None:
        """Execute ``cells`` and call ``done(cell, outcome)`` for each; ``local`` runs cells in this process."""
        raise NotImplementedError


def split_threads(total: int, jobs: int) -> int:
    """Torch threads per worker so that ``jobs`` workers share ``total`` threads without oversubscribing."""
    return max(1, total // max(1, jobs))

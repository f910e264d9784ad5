"""Progress reporting: rich bars in a terminal, one line per finished step when piped, silence in tests."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class Reporter:
    """Hands out progress tasks; ``enabled=False`` gives no-op tasks."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None

    def __enter__(self) -> "Reporter":
        if self.live:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=self.console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1, status="")``."""
        if self._progress is not None:
            task_id = self._progress.add_task(description, total=total, status="")
            yield lambda n=1, status="": self._progress.update(task_id, advance=n, status=status)
            return
        if not self.enabled:
            yield lambda n=1, status="": None
            return
        last = {"status": ""}
        start = time.perf_counter()

        def advance(n: int = 1, status: str = "") -> None:
            last["status"] = status or last["status"]
        yield advance
        self.log(f"{description}: {total} steps in {time.perf_counter() - start:.1f}s {last['status']}")

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.log(message)
        elif self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True)

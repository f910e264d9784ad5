"""Progress reporting: a suite bar above the per-task bars in a terminal, heartbeat lines when piped.

A long run is often not watched in a terminal (``nohup``, SLURM, CI logs). There, nothing would be
printed until a task ends, so a 14-minute MAML fit would be 14 silent minutes; instead a background
heartbeat prints, at least every ``heartbeat_s`` seconds (30 by default), the cell (i of N), the task,
its step, its last status (the training loss) and the estimated time left. In a terminal the same
information is a rich bar for the suite above one bar per task. ``enabled=False`` is silence (tests,
``--quiet``).

The driver calls::

    with reporter.suite(len(cells)) as suite:
        for cell in cells:
            suite.next_cell(cell.run_id)
            ...  # fit and evaluate; they open reporter.task(...) bars and call advance(n, status=...)
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

HEARTBEAT_S = 30.0


def format_seconds(seconds: float | None) -> str:
    """'1:02:03', '4:05' or '?' (unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta(elapsed: float, done: float, total: float) -> float | None:
    """Time left if the remaining work goes at the pace so far (None before any work is done)."""
    if done <= 0 or total <= 0:
        return None
    return elapsed / done * max(total - done, 0)


@dataclass
class _TaskState:
    description: str
    total: int
    start: float
    step: int = 0
    status: str = ""


@dataclass
class _SuiteState:
    total: int
    start: float
    index: int = 0  # 1-based number of the cell being run; 0 before the first
    label: str = ""
    cell_start: float = 0.0
    finished_s: list[float] = field(default_factory=list)


class SuiteProgress:
    """Handed out by :meth:`Reporter.suite`; ``next_cell(label)`` starts the next cell."""

    def __init__(self, reporter: "Reporter", total: int) -> None:
        self._reporter = reporter
        self.state = _SuiteState(total, reporter.clock())

    def next_cell(self, label: str) -> None:
        self._reporter._next_cell(self, label)

    def eta_s(self) -> float | None:
        """Suite time left: mean seconds of the finished cells times the cells left (this one included)."""
        s = self.state
        if not s.finished_s:
            return None
        return sum(s.finished_s) / len(s.finished_s) * (s.total - len(s.finished_s))


class _NoSuite:
    def next_cell(self, label: str) -> None:
        pass


class Reporter:
    """Hands out progress tasks; ``enabled=False`` gives no-op tasks and no suite bar."""

    def __init__(self, enabled: bool = True, console: Console | None = None, heartbeat_s: float = HEARTBEAT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self._progress: Progress | None = None
        self._suite: SuiteProgress | None = None
        self._suite_task: int | None = None
        self._tasks: list[_TaskState] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_line = 0.0

    def __enter__(self) -> "Reporter":
        if self.live:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=self.console, transient=False)
            self._progress.__enter__()
        elif self.enabled and self.heartbeat_s > 0:
            self._stop.clear()
            self._last_line = self.clock()
            self._thread = threading.Thread(target=self._beat, name="mtbench-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    # -- the suite level ---------------------------------------------------------------------------------
    @contextmanager
    def suite(self, total: int) -> Iterator[SuiteProgress | _NoSuite]:
        """A bar over the suite's cells (cell i of N, ETA); yields an object with ``next_cell(label)``."""
        if not self.enabled:
            yield _NoSuite()
            return
        progress = SuiteProgress(self, total)
        self._suite = progress
        if self._progress is not None:
            self._suite_task = self._progress.add_task("suite", total=total, status="")
        try:
            yield progress
        finally:
            self._finish_cell(progress)
            if self._progress is not None and self._suite_task is not None:
                self._progress.update(self._suite_task, completed=len(progress.state.finished_s),
                                      description=f"suite: {len(progress.state.finished_s)} of {total} cells")
            self._suite, self._suite_task = None, None

    def _finish_cell(self, progress: SuiteProgress) -> None:
        s = progress.state
        if s.index and len(s.finished_s) < s.index:
            s.finished_s.append(self.clock() - s.cell_start)

    def _next_cell(self, progress: SuiteProgress, label: str) -> None:
        with self._lock:
            self._finish_cell(progress)
            s = progress.state
            s.index, s.label, s.cell_start = s.index + 1, label, self.clock()
        if self._progress is not None and self._suite_task is not None:
            self._progress.update(self._suite_task, completed=len(s.finished_s),
                                  description=f"cell {s.index}/{s.total} {label}")
        else:
            self.log(f"cell {s.index}/{s.total}: {label} (suite ETA {format_seconds(progress.eta_s())})")

    # -- tasks -------------------------------------------------------------------------------------------
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
        state = _TaskState(description, total, self.clock())

        def advance(n: int = 1, status: str = "") -> None:
            state.step += n
            state.status = status or state.status
        with self._lock:
            self._tasks.append(state)
        try:
            yield advance
        finally:
            with self._lock:
                self._tasks.remove(state)
        self.log(f"{description}: {state.step} of {total} steps in {self.clock() - state.start:.1f}s {state.status}")

    # -- heartbeat ---------------------------------------------------------------------------------------
    def heartbeat_line(self) -> str | None:
        """What is running now: cell i/N, task, step, status and ETAs (None when nothing runs)."""
        with self._lock:
            task = self._tasks[-1] if self._tasks else None
            suite = self._suite
            parts = []
            if suite is not None and suite.state.index:
                s = suite.state
                parts.append(f"cell {s.index}/{s.total} {s.label}")
            if task is not None:
                now = self.clock()
                parts.append(f"{task.description}: step {task.step}/{task.total}"
                             + (f", {task.status}" if task.status else "")
                             + f", ETA {format_seconds(eta(now - task.start, task.step, task.total))}")
            elif parts:
                parts.append(f"working for {format_seconds(self.clock() - suite.state.cell_start)}")
            if suite is not None and suite.state.index:
                parts.append(f"suite ETA {format_seconds(suite.eta_s())}")
        return " | ".join(parts) if parts else None

    def _beat(self) -> None:
        while not self._stop.wait(min(self.heartbeat_s, 1.0)):
            if self.clock() - self._last_line < self.heartbeat_s:
                continue
            line = self.heartbeat_line()
            if line:
                self.log(f"heartbeat: {line}")
            else:
                self._last_line = self.clock()

    def log(self, message: str) -> None:
        self._last_line = self.clock()
        if self._progress is not None:
            self._progress.console.log(message)
        elif self.enabled:
            self.console.print(message, highlight=False, soft_wrap=True)

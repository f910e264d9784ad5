"""The driver: checks a run up front, hands cells to an executor, stores their results and reports.

Only the driver reads and writes the results store. Before any training it stamps every cell with what
its keys must notice (code versions, device kind, data fingerprint), skips cells already done, checks the
results folder is writable and every pending cell's data and protocol (each bad request is one line and
exit 2). Then:

* each cell is locked while it runs (``<results>/.locks``, an OS file lock: the kernel releases it when
  its holder dies, even by kill -9), so two runs over one results folder never train the same cell: a cell
  locked by another run is waited for at the end and skipped when that run stored it;
* a failing cell is reported in one line, its traceback saved beside the results
  (``<suite>/<run_id>.failed.txt``), and the other cells go on; the summary lists the failures;
* Ctrl-C stops the run; every stored cell is kept and the same command resumes.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from filelock import FileLock, Timeout

from .environment import environment_info
from .execute import CellRunner, Environment, Outcome
from .executors.local import LocalExecutor

if TYPE_CHECKING:
    from .executors import Executor
    from .plugins import Plugins
    from .results import ResultStore
    from .runner import Cell

LOCKS = ".locks"


@dataclass
class RunSummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, one-line error)
    interrupted: bool = False


class Driver:
    """Runs cells through an executor (default: in this process) and alone writes the results store."""

    def __init__(self, plugins: "Plugins", store: "ResultStore", environment: Environment,
                 executor: "Executor | None" = None, reporter: Any = None,
                 on_result: Callable[[Path], None] | None = None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.plugins, self.store, self.env = plugins, store, environment
        self.executor = executor or LocalExecutor()
        self.local = CellRunner(plugins, environment, reporter)
        self.reporter = reporter
        self._suite: Any = None
        self.on_result, self.on_failure = on_result, on_failure
        self._environment: dict[str, Any] | None = None
        self._locks: dict[str, FileLock] = {}

    def environment(self) -> dict[str, Any]:
        """The machine and code of this run, recorded once when it starts (stored with every result)."""
        if self._environment is None:
            self._environment = environment_info(self.env.torch_device, self.plugins)
        return self._environment

    def run(self, cells: list["Cell"], force: bool = False) -> RunSummary:
        summary = RunSummary()
        memo: dict[str, Any] = {}
        cells = [self.local.stamp(cell, memo) for cell in cells]  # code, device and data are part of each key
        pending = []
        for cell in cells:
            if not force and (self.store.has(cell.suite, cell.run_id) or self._legacy_done(cell)):
                summary.skipped.append(cell.run_id)
            else:
                pending.append(cell)
        if pending:
            self.store.check_writable()
        for cell in pending:  # every bad request fails before any training starts
            self.local.check(cell)
        if pending:
            self.environment()  # the code (git commit) that trains is the code at the start of the run
        suite_bar = self.reporter.suite(len(pending)) if pending and hasattr(self.reporter, "suite") else nullcontext()
        try:
            with suite_bar as self._suite:
                self.executor.run(self._claim(pending, force, summary), self.env,
                                  lambda cell, outcome: self._done(cell, outcome, summary), self.local)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            for run_id in list(self._locks):
                self._release(run_id)
        return summary

    def _legacy_done(self, cell: "Cell") -> bool:
        """A result stored before keys held code versions (same cell otherwise) is kept as done: its code is
        unknown, which the leaderboard shows; --force runs the cell with today's code."""
        run = self.store.load_one(cell.suite, cell.legacy_run_id)
        return run is not None and "code_versions" not in run["spec"]

    # -- locks --------------------------------------------------------------------------------------
    def _lock(self, cell: "Cell") -> FileLock:
        path = self.store.root / LOCKS / cell.suite / f"{cell.run_id}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path), thread_local=False)

    def _release(self, run_id: str) -> None:
        lock = self._locks.pop(run_id, None)
        if lock is not None:
            lock.release()

    def _claim(self, pending: list["Cell"], force: bool, summary: RunSummary) -> Iterator["Cell"]:
        """Hand over each cell once it is locked by this run; cells another run holds come last."""
        waiting = []
        for cell in pending:
            lock = self._lock(cell)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                waiting.append((cell, lock))
                continue
            if self._take(cell, lock, redo=force, summary=summary):
                yield cell
        for cell, lock in waiting:  # another run is training these: wait for it, then use what it stored
            lock.acquire()
            if self._take(cell, lock, redo=False, summary=summary):
                yield cell

    def _take(self, cell: "Cell", lock: FileLock, redo: bool, summary: RunSummary) -> bool:
        """Keep the lock and start the cell, or release it when the cell was stored meanwhile (and not redone)."""
        if not redo and self.store.has(cell.suite, cell.run_id):
            lock.release()
            summary.skipped.append(cell.run_id)
            return False
        self._locks[cell.run_id] = lock
        self._started(cell)
        return True

    def _started(self, cell: "Cell") -> None:
        """Suite-level progress (cell i of N, ETA): a cell starts when it is handed to the executor."""
        if self._suite is not None:
            self._suite.next_cell(f"{cell.algorithm} {cell.dataset.display_label} {cell.n_way}w{cell.k_shot}s "
                                  f"seed {cell.seed}")

    # -- outcomes -----------------------------------------------------------------------------------
    def _done(self, cell: "Cell", outcome: Outcome, summary: RunSummary) -> None:
        failure = self.store.root / cell.suite / f"{cell.run_id}.failed.txt"
        try:
            if outcome.payload is not None:
                environment = {**self.environment(), "executor": self.executor.name, **(
                    {"worker": outcome.worker} if outcome.worker else {})}
                try:
                    path = self.store.save(cell.suite, cell.run_id, {**outcome.payload, "environment": environment})
                except (ValueError, OSError) as exc:  # a non-finite number in the payload; a full disk
                    outcome = Outcome.failure(exc)
                else:
                    failure.unlink(missing_ok=True)
                    summary.done.append(path)
                    if self.on_result:
                        self.on_result(path)
            if outcome.payload is None or outcome.error:
                try:
                    failure.parent.mkdir(parents=True, exist_ok=True)
                    failure.write_text(f"{cell.run_id}\n{outcome.error}\n\n{outcome.traceback}")
                except OSError:  # the failure is still reported and listed at the end
                    pass
                summary.failed.append((cell.run_id, outcome.error))
                if self.on_failure:
                    self.on_failure(f"failed {cell.run_id}: {outcome.error} (traceback in {failure})")
        finally:
            self._release(cell.run_id)


def failed_lines(summary: RunSummary) -> Iterable[str]:
    """One line per failed cell, for the end of a run."""
    for run_id, error in summary.failed:
        yield f"  {run_id}: {error}"

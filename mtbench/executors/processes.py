"""``--executor processes --jobs N``: N worker processes on this machine, one cell each at a time.

Workers are started with ``spawn`` (a clean interpreter: no forked torch thread pools) and set their torch
threads before any torch work, splitting this process's threads between them (two jobs with default
threads each would oversubscribe the cores badly). Each worker has its own pipe, so a worker that dies
(killed, out of memory) loses only the cell it was running: that cell is reported failed, a new worker
takes its place and the other cells go on. Results are identical to ``local``: the same cells with the
same seeds, and each cell seeds its own randomness.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch

from . import Done, Executor, split_threads

if TYPE_CHECKING:
    from ..execute import CellRunner, Environment
    from ..runner import Cell


def _worker(environment: "Environment", conn: Connection, threads: int) -> None:
    """A worker's loop: receive a cell, send back its outcome, until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it stops the workers and keeps results
    torch.set_num_threads(threads)
    from ..execute import worker_runner

    runner = worker_runner(environment)
    while True:
        try:
            cell = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if cell is None:
            return
        conn.send(runner.outcome(cell))


class _Worker:
    def __init__(self, ctx: Any, environment: "Environment", threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(environment, child, threads), daemon=True)
        self.process.start()
        child.close()
        self.cell: "Cell | None" = None

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(5)
        self.conn.close()


class ProcessesExecutor(Executor):
    name = "processes"
    description = "--jobs N worker processes on this machine, torch threads split between them"

    def run(self, cells: Iterable["Cell"], environment: "Environment", done: Done, local: "CellRunner") -> None:
        from ..execute import Outcome

        ctx = mp.get_context("spawn")
        threads = split_threads(torch.get_num_threads(), self.jobs)
        todo: Iterator["Cell"] = iter(cells)
        workers = [_Worker(ctx, environment, threads) for _ in range(self.jobs)]
        try:
            for worker in workers:
                self._hand(worker, todo)
            while any(w.cell is not None for w in workers):
                busy = [w for w in workers if w.cell is not None]
                ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for i, worker in enumerate(workers):
                    if worker.cell is None or (worker.conn not in ready and worker.process.sentinel not in ready):
                        continue
                    cell, worker.cell = worker.cell, None
                    try:
                        outcome = worker.conn.recv()
                    except (EOFError, OSError):  # the worker died mid-cell: only this cell is lost
                        worker.process.join(5)
                        outcome = Outcome(error=f"worker process {worker.process.pid} died while running this cell "
                                                f"(exit code {worker.process.exitcode}); the next run redoes it")
                        worker.stop()
                        workers[i] = worker = _Worker(ctx, environment, threads)
                    done(cell, outcome)
                    self._hand(worker, todo)
        finally:
            for worker in workers:
                if worker.cell is None and worker.process.is_alive():
                    try:
                        worker.conn.send(None)
                    except OSError:
                        pass
                worker.stop()

    @staticmethod
    def _hand(worker: _Worker, todo: Iterator["Cell"]) -> None:
        cell = next(todo, None)
        if cell is not None:
            worker.cell = cell
            worker.conn.send(cell)

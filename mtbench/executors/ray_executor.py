"""``--executor ray --address auto|HOST:PORT``: cells as Ray tasks on an existing Ray cluster.

Each cell asks for ``num_cpus`` (its torch threads, ``--jobs``-independent: 1 by default) and one GPU when
the run's device is CUDA. A task returns the cell's outcome to the driver, which alone writes the results
store, so the cluster needs no shared results folder (data and the fit cache paths must be reachable from
the nodes: a shared file system, or a single machine). Ray is an optional extra: ``pip install mtbench[ray]``.
"""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import MtbenchError
from . import Done, Executor

if TYPE_CHECKING:
    from ..execute import CellRunner, Environment, Outcome
    from ..runner import Cell


def _execute_task(cell: "Cell", environment: "Environment", threads: int) -> "Outcome":
    """Runs on a Ray worker: the same :class:`~mtbench.execute.CellRunner` a local run uses."""
    import torch

    from ..execute import worker_runner

    torch.set_num_threads(threads)
    return worker_runner(environment).outcome(cell)


def reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast (one line) when HOST:PORT does not answer: ``ray.init`` would retry for minutes."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise MtbenchError(f"cannot connect to a Ray cluster at {address} ({exc}); start one with "
                           f"`ray start --head --port PORT` or pass --address auto") from None


class RayExecutor(Executor):
    name = "ray"
    description = "tasks on a Ray cluster (--address auto or HOST:PORT); pip install mtbench[ray]"

    def resources(self, environment: "Environment") -> dict[str, Any]:
        cpus = int(self.options.get("cpus_per_cell", 1))
        gpus = 1 if environment.device.startswith("cuda") else 0
        return {"num_cpus": cpus, "num_gpus": gpus}

    def run(self, cells: Iterable["Cell"], environment: "Environment", done: Done, local: "CellRunner") -> None:
        try:
            import ray
        except ImportError:
            raise MtbenchError("--executor ray needs Ray: pip install 'mtbench[ray]'") from None
        from ..execute import Outcome

        reachable(self.address)
        try:
            ray.init(address=self.address or "auto", log_to_driver=False, logging_level="ERROR",
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MtbenchError(f"cannot connect to a Ray cluster at {self.address or 'auto'} "
                               f"({str(exc).splitlines()[0]}); start one with `ray start --head`") from None
        try:
            resources = self.resources(environment)
            task = ray.remote(_execute_task).options(**resources, max_retries=0)
            room = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, resources["num_cpus"]))
            todo = iter(cells)
            pending: dict[Any, "Cell"] = {}
            while True:
                while len(pending) < room:  # hand over only what the cluster can start (cells are locked)
                    cell = next(todo, None)
                    if cell is None:
                        break
                    pending[task.remote(cell, environment, resources["num_cpus"])] = cell
                if not pending:
                    break
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died or the task could not run
                        outcome = Outcome(error=f"Ray task failed: {str(exc).splitlines()[0]}; the next run redoes it")
                    done(cell, outcome)
        finally:
            ray.shutdown()

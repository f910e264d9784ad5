"""The built-in executors, registered through the same hook a third-party executor implements."""
from __future__ import annotations

from ..hookspecs import hookimpl
from .local import LocalExecutor
from .processes import ProcessesExecutor
from .ray_executor import RayExecutor


@hookimpl
def register_executors(register):
    for executor in (LocalExecutor, ProcessesExecutor, RayExecutor):
        register(executor)

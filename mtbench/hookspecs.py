"""The hooks a plugin may implement. Each ``register_*`` hook receives a ``register`` callback.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, for example::

    from mtbench import hookimpl

    @hookimpl
    def register_algorithms(register):
        register(MyAlgorithm)
"""
from __future__ import annotations

from typing import Any, Callable

from pluggy import HookimplMarker, HookspecMarker

PROJECT = "mtbench"
hookspec = HookspecMarker(PROJECT)
hookimpl = HookimplMarker(PROJECT)


@hookspec
def register_algorithms(register: Callable[..., None]) -> None:
    """Register Algorithm subclasses: ``register(cls)``; ``cls.name`` is the id."""


@hookspec
def register_datasets(register: Callable[..., None]) -> None:
    """Register Dataset subclasses: ``register(cls)``; ``cls.name`` is the id."""


@hookspec
def register_metrics(register: Callable[..., None]) -> None:
    """Register per-episode metrics: ``register(Metric(name, fn, task=...))``."""


@hookspec
def register_suites(register: Callable[..., None]) -> None:
    """Register protocol suites: ``register(suite)`` with a Suite or a path to a TOML file."""


@hookspec
def register_backbones(register: Callable[..., None]) -> None:
    """Register feature extractors: ``register(name, builder)``; builder(in_shape) -> nn.Module."""


@hookspec
def register_renderers(register: Callable[..., None]) -> None:
    """Register leaderboard formats: ``register(Renderer(name, suffix, render))``; ``render(lb) -> str | bytes``."""


@hookspec
def register_executors(register: Callable[..., None]) -> None:
    """Register where cells run: ``register(cls)``, an :class:`mtbench.executors.Executor` subclass; ``cls.name``
    is what ``--executor`` takes."""


@hookspec
def update_environment_info(info: dict[str, Any]) -> None:
    """Add keys (GPU model, cluster job id, ...) to the environment saved with every result."""

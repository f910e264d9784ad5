"""Build a fresh plugin manager on call: entry points, named modules, block list.

Nothing registers at import time. ``load_plugins()`` returns a :class:`Plugins` whose registries are
filled lazily by calling each ``register_*`` hook implementation with a callback that knows which
plugin (and which distribution) is registering, so duplicates can name both providers.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable

import pluggy

from . import __version__, hookspecs
from .errors import MtbenchError, PluginLoadError
from .registry import Registry

ENTRY_POINT_GROUP = "mtbench"
ENV_LOAD = "MTBENCH_PLUGINS"  # extra plugin modules, comma separated
ENV_BLOCK = "MTBENCH_DISABLE_PLUGINS"  # plugin names to skip, comma separated
# Core behaviour that is itself a plugin (pytest's "default plugins"): registered before any entry point,
# through the same hooks a third party implements, and versioned with mtbench itself.
DEFAULT_PLUGINS = tuple(f"mtbench.renderers.{m}" for m in (
    "terminal", "markdown", "csv_file", "json_file", "latex", "html_report")) + ("mtbench.executors.builtin",)


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from, as listed by ``mtbench plugins`` and stored with every result."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...] = ()
    registered: dict[str, list[str]] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"plugin {self.name!r}{dist}"


def _split_env(var: str) -> list[str]:
    return [s.strip() for s in os.environ.get(var, "").split(",") if s.strip()]


def _import_module(path: str, what: str) -> Any:
    try:
        return importlib.import_module(path)
    except Exception as exc:  # a broken plugin must not look like a bug in mtbench
        raise PluginLoadError(f"{what} failed to import: {type(exc).__name__}: {exc}") from exc


class Plugins:
    """A loaded plugin manager plus the registries its hooks fill."""

    def __init__(self, pm: pluggy.PluginManager, dists: dict[str, tuple[str | None, str | None]]):
        self.pm = pm
        self._dists = dists
        self._registered: dict[str, dict[str, list[str]]] = {}

    def _fill(self, hook_name: str, kind: str, add: Callable[[Registry, str, Callable], Callable]) -> Registry:
        registry: Registry = Registry(kind)
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # registration order
            info = self.info(impl.plugin_name)
            names = self._registered.setdefault(impl.plugin_name, {}).setdefault(kind, [])
            register = add(registry, info.label, names.append)
            try:
                impl.function(**{a: register for a in impl.argnames})
            except MtbenchError:
                raise
            except Exception as exc:
                raise PluginLoadError(f"{info.label} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
        return registry

    def info(self, plugin_name: str) -> PluginInfo:
        dist, version = self._dists.get(plugin_name, (None, None))
        plugin = self.pm.get_plugin(plugin_name)
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
        return PluginInfo(plugin_name, dist, version, hooks, self._registered.get(plugin_name, {}))

    def describe(self) -> list[PluginInfo]:
        """Every loaded plugin with what it registered (fills all registries first)."""
        for reg in ("algorithms", "datasets", "metrics", "suites", "backbones", "renderers", "executors"):
            getattr(self, reg)
        return [self.info(name) for name, _ in self.pm.list_name_plugin()]

    def versions(self) -> dict[str, str | None]:
        return {name: self._dists.get(name, (None, None))[1] for name, _ in self.pm.list_name_plugin()
                if name not in DEFAULT_PLUGINS}

    @cached_property
    def algorithms(self) -> Registry:
        return self._fill("register_algorithms", "algorithm", _by_name_attribute)

    @cached_property
    def datasets(self) -> Registry:
        return self._fill("register_datasets", "dataset", _by_name_attribute)

    @cached_property
    def metrics(self) -> Registry:
        return self._fill("register_metrics", "metric", _by_name_attribute)

    @cached_property
    def suites(self) -> Registry:
        from .suites import load_suite

        def add(reg: Registry, provider: str, note: Callable) -> Callable:
            def register(suite: Any) -> None:
                suite = load_suite(suite)
                reg.add(suite.name, suite, provider)
                note(suite.name)
            return register
        return self._fill("register_suites", "suite", add)

    @cached_property
    def backbones(self) -> Registry:
        def add(reg: Registry, provider: str, note: Callable) -> Callable:
            def register(name: str, builder: Callable) -> None:
                reg.add(name, builder, provider)
                note(name)
            return register
        return self._fill("register_backbones", "backbone", add)

    @cached_property
    def renderers(self) -> Registry:
        return self._fill("register_renderers", "renderer", _by_name_attribute)

    @cached_property
    def executors(self) -> Registry:
        return self._fill("register_executors", "executor", _by_name_attribute)


def _by_name_attribute(reg: Registry, provider: str, note: Callable) -> Callable:
    """A register callback for items that carry their id in ``.name`` (classes, metrics)."""
    def register(item: Any) -> None:
        reg.add(getattr(item, "name", None), item, provider)
        note(item.name)
    return register


def load_plugins(
    modules: Iterable[str] = (),
    objects: Iterable[tuple[str, Any]] = (),
    blocked: Iterable[str] = (),
    entry_points: bool = True,
) -> Plugins:
    """Build a fresh plugin manager.

    Parameters
    ----------
    modules : dotted module paths to load as plugins (``--plugin``), plus ``$MTBENCH_PLUGINS``.
    objects : ``(name, plugin)`` pairs registered directly (tests, notebooks).
    blocked : plugin names never registered (``--block``), plus ``$MTBENCH_DISABLE_PLUGINS``.
    entry_points : load the ``mtbench`` entry-point group (built-ins and third parties).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in [*blocked, *_split_env(ENV_BLOCK)]:
        pm.set_blocked(name)
    dists: dict[str, tuple[str | None, str | None]] = {}
    for path in DEFAULT_PLUGINS:
        if not pm.is_blocked(path):
            _register(pm, _import_module(path, f"core plugin {path!r}"), path, f"core plugin {path!r}")
            dists[path] = ("mtbench", __version__)
    if entry_points:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            module = _import_module_ep(ep, dist, version)
            _register(pm, module, ep.name, f"plugin {ep.name!r} of distribution {dist} {version}")
            dists[ep.name] = (dist, version)
    for path in [*modules, *_split_env(ENV_LOAD)]:
        if pm.is_blocked(path) or pm.has_plugin(path):
            continue
        module = _import_module(path, f"plugin module {path!r} (from --plugin or ${ENV_LOAD})")
        _register(pm, module, path, f"plugin module {path!r}")
    for name, obj in objects:
        if not pm.is_blocked(name):
            _register(pm, obj, name, f"plugin {name!r}")
    return Plugins(pm, dists)


def _import_module_ep(ep: md.EntryPoint, dist: str | None, version: str | None) -> Any:
    try:
        return ep.load()
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {ep.name!r} of distribution {dist} {version} failed to import "
            f"({type(exc).__name__}: {exc}); reinstall or uninstall {dist}, or skip it with "
            f"{ENV_BLOCK}={ep.name}"
        ) from exc


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, what: str) -> None:
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        raise PluginLoadError(f"{what} does not follow the mtbench hook specs: {exc}") from exc

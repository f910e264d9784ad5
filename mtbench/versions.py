"""Code versions: a hash of the source that produced a result, so results and cached fits of changed code
are told apart (and a leaderboard can mark rows produced by older code).

A version is the hash of the module that defines something and of every module of the same top-level
package that it imports, directly or through others (behaviour also lives in base classes and shared
helpers), read from their sources without running them. Editing one algorithm of a plugin package leaves
the versions of its siblings alone, so their results are not marked stale by an unrelated change. A
single-module plugin is hashed from its source.
The core's version leaves out the modules that only present results (the CLI, leaderboards, renderers,
plots, progress bars): editing a table's layout does not retrain anything.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugins import Plugins

# Core modules that never change a number in a result.
PRESENTATION = frozenset({"cli.py", "leaderboard.py", "stats.py", "compare.py", "plots.py", "progress.py",
                          "download.py", "frame.py", "renderers"})


def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _imported_modules(path: Path, name: str, package: str) -> set[str]:
    """Names of the modules ``name`` (whose source is ``path``) imports, absolute or relative."""
    found: set[str] = set()
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = base.split(".")
            origin = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (origin, node.module or "") if p)
            if node.module:  # `from . import sibling` names the siblings, not the package's __init__
                found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == package or m.startswith(package + ".")}


def _source_file(module_name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def source_closure(module_name: str) -> list[Path]:
    """The source files of ``module_name`` and of the modules of its package that it imports, transitively.
    The package's own ``__init__`` counts only where a module names it (it mostly registers plugins)."""
    package = module_name.split(".")[0]
    files: dict[str, Path] = {}
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _source_file(name)
        if path is None:
            continue
        files[name] = path
        todo.extend(_imported_modules(path, name, package) - files.keys())
    return sorted(set(files.values()))


def package_version(module_name: str) -> str:
    """Hash of the sources ``module_name`` is built from (see :func:`source_closure`)."""
    files = source_closure(module_name)
    if files:
        return _hash_files(files)
    module = sys.modules.get(module_name)
    try:
        source = inspect.getsource(module) if module is not None else module_name
    except (OSError, TypeError):
        source = module_name
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def core_version() -> str:
    """Hash of mtbench's own modules that can change a result (planning, data, training, evaluation)."""
    root = Path(__file__).resolve().parent
    files = sorted(f for f in root.rglob("*.py") if f.relative_to(root).parts[0] not in PRESENTATION)
    return _hash_files(files)


def version_of(obj: Any) -> str:
    """The code version of whatever defines ``obj`` (a class, a function, a builder)."""
    return package_version(getattr(obj, "__module__", None) or type(obj).__module__)


def code_versions(plugins: "Plugins", algorithm: str, dataset: str, base_dataset: str,
                  backbone: Any = None) -> dict[str, str]:
    """The versions a cell's result depends on: stored in each result as ``code_versions``.

    Keys: ``core`` (mtbench), ``algorithm``, ``dataset`` (the test data's loader), ``train_dataset`` (the
    base data's loader, when it differs) and ``backbone`` (the package registering the named backbone).
    """
    out = {"core": core_version(), "algorithm": plugins.algorithms.get(algorithm).code_version(),
           "dataset": version_of(plugins.datasets.get(dataset))}
    if base_dataset != dataset:
        out["train_dataset"] = version_of(plugins.datasets.get(base_dataset))
    if isinstance(backbone, str) and backbone in plugins.backbones:
        out["backbone"] = version_of(plugins.backbones.get(backbone))
    return out

"""Code versions: a hash of the source that produced a result, so results and cached fits of changed code
are told apart (and a leaderboard can mark rows produced by older code).

A version is the hash of every ``.py`` file of the *top-level package* that defines something (behaviour
also lives in base classes and shared helpers), or of the module's source for a single-module plugin.
The core's version leaves out the modules that only present results (the CLI, leaderboards, renderers,
plots, progress bars): editing a table's layout does not retrain anything.
"""
from __future__ import annotations

import hashlib
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


def package_version(module_name: str) -> str:
    """Hash of the sources of the top-level package holding ``module_name`` (or of the module alone)."""
    top = sys.modules.get(module_name.split(".")[0])
    roots = [Path(p) for p in getattr(top, "__path__", [])]
    files = sorted(f for root in roots for f in root.rglob("*.py"))
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

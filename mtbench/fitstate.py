"""Fitted state and shared artifacts on disk as tensors plus JSON, never as pickles.

A results folder travels: it is shared between users and handed over as an archive with its cache. So
nothing read from it may run code. Every cache file here is one safetensors file: a table of plain
tensors and a JSON header (under the ``mtbench`` metadata key) holding the format, the cache key the
file was written for and the JSON part of the value. Loading parses that header and copies raw tensor
bytes, and checks the format and the key: a truncated file (a power loss), a file of another format
(a planted pickle, an old ``torch.save``) or one written for another key is reported in one line and
recomputed, then overwritten.

Values are *trees*: dicts with string keys, lists and tuples (read back as lists) whose leaves are
tensors or JSON values (``None``, bools, numbers, strings). Modules are stored as their ``state_dict``
and rebuilt by whoever owns their architecture (the algorithm's ``init_fitted``, or the caller of
``RunContext.cached``).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

if TYPE_CHECKING:
    from .algorithm import Algorithm, FitData
    from .context import RunContext

FORMAT = "mtbench-state/1"
SUFFIX = ".safetensors"
_TENSOR, _MODULE = "__tensor__", "__module__"  # markers in a tree's JSON skeleton; reserved as dict keys


class StateError(Exception):
    """A cache file that cannot be used: unreadable, truncated, of another format or for another key."""


def warn(message: str) -> None:
    """One line on stderr: a cache problem is not the user's error and never stops the run."""
    sys.stderr.write(f"mtbench: warning: {message}\n")
    sys.stderr.flush()


def key_digest(key: dict[str, Any], n: int = 16) -> str:
    return hashlib.sha256(_canonical(key).encode()).hexdigest()[:n]


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def cache_path(cache_dir: Path, key: dict[str, Any], kind: str = "artifact") -> Path:
    """``<cache_dir>/<kind>-<digest of key>.safetensors``."""
    return Path(cache_dir) / f"{key.get('kind', kind)}-{key_digest(key)}{SUFFIX}"


# -- trees ------------------------------------------------------------------------------------------
def flatten(tree: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a tree into its tensors (named by their path under ``prefix``) and a JSON skeleton.

    Raises TypeError naming the path of anything else (a module, an arbitrary object), which would
    need pickling to be stored.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value
            return {_TENSOR: path}
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str) or k in (_TENSOR, _MODULE)]
            if bad:
                raise TypeError(f"{path}: dict keys must be strings other than {_TENSOR}/{_MODULE}, got {bad[0]!r}")
            return {k: walk(v, f"{path}/{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"{path}: a {type(value).__name__} cannot be stored without pickling; store tensors and "
                        "JSON values (a module as its state_dict)")

    return tensors, walk(tree, prefix)


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten` (tuples come back as lists)."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            try:
                return tensors[skeleton[_TENSOR]]
            except KeyError:
                raise StateError(f"tensor {skeleton[_TENSOR]!r} is missing") from None
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


# -- files ------------------------------------------------------------------------------------------
def save_state(path: Path, key: dict[str, Any], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors and JSON ``meta`` for ``key`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"format": FORMAT, "key": _canonical(key), "meta": meta})
    plain = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(plain, tmp, metadata={"mtbench": header})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_state(path: Path, key: dict[str, Any], device: torch.device | str = "cpu"
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (on ``device``) and JSON meta written for ``key``; StateError if the file is not that."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = (f.metadata() or {}).get("mtbench")
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise StateError(f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    try:
        parsed = json.loads(header) if header else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("format") != FORMAT:
        raise StateError(f"not an {FORMAT} file")
    if parsed.get("key") != _canonical(key):
        raise StateError("written for another cache key")
    return tensors, parsed.get("meta") or {}


def save_tree(path: Path, key: dict[str, Any], tree: Any) -> None:
    tensors, skeleton = flatten(tree, "value")
    save_state(path, key, tensors, {"tree": skeleton})


def load_tree(path: Path, key: dict[str, Any], device: torch.device | str = "cpu") -> Any:
    tensors, meta = load_state(path, key, device)
    if "tree" not in meta:
        raise StateError("holds no value")
    return unflatten(meta["tree"], tensors)


def cached_tree(cache_dir: Path | None, key: dict[str, Any], make: Callable[[], Any],
                device: torch.device | str = "cpu") -> tuple[Any, bool]:
    """``make()`` once per key: the tree stored under ``cache_dir``, or computed and stored; (tree, was_cached)."""
    if cache_dir is None:
        value = make()
        flatten(value, "value")  # the same contract with or without a cache
        return value, False
    path = cache_path(cache_dir, key)
    if path.exists():
        try:
            return load_tree(path, key, device), True
        except StateError as exc:
            warn(f"ignoring cache file {path} ({exc}); recomputing it")
    value = make()
    try:
        save_tree(path, key, value)
    except OSError as exc:
        warn(f"could not write cache file {path} ({exc}); it will be recomputed next time")
    return value, False


# -- fitted algorithms ------------------------------------------------------------------------------
def supports_fitted_state(alg: "Algorithm") -> bool:
    """Whether the algorithm implements ``init_fitted``, so its fits can be rebuilt from stored state."""
    from .algorithm import Algorithm
    return type(alg).init_fitted is not Algorithm.init_fitted


def default_fitted_state(alg: "Algorithm") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every attribute ending in ``_``: a module as its state_dict (and train/eval modes), others as trees."""
    tensors: dict[str, torch.Tensor] = {}
    attributes: dict[str, Any] = {}
    for attr, value in vars(alg).items():
        if not attr.endswith("_") or attr.startswith("_"):
            continue
        if isinstance(value, torch.nn.Module):
            tensors.update({f"{attr}/{name}": t for name, t in value.state_dict().items()})
            attributes[attr] = {_MODULE: [name for name, m in value.named_modules() if m.training]}
        else:
            found, attributes[attr] = flatten(value, attr)
            tensors.update(found)
    return tensors, {"attributes": attributes}


def default_load_fitted_state(alg: "Algorithm", tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`default_fitted_state`; modules must already exist (built by ``init_fitted``)."""
    for attr, skeleton in meta["attributes"].items():
        if isinstance(skeleton, dict) and _MODULE in skeleton:
            module = getattr(alg, attr, None)
            if not isinstance(module, torch.nn.Module):
                raise StateError(f"{type(alg).__name__}.init_fitted did not build module {attr!r}")
            prefix = f"{attr}/"
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            training = set(skeleton[_MODULE])
            for name, sub in module.named_modules():
                sub.training = name in training
        else:
            setattr(alg, attr, unflatten(skeleton, tensors))


def cached_fit(cache_dir: Path | None, key: dict[str, Any], alg: "Algorithm", data: "FitData", ctx: "RunContext",
               make: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """A fit stored under ``cache_dir``, or ``make()`` (which fits ``alg``) and store it; (fit, was_cached).

    A fit is ``{"algorithm": fitted, "fit_s": seconds}``. A stored fit is rebuilt on a fresh instance:
    ``init_fitted(data, ctx)`` then ``load_fitted_state(tensors, meta)``, tensors on ``ctx.device``.
    Algorithms without ``init_fitted`` are fitted every time.
    """
    if cache_dir is None or not supports_fitted_state(alg):
        return make(), False
    path = cache_path(cache_dir, key, "fit")
    if path.exists():
        try:
            tensors, meta = load_state(path, key, ctx.device)
            fresh = alg.clone()
            fresh.init_fitted(data, ctx)
            fresh.load_fitted_state(tensors, meta["state"])
            return {"algorithm": fresh, "fit_s": float(meta["fit_s"])}, True
        except (StateError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:  # e.g. a mismatch
            warn(f"ignoring cached fit {path} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                 "fitting again")
    fit = make()
    try:
        tensors, state = fit["algorithm"].fitted_state()
        save_state(path, key, tensors, {"state": state, "fit_s": fit["fit_s"]})
    except (TypeError, OSError) as exc:
        warn(f"not caching the fit of {type(alg).__name__} ({exc})")
    return fit, False

"""The run context: the only door to the device, the seed, the budget and shared artifacts."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import torch

from .errors import MtbenchError
from .fitstate import cached_tree
from .progress import Reporter

if TYPE_CHECKING:
    from .plugins import Plugins

T = TypeVar("T")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (falls back to CPU with a warning when CUDA is absent) or ``auto``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            warnings.warn(f"--device {name} asked for CUDA but torch {torch.__version__} sees no GPU; "
                          "running on the CPU instead", RuntimeWarning, stacklevel=2)
            return torch.device("cpu")
        return torch.device(name)
    if name != "cpu":
        raise MtbenchError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    return torch.device("cpu")


@dataclass
class RunContext:
    """Shared by every algorithm of a run.

    Parameters
    ----------
    device : where tensors live; algorithms build models through :meth:`build_backbone` or move them
        with ``.to(ctx.device)``.
    seed : the cell's seed (training randomness and episodes).
    budget : the budget profile name (``quick``, ``standard``, ``paper``), recorded with results.
    cache_dir : where :meth:`cached` keeps artifacts shared between algorithms (pretrained weights).
    """

    device: torch.device
    seed: int = 0
    budget: str = "quick"
    cache_dir: Path | None = None
    plugins: "Plugins | None" = None
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))

    def build_backbone(self, name: str, in_shape: tuple[int, ...], **kwargs: Any) -> torch.nn.Module:
        """A registered feature extractor on ``self.device``; it exposes ``out_dim``."""
        if self.plugins is None:
            raise MtbenchError("this RunContext has no plugins to build backbones from")
        builder = self.plugins.backbones.get(name)
        return builder(in_shape, **kwargs).to(self.device)

    def progress(self, description: str, total: int):  # -> context manager yielding advance()
        return self.reporter.task(description, total)

    def cached(self, key: dict[str, Any], make: Callable[[], T]) -> tuple[T, bool]:
        """``make()`` once per ``key`` and cache dir; returns (value, was_cached).

        Used for artifacts several algorithms share, such as weights pretrained on the base classes,
        so that finetune and linear-probe start from the same network. The value is a tree of tensors
        and JSON values (dicts with string keys, lists; tuples come back as lists), stored as tensors +
        JSON (:mod:`mtbench.fitstate`), never pickled: pass a module as its ``state_dict`` and rebuild it.
        A cached value's tensors are on ``self.device``. An unreadable or foreign cache file is reported
        in one line and recomputed.
        """
        return cached_tree(self.cache_dir, key, make, self.device)

"""Data held as tensors per split, ready for vectorised episode sampling.

A classification split is a :class:`LabeledImages`: all images of the split in one tensor, plus a
``class_rows`` matrix (class index -> row numbers, padded with -1) so that an N-way K-shot episode is
a couple of tensor gathers, never a Python loop over images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch

from .errors import DataError
from .params import HasParams


@dataclass(frozen=True, eq=False)
class LabeledImages:
    """Images of one split. ``labels[i]`` indexes ``class_names``; uint8 images are scaled by 1/255."""

    images: torch.Tensor  # [n, C, H, W], uint8 or float
    labels: torch.Tensor  # [n] int64 in 0..n_classes-1
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise DataError(f"images must be [n, C, H, W] with one label each, got {tuple(self.images.shape)} "
                            f"and {tuple(self.labels.shape)}")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @cached_property
    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.n_classes)

    @cached_property
    def class_rows(self) -> torch.Tensor:
        """[n_classes, max_count] row numbers of each class, padded with -1."""
        order = torch.argsort(self.labels, stable=True)
        counts = self.class_counts
        width = int(counts.max()) if len(counts) else 0
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(len(order)) - starts[self.labels[order]]
        rows = torch.full((self.n_classes, width), -1, dtype=torch.long)
        rows[self.labels[order], pos] = order
        return rows

    def as_float(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.images[rows]
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def subset_classes(self, classes: torch.Tensor) -> "LabeledImages":
        """The images of some classes, relabelled 0..len(classes)-1 in the given order."""
        remap = torch.full((self.n_classes,), -1, dtype=torch.long)
        remap[classes] = torch.arange(len(classes))
        keep = remap[self.labels] >= 0
        names = tuple(self.class_names[int(c)] for c in classes)
        return LabeledImages(self.images[keep], remap[self.labels[keep]], names)


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The class splits of a dataset (``train``/``val``/``test``) and a record of how they were made."""

    splits: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str, dataset: str = "dataset") -> Any:
        if name not in self.splits or self.splits[name] is None:
            have = ", ".join(k for k, v in self.splits.items() if v is not None) or "none"
            raise DataError(f"{dataset} has no {name!r} split (it has: {have})")
        return self.splits[name]

    def describe(self) -> dict[str, Any]:
        """Class and example counts per split, stored with every result."""
        out: dict[str, Any] = dict(self.info)
        for name, split in self.splits.items():
            if isinstance(split, LabeledImages):
                out[f"{name}_classes"] = split.n_classes
                out[f"{name}_examples"] = len(split.labels)
        return out


class Dataset(HasParams):
    """A dataset plugin: parameters in ``__init__``, files read in :meth:`load`.

    ``task`` is ``"classification"`` (splits are :class:`LabeledImages`) or ``"regression"``.
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = "classification"

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        raise NotImplementedError

    def fingerprint(self, data_dir: Path | None) -> str:
        """What the loaded content depends on beyond the parameters and the code, cheaply: datasets read
        from files return a hash of those files (names, sizes, modification times), so that replacing a
        file retrains. Generated data (parameters and code decide it) returns ""."""
        return ""

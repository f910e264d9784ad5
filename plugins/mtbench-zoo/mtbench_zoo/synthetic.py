"""Synthetic class-structured images: each class is a random prototype plus Gaussian noise. No files."""
from __future__ import annotations

from pathlib import Path

import torch

from mtbench import Dataset, DatasetSplits, LabeledImages, hookimpl


class Synthetic(Dataset):
    """``classes`` per split (train, val, test), ``per_class`` images each; ``noise`` sets the difficulty."""

    name = "synthetic"

    def __init__(self, classes: tuple[int, int, int] = (64, 16, 32), per_class: int = 20, image_size: int = 8,
                 channels: int = 1, noise: float = 1.0, seed: int = 0) -> None:
        self.classes = classes
        self.per_class = per_class
        self.image_size = image_size
        self.channels = channels
        self.noise = noise
        self.seed = seed

    def make_split(self, n_classes: int, gen: torch.Generator, prefix: str) -> LabeledImages:
        shape = (self.channels, self.image_size, self.image_size)
        prototypes = torch.randn(n_classes, *shape, generator=gen)
        noise = torch.randn(n_classes, self.per_class, *shape, generator=gen) * self.noise
        images = (prototypes[:, None] + noise).reshape(-1, *shape)
        labels = torch.arange(n_classes).repeat_interleave(self.per_class)
        return LabeledImages(images, labels, tuple(f"{prefix}{i}" for i in range(n_classes)))

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        gen = torch.Generator().manual_seed(self.seed)
        splits = {name: self.make_split(n, gen, f"{name}-") if n else None
                  for name, n in zip(("train", "val", "test"), self.classes)}
        return DatasetSplits(splits, {"split": "synthetic", "seed": self.seed, "noise": self.noise})


@hookimpl
def register_datasets(register):
    register(Synthetic)

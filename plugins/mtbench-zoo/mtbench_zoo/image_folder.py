"""A user's own images: one sub-folder per class (PNG/JPEG, any size, grey or RGB).

Classes go to train/val/test by an optional JSON split file (``{"train": [...], "val": [...],
"test": [...]}``) or, without one, by a seeded shuffle with the given fractions. Images are resized to
``image_size`` (LANCZOS) and cached, keyed by the files' names, sizes and modification times.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mtbench import DataError, Dataset, DatasetSplits, LabeledImages, hookimpl

from ._images import cached_arrays, decode, decode_error, files_fingerprint, fingerprint

EXTENSIONS = {".png", ".jpg", ".jpeg"}


class ImageFolder(Dataset):
    name = "image-folder"

    def __init__(self, root: str = "", image_size: int = 28, channels: int = 1, split_file: str = "",
                 fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0,
                 invert: bool = False) -> None:
        self.root = root
        self.image_size = image_size
        self.channels = channels
        self.split_file = split_file
        self.fractions = fractions
        self.seed = seed
        self.invert = invert

    def files(self, root: Path) -> dict[str, list[Path]]:
        if not self.root or not root.is_dir():
            raise DataError(f"image-folder root {str(root)!r} is not a folder; set params.root to a folder "
                            f"with one sub-folder of images per class")
        classes = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS)
                   for d in sorted(root.iterdir()) if d.is_dir()}
        classes = {k: v for k, v in classes.items() if v}
        if len(classes) < 2:
            raise DataError(f"image-folder root {root} has {len(classes)} class folders with images; need at least 2")
        return classes

    def assign(self, names: list[str]) -> dict[str, list[str]]:
        if self.split_file:
            path = Path(self.split_file)
            try:
                spec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(f"split file {path} is unreadable ({exc}); it must be JSON "
                                f'{{"train": [...], "val": [...], "test": [...]}}') from None
            seen: dict[str, str] = {}
            for split, members in spec.items():
                for c in members:
                    if seen.setdefault(c, split) != split:
                        raise DataError(f"split file {path} puts class {c!r} in both {seen[c]!r} and {split!r}; "
                                        f"a class must be in one split only")
            missing = [c for s in spec.values() for c in s if c not in names]
            if missing:
                raise DataError(f"split file {path} names class {missing[0]!r}, which has no folder under {self.root}")
            return {s: list(spec.get(s, [])) for s in ("train", "val", "test")}
        order = [names[i] for i in np.random.default_rng(self.seed).permutation(len(names))]
        n_train = int(round(self.fractions[0] * len(order)))
        n_val = int(round(self.fractions[1] * len(order)))
        return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
                "test": sorted(order[n_train + n_val:])}

    def fingerprint(self, data_dir: Path | None) -> str:
        """Relative paths, sizes and modification times of every image and of the split file."""
        root = Path(self.root).expanduser()
        paths = [p for ps in self.files(root).values() for p in ps]
        return files_fingerprint(root, paths + ([Path(self.split_file)] if self.split_file else []))

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        root = Path(self.root).expanduser()
        classes = self.files(root)
        paths = [p for ps in classes.values() for p in ps]
        key = fingerprint(paths, size=self.image_size, channels=self.channels, invert=self.invert)

        def build() -> dict[str, np.ndarray]:
            images = []
            for path in paths:
                try:
                    images.append(decode(path.read_bytes(), self.image_size, self.channels, self.invert))
                except Exception as exc:
                    raise decode_error(root, str(path.relative_to(root)), exc, "remove or replace that file") from None
            labels = np.concatenate([[i] * len(ps) for i, ps in enumerate(classes.values())])
            return {"images": np.stack(images), "labels": labels.astype(np.int64)}
        arr = cached_arrays(Path(cache_dir) / f"image-folder-{key}.npz", build)
        names = list(classes)
        images, labels = torch.from_numpy(arr["images"]), torch.from_numpy(arr["labels"])
        splits = {}
        for split, members in self.assign(names).items():
            if not members:
                splits[split] = None
                continue
            ids = torch.tensor([names.index(c) for c in members])
            splits[split] = LabeledImages(images, labels, tuple(names)).subset_classes(ids)
        return DatasetSplits(splits, {"split": self.split_file or f"seeded fractions {self.fractions} seed {self.seed}",
                                      "root": str(root), "image_size": self.image_size})


@hookimpl
def register_datasets(register):
    register(ImageFolder)

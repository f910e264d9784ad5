"""scikit-learn's bundled 8x8 digits (UCI optical digits), upscaled to 28x28 with ink = 1.

Only 10 classes, all in the ``test`` split: use it as a cross-domain test set, for example an
Omniglot-trained model evaluated on 5-way digit episodes (``train = {name = "omniglot"}`` in a suite).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mtbench import Dataset, DatasetSplits, LabeledImages, hookimpl


class Digits(Dataset):
    name = "digits"

    def __init__(self, image_size: int = 28) -> None:
        self.image_size = image_size

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 16 grey levels, ink high
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        labels = torch.tensor(bunch.target, dtype=torch.long)
        test = LabeledImages(images, labels, tuple(str(i) for i in range(10)))
        return DatasetSplits({"train": None, "val": None, "test": test},
                             {"split": "all 10 classes in test (cross-domain target)", "source": "sklearn load_digits",
                              "resize": "bilinear 8x8 -> image_size"})


@hookimpl
def register_datasets(register):
    register(Digits)

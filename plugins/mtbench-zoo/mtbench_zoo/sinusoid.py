"""Sinusoid regression (Finn et al. 2017, section 5.1): y = A sin(x - phase), A ~ U[0.1, 5.0],
phase ~ U[0, pi], x ~ U[-5, 5]. Every split draws from the same task distribution; train, validation
and test episodes come from different random streams of the sampler, so they never coincide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtbench import Dataset, DatasetSplits, hookimpl


@dataclass(frozen=True)
class SineTasks:
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def draw(self, rng: np.random.Generator, n_points: int) -> tuple[np.ndarray, np.ndarray]:
        amplitude = rng.uniform(*self.amplitude)
        phase = rng.uniform(*self.phase)
        x = rng.uniform(*self.x_range, size=n_points)
        return x, amplitude * np.sin(x - phase)


class Sinusoid(Dataset):
    name = "sinusoid"
    task = "regression"

    def __init__(self, amplitude: tuple[float, float] = (0.1, 5.0), phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0)) -> None:
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        tasks = SineTasks(tuple(self.amplitude), tuple(self.phase), tuple(self.x_range))
        return DatasetSplits({"train": tasks, "val": tasks, "test": tasks},
                             {"split": "one task distribution; disjoint sampler streams for train/val/test",
                              "amplitude": list(self.amplitude), "phase": list(self.phase), "x": list(self.x_range)})


@hookimpl
def register_datasets(register):
    register(Sinusoid)

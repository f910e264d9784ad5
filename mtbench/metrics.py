"""Per-episode metrics. Plugins register :class:`Metric` objects; the runner alone computes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Metric:
    """``fn(y_true, output) -> float`` for one episode; ``output`` is what the predictor returned."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    task: str = "classification"
    higher_is_better: bool = True
    scale: float = 1.0  # display factor (100 for accuracy in %)

    def __call__(self, y_true: torch.Tensor, output: torch.Tensor) -> float:
        return float(self.fn(y_true, output))

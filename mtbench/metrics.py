"""Per-episode metrics. Plugins register :class:`Metric` objects; the runner alone computes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Metric:
    """``fn(y_true, output) -> float`` for one episode; ``output`` is what the predictor returned.

    ``episodes_fn(y_true [E, Q], output [E, Q, ...]) -> [E]`` optionally scores E episodes at once (the
    batched embed-once evaluation); it must give each episode exactly ``fn``'s value. Without it,
    :meth:`many` calls ``fn`` once per episode.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    task: str = "classification"
    higher_is_better: bool = True
    scale: float = 1.0  # display factor (100 for accuracy in %)
    episodes_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __call__(self, y_true: torch.Tensor, output: torch.Tensor) -> float:
        return float(self.fn(y_true, output))

    def many(self, y_true: torch.Tensor, output: torch.Tensor) -> list[float]:
        """The metric of each of E episodes: ``y_true`` [E, Q], ``output`` [E, Q, ...]."""
        if self.episodes_fn is not None:
            return [float(v) for v in self.episodes_fn(y_true, output).tolist()]
        return [self(y, out) for y, out in zip(y_true, output)]

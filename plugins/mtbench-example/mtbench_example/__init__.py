"""pixel-knn: k-nearest neighbours on raw pixels, an example of a third-party mtbench plugin."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mtbench import Algorithm, FitData, RunContext, Support, Target, hookimpl


@dataclass(frozen=True)
class KnnPredictor:
    support_x: torch.Tensor
    support_y: torch.Tensor
    n_way: int
    k: int

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(x.flatten(1), self.support_x.flatten(1))
        k = min(self.k, len(self.support_y))
        nearest = self.support_y[distances.topk(k, largest=False).indices]  # [n_query, k]
        votes = F.one_hot(nearest, self.n_way).float().sum(1)
        return votes / votes.sum(1, keepdim=True)


class PixelKnn(Algorithm):
    name = "pixel-knn"
    kind = "baseline"
    citation = "k-nearest neighbours on raw pixels (no learning)"

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def fit_key(self, target: Target) -> dict:
        return {}

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.fitted_ = True  # no tensors: nothing is learnt from the base classes

    def fit(self, data: FitData, ctx: RunContext) -> "PixelKnn":
        self.init_fitted(data, ctx)
        return self

    def adapt(self, support: Support, ctx: RunContext) -> KnnPredictor:
        return KnnPredictor(support.x, support.y, support.n_way, self.k)


@hookimpl
def register_algorithms(register):
    register(PixelKnn)

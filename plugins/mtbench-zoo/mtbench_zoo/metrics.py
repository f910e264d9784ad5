"""Per-episode metrics: accuracy and negative log-likelihood (classification), MSE (regression)."""
from __future__ import annotations

import torch

from mtbench import Metric, hookimpl


def accuracy(y: torch.Tensor, proba: torch.Tensor) -> float:
    return float((proba.argmax(dim=1) == y).float().mean())


def nll(y: torch.Tensor, proba: torch.Tensor) -> float:
    picked = proba.gather(1, y.view(-1, 1)).clamp_min(1e-12)
    return float(-picked.log().mean())


def mse(y: torch.Tensor, prediction: torch.Tensor) -> float:
    return float(((prediction.reshape(y.shape) - y) ** 2).mean())


@hookimpl
def register_metrics(register):
    register(Metric("accuracy", accuracy, scale=100.0))
    register(Metric("nll", nll, higher_is_better=False))
    register(Metric("mse", mse, task="regression", higher_is_better=False))

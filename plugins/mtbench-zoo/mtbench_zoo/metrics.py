"""Per-episode metrics: accuracy and negative log-likelihood (classification), MSE (regression)."""
from __future__ import annotations

import torch

from mtbench import Metric, hookimpl


def accuracy(y: torch.Tensor, proba: torch.Tensor) -> float:
    return float((proba.argmax(dim=1) == y).float().mean())


def accuracy_per_episode(y: torch.Tensor, proba: torch.Tensor) -> torch.Tensor:
    """[E] accuracies of E episodes (y [E, Q], proba [E, Q, C]); each a mean of 0/1 values, exactly
    :func:`accuracy`'s."""
    return (proba.argmax(dim=2) == y).float().mean(dim=1)


def nll(y: torch.Tensor, proba: torch.Tensor) -> float:
    picked = proba.gather(1, y.view(-1, 1)).clamp_min(1e-12)
    return float(-picked.log().mean())


def mse(y: torch.Tensor, prediction: torch.Tensor) -> float:
    return float(((prediction.reshape(y.shape) - y) ** 2).mean())


@hookimpl
def register_metrics(register):
    register(Metric("accuracy", accuracy, scale=100.0, episodes_fn=accuracy_per_episode))
    register(Metric("nll", nll, higher_is_better=False))
    register(Metric("mse", mse, task="regression", higher_is_better=False))

"""Selecting a fine-tuning step size (and number of steps) on validation tasks, for regression baselines.

Finn et al. 2017 compare MAML with a network pretrained on all tasks and fine-tuned at test time, with the
baselines' hyperparameters tuned. Fine-tuning with MAML's own step size (0.01) is not that tuning: one step
at 0.01 barely moves the pretrained network. Here each candidate step size fine-tunes a copy of the network
on the support points of validation tasks (their own sampler stream, never the test tasks) for up to
``max_steps`` plain gradient steps, and the query MSE after every step is averaged over tasks.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import FitData


def finetune_curve(net: nn.Module, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor,
                   lr: float, steps: int) -> list[float]:
    """Query MSE after each of ``steps`` plain gradient steps of size ``lr`` on the support points."""
    net = copy.deepcopy(net)
    params = list(net.parameters())
    curve = []
    for _ in range(steps):
        grads = torch.autograd.grad(F.mse_loss(net(sx), sy), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
            value = float(F.mse_loss(net(qx), qy))
        curve.append(value if math.isfinite(value) else math.inf)
    return curve


def select_regression_lr(net: nn.Module, data: FitData, lr_grid: tuple[float, ...], max_steps: int,
                         n_tasks: int) -> dict[str, Any]:
    """The best step size for each number of steps 1..max_steps, and the best (step size, steps) overall."""
    target = data.target
    sampler = data.episodes(1, target.k_shot, target.n_query, split="val", seed_offset=7)
    tasks = [sampler[i] for i in range(n_tasks)]
    table = {}
    for lr in lr_grid:
        curves = [finetune_curve(net, t.support_x, t.support_y, t.query_x, t.query_y, lr, max_steps) for t in tasks]
        table[lr] = [sum(c[s] for c in curves) / len(curves) for s in range(max_steps)]
    by_steps = {str(s + 1): min(lr_grid, key=lambda lr: table[lr][s]) for s in range(max_steps)}
    lr, step = min(((lr, s) for lr in lr_grid for s in range(max_steps)), key=lambda pair: table[pair[0]][pair[1]])
    round_ = lambda v: round(v, 4) if math.isfinite(v) else None
    return {"lr_grid": list(lr_grid), "max_steps": max_steps, "val_tasks": n_tasks, "k_shot": target.k_shot,
            "lr_by_steps": by_steps,
            "val_mse": {str(lr): [round_(v) for v in curve] for lr, curve in table.items()},
            "best": {"lr": lr, "steps": step + 1, "val_mse": round_(table[lr][step])}}

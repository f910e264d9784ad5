"""Supervised pretraining on all base classes: the transfer step shared by transfer and joint methods.

The pretrained encoder is cached per (dataset, seed, settings) through ``ctx.cached``, so algorithms
that pretrain the same way (finetune, linear-probe, joint methods) start from the very same weights and
the work is done once per run. The cache holds state dicts (tensors, never pickles); the networks are
rebuilt from the backbone registry.
"""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import FitData, LabeledImages, RunContext, fit_loop

from ._common import nearest_centroid_accuracy

# Changed pretraining code never reuses weights cached by older code.
CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]

# Shared by every algorithm that pretrains, so that their caches agree at each budget.
PRETRAIN_BUDGETS = {
    "quick": {"pretrain_steps": 1500},
    "standard": {"pretrain_steps": 10_000},
    "paper": {"pretrain_steps": 40_000},
}


def fresh_networks(data: FitData, ctx: RunContext, backbone: str) -> tuple[nn.Module, nn.Linear]:
    """The pretraining encoder and its linear head over every base class (one output for regression)."""
    regression = not isinstance(data.train, LabeledImages)
    encoder = ctx.build_backbone(backbone, (1,) if regression else data.train.shape)
    head = nn.Linear(encoder.out_dim, 1 if regression else data.train.n_classes).to(ctx.device)
    return encoder, head


def pretrained_encoder(data: FitData, ctx: RunContext, backbone: str, steps: int, batch_size: int = 128,
                       lr: float = 1e-3, validate_every: int = 500, val_episodes: int = 50) -> tuple[nn.Module, dict]:
    """An encoder trained with a linear classifier over every base class (cross-entropy, Adam, cosine lr).

    Returns the encoder (eval mode) and a record whose ``head`` is the trained linear head.
    """
    key = {"kind": "pretrain", "data": data.identity, "seed": data.seed, "backbone": backbone, "steps": steps,
           "batch_size": batch_size, "lr": lr, "validate_every": validate_every, "val_episodes": val_episodes,
           "code": CODE_VERSION}

    regression = not isinstance(data.train, LabeledImages)

    def make() -> dict:
        torch.manual_seed(data.seed)
        encoder, head = fresh_networks(data, ctx, backbone)
        criterion = F.mse_loss if regression else F.cross_entropy
        batches = task_batches(data, batch_size) if regression else data.batches(batch_size)

        def loss(batch) -> torch.Tensor:
            x, y = batch
            return criterion(head(encoder(x.to(ctx.device))), y.to(ctx.device))

        validate = None
        if data.val is not None and validate_every and not regression:
            validate = lambda: {"val_accuracy": nearest_centroid_accuracy(encoder, data, ctx, val_episodes)}
        history = fit_loop(loss, batches, [*encoder.parameters(), *head.parameters()],
                           steps=steps, ctx=ctx, lr=lr, cosine=True, validate=validate,
                           validate_every=validate_every,
                           description=f"pretrain {backbone} on all base {'tasks' if regression else 'classes'}")
        return {"encoder": encoder.state_dict(), "head": head.state_dict(), "history": history.as_dict()}

    value, reused = ctx.cached(key, make)
    with torch.random.fork_rng(devices=[]):  # rebuilding the trained networks draws no randomness of the run
        encoder, head = fresh_networks(data, ctx, backbone)
    encoder.load_state_dict(value["encoder"])
    head.load_state_dict(value["head"])
    return encoder.eval(), {"history": value["history"], "pretrain_reused": reused, "head": head}


def task_batches(data: FitData, tasks_per_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Regression pretraining ("pretrain on all tasks", Finn et al. 2017): the points of many tasks pooled."""
    sampler = data.episodes(1, 10, 10, seed_offset=11)  # 20 points per task, whatever the test protocol
    for start in itertools.count(step=tasks_per_batch):
        episodes = [sampler[start + i] for i in range(tasks_per_batch)]
        yield (torch.cat([t for e in episodes for t in (e.support_x, e.query_x)]),
               torch.cat([t for e in episodes for t in (e.support_y, e.query_y)]))

"""Supervised pretraining on all base classes: the transfer step shared by transfer and joint methods.

The pretrained encoder is cached per (dataset, seed, settings) through ``ctx.cached``, so algorithms
that pretrain the same way (finetune, linear-probe, joint methods) start from the very same weights and
the work is done once per run.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import FitData, RunContext, fit_loop

from ._common import nearest_centroid_accuracy

# Changed pretraining code never reuses weights cached by older code.
CODE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]

# Shared by every algorithm that pretrains, so that their caches agree at each budget.
PRETRAIN_BUDGETS = {
    "quick": {"pretrain_steps": 1500},
    "standard": {"pretrain_steps": 10_000},
    "paper": {"pretrain_steps": 40_000},
}


def pretrained_encoder(data: FitData, ctx: RunContext, backbone: str, steps: int, batch_size: int = 128,
                       lr: float = 1e-3, validate_every: int = 500, val_episodes: int = 50) -> tuple[nn.Module, dict]:
    """An encoder trained with a linear classifier over every base class (cross-entropy, Adam, cosine lr)."""
    key = {"kind": "pretrain", "data": data.identity, "seed": data.seed, "backbone": backbone, "steps": steps,
           "batch_size": batch_size, "lr": lr, "validate_every": validate_every, "val_episodes": val_episodes,
           "code": CODE_VERSION}

    def make() -> dict:
        torch.manual_seed(data.seed)
        encoder = ctx.build_backbone(backbone, data.train.shape)
        head = nn.Linear(encoder.out_dim, data.train.n_classes).to(ctx.device)

        def loss(batch) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(head(encoder(x.to(ctx.device))), y.to(ctx.device))

        validate = None
        if data.val is not None and validate_every:
            validate = lambda: {"val_accuracy": nearest_centroid_accuracy(encoder, data, ctx, val_episodes)}
        history = fit_loop(loss, data.batches(batch_size), [*encoder.parameters(), *head.parameters()],
                           steps=steps, ctx=ctx, lr=lr, cosine=True, validate=validate,
                           validate_every=validate_every,
                           description=f"pretrain {backbone} on {data.train.n_classes} classes")
        encoder.eval()
        return {"encoder": encoder, "history": history.as_dict()}

    value, reused = ctx.cached(key, make)
    return value["encoder"], {"history": value["history"], "pretrain_reused": reused}

"""Embed-once evaluation gives the per-episode path's results while embedding each test image once.

Accuracies must agree exactly. Probabilities (hence the NLL) are compared to 1e-5: on the embed-once
path an image is embedded in a batch of other test images instead of its episode's, and batch
composition may move the last bits of a float32 matrix product.
"""
from __future__ import annotations

import pytest
import torch

from mtbench import FitData, RunContext
from mtbench import evaluation
from mtbench.evaluation import EMBED_ONCE, EMBED_ONCE_BATCHED, PER_EPISODE, evaluate, forget_embeddings
from mtbench.runner import plan_cells

N_EPISODES = 25


def fitted_cells(plugins, tmp_path, name: str, shots: int, **params):
    """A smoke-suite cell, its test split and its fitted algorithm (fitted here, no result store)."""
    suite = plugins.suites.get("smoke")
    (cell,) = plan_cells(suite, plugins, algorithms=[name], n_episodes=N_EPISODES, protocols=[(5, shots)],
                         overrides={name: params} if params else None)
    splits = plugins.datasets.get(cell.dataset.name)().set_params(**cell.dataset.params).load(None, tmp_path)
    ctx = RunContext(torch.device("cpu"), cell.seed, cell.budget, None, plugins)
    torch.manual_seed(cell.seed)
    alg = plugins.algorithms.get(name)().set_params(**cell.params)
    alg.fit(FitData(splits.split("train", cell.dataset.name), splits.splits.get("val"), cell.target, cell.seed), ctx)
    return ctx, cell, splits.split(cell.dataset.split, cell.dataset.name), alg


def both_paths(plugins, ctx, cell, test, alg):
    return [evaluate(alg, cell, test, ctx, plugins, ctx.device, allow_embed_once=allow) for allow in (False, True)]


@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("name", ["protonet", "linear-probe", "finetune"])
def test_embed_once_gives_the_per_episode_rows(plugins, tmp_path, name, shots):
    ctx, cell, test, alg = fitted_cells(plugins, tmp_path, name, shots)
    (rows, info), (fast_rows, fast_info) = both_paths(plugins, ctx, cell, test, alg)
    fast_path = EMBED_ONCE_BATCHED if name == "protonet" else EMBED_ONCE
    assert info["timings"]["adapt_path"] == PER_EPISODE and fast_info["timings"]["adapt_path"] == fast_path
    assert fast_info["digest"] == info["digest"] and fast_info["count"] == info["count"] == N_EPISODES
    assert [r[:2] for r in fast_rows] == [r[:2] for r in rows]
    accuracy = [(r[2], f[2]) for r, f in zip(rows, fast_rows) if r[1] == "accuracy"]
    assert len(accuracy) == N_EPISODES and all(a == b for a, b in accuracy)
    nll = [(r[2], f[2]) for r, f in zip(rows, fast_rows) if r[1] == "nll"]
    assert nll and all(abs(a - b) <= 1e-5 for a, b in nll), max(abs(a - b) for a, b in nll)
    assert 0 < fast_info["timings"]["embedded_images"] <= len(test.labels)


def test_each_test_image_is_embedded_once_per_fit(plugins, tmp_path):
    ctx, cell, test, alg = fitted_cells(plugins, tmp_path, "protonet", 5)
    seen: list[torch.Tensor] = []
    embed = alg.embed_images
    alg.embed_images = lambda x, ctx: (seen.append(x), embed(x, ctx))[1]
    _, info = evaluate(alg, cell, test, ctx, plugins, ctx.device)
    images = torch.cat(seen)
    assert len(images) == info["timings"]["embedded_images"]
    assert len(torch.unique(images.flatten(1), dim=0)) == len(images)  # no image twice
    used = 5 * (5 + cell.n_query) * N_EPISODES
    assert len(images) < used  # episodes share images: fewer embeddings than the per-episode path's


def test_finetuning_the_backbone_stays_on_the_per_episode_path(plugins, tmp_path):
    ctx, cell, test, alg = fitted_cells(plugins, tmp_path, "finetune", 1, finetune_backbone=True, head_steps=3)
    assert not alg.embeds_once()
    _, info = evaluate(alg, cell, test, ctx, plugins, ctx.device)
    assert info["timings"]["adapt_path"] == PER_EPISODE and "embed_s" not in info["timings"]


def test_cells_of_one_fit_share_embeddings_and_a_changed_fit_does_not(plugins, tmp_path):
    ctx, one_shot, test, alg = fitted_cells(plugins, tmp_path, "linear-probe", 1)  # fit_key {}: one fit, both shots
    (five_shot,) = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["linear-probe"],
                              n_episodes=N_EPISODES, protocols=[(5, 5)])
    forget_embeddings()
    _, first = evaluate(alg, one_shot, test, ctx, plugins, ctx.device)
    (slow_rows, _), (rows, second) = both_paths(plugins, ctx, five_shot, test, alg)
    assert first["timings"]["reused_embeddings"] == 0 and second["timings"]["reused_embeddings"] > 0
    assert first["timings"]["embedded_images"] + second["timings"]["embedded_images"] <= len(test.labels)
    assert [r[:2] for r in rows] == [r[:2] for r in slow_rows]
    assert all(r[2] == s[2] for r, s in zip(rows, slow_rows) if r[1] == "accuracy")
    with torch.no_grad():
        next(alg.encoder_.parameters()).add_(1.0)  # another fit: nothing may be reused
    _, third = evaluate(alg, five_shot, test, ctx, plugins, ctx.device)
    assert third["timings"]["reused_embeddings"] == 0


@pytest.mark.parametrize("name,params", [("protonet", {}),
                                         ("meta-baseline", {"backbone": "mlp", "pretrain_steps": 30, "meta_episodes": 10})])
def test_episodes_in_blocks_give_each_episode_its_own_rows_exactly(plugins, tmp_path, monkeypatch, name, params):
    """ProtoNet and Meta-Baseline adapt to blocks of episodes at once: every row (accuracy and NLL) equals the
    one-episode-at-a-time embed-once path's bit for bit, across block boundaries (blocks of 7 over 25 episodes) and
    at 5 shots."""
    ctx, cell, test, alg = fitted_cells(plugins, tmp_path, name, 5, **params)
    monkeypatch.setattr(evaluation, "EPISODE_BLOCK", 7)
    forget_embeddings()
    rows, info = evaluate(alg, cell, test, ctx, plugins, ctx.device)
    alg.adapts_embedded_in_batches = lambda: False
    single_rows, single = evaluate(alg, cell, test, ctx, plugins, ctx.device)
    assert info["timings"]["adapt_path"] == EMBED_ONCE_BATCHED and single["timings"]["adapt_path"] == EMBED_ONCE
    assert info["digest"] == single["digest"] and len(rows) == len(single_rows) == 2 * N_EPISODES
    assert [r[:3] for r in rows] == [r[:3] for r in single_rows]
    assert len({r[2] for r in rows if r[1] == "accuracy"}) > 1  # real episodes, not one repeated


def test_a_metric_over_many_episodes_equals_it_episode_by_episode(plugins):
    torch.manual_seed(0)
    proba = torch.softmax(torch.randn(9, 30, 5), dim=2)
    y = torch.randint(0, 5, (9, 30))
    for name in ("accuracy", "nll"):
        metric = plugins.metrics.get(name)
        assert metric.many(y, proba) == [metric(y[i], proba[i]) for i in range(9)]
    assert plugins.metrics.get("accuracy").episodes_fn is not None  # the batched form is what was compared

"""Scoring a fitted algorithm on a cell's test episodes: adapt to each support set, score each query set.

Kept apart from the runner so that every place that executes a cell (in process, a worker process, a
Ray task) scores episodes the same way.
"""
from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import torch

from .algorithm import Algorithm
from .context import RunContext
from .episode import make_sampler

if TYPE_CHECKING:
    from .plugins import Plugins
    from .runner import Cell


def evaluate(alg: Algorithm, cell: "Cell", test: Any, ctx: RunContext, plugins: "Plugins",
             device: torch.device) -> tuple[list[list[Any]], dict[str, Any]]:
    """Adapt to each episode's support set and score its query set; rows are (episode, metric, value, ms)."""
    sampler = make_sampler(test, cell.n_way, cell.k_shot, cell.n_query, cell.seed,
                           where=f"{cell.dataset.name} split {cell.dataset.split!r}")
    regression = plugins.datasets.get(cell.dataset.name).task == "regression"
    metrics = [plugins.metrics.get(m) for m in cell.metrics]
    fingerprint = hashlib.sha256()
    rows: list[list[Any]] = []
    adapt_ms: list[float] = []
    start = time.perf_counter()
    label = f"eval {cell.algorithm} {cell.dataset.name} {cell.n_way}w{cell.k_shot}s seed {cell.seed}"
    with ctx.progress(label, cell.n_episodes) as advance:
        for index in range(cell.n_episodes):
            episode, identity = sampler.draw(index)  # one draw: the episode and what identifies it
            fingerprint.update(identity)
            episode = episode.to(device)
            torch.manual_seed(cell.seed * 1_000_003 + index)  # adaptation randomness is per episode
            t0 = time.perf_counter()
            predictor = alg.adapt(episode.support(), ctx)
            output = predictor.predict(episode.query_x) if regression else predictor.predict_proba(episode.query_x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ms = (time.perf_counter() - t0) * 1000
            adapt_ms.append(ms)
            y, out = episode.query_y.cpu(), output.detach().cpu()
            for metric in metrics:
                rows.append([index, metric.name, metric(y, out), round(ms, 3)])
            advance(1)
    return rows, {"digest": fingerprint.hexdigest()[:16], "count": cell.n_episodes,
                  "timings": {"eval_s": round(time.perf_counter() - start, 3),
                              "adapt_ms_mean": round(sum(adapt_ms) / len(adapt_ms), 3)}}

"""Scoring a fitted algorithm on a cell's test episodes: adapt to each support set, score each query set.

Kept apart from the runner so that every place that executes a cell (in process, a worker process, a
Ray task) scores episodes the same way.

Two paths give the same numbers:

* per episode: ``adapt(support)`` then ``predict_proba(query_x)`` on images, for every algorithm;
* embed once: for algorithms that opt in (``Algorithm.embeds_once``), every test image an episode uses
  is embedded once per fit, in large batches, and each episode indexes into those embeddings by row
  (``adapt_embedded`` / ``predict_proba`` of embeddings). Its cost barely grows with the episode count.

``adapt_ms`` times what is done per episode: on the embed-once path that excludes embedding, whose
total is ``embed_s``; ``adapt_path`` in the timings says which path produced a result.
"""
from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import torch

from .algorithm import Algorithm
from .context import RunContext
from .episode import EpisodeRows, EpisodeSampler, Support, make_sampler

if TYPE_CHECKING:
    from .plugins import Plugins
    from .runner import Cell

EMBED_BATCH = 1024  # test images per embed_images call on the embed-once path
PER_EPISODE, EMBED_ONCE = "per-episode", "embed-once"


def evaluate(alg: Algorithm, cell: "Cell", test: Any, ctx: RunContext, plugins: "Plugins",
             device: torch.device, allow_embed_once: bool = True) -> tuple[list[list[Any]], dict[str, Any]]:
    """Adapt to each episode's support set and score its query set; rows are (episode, metric, value, ms).

    ``allow_embed_once=False`` forces the per-episode path (tests and benchmarks compare the two).
    """
    sampler = make_sampler(test, cell.n_way, cell.k_shot, cell.n_query, cell.seed,
                           where=f"{cell.dataset.name} split {cell.dataset.split!r}")
    regression = plugins.datasets.get(cell.dataset.name).task == "regression"
    metrics = [plugins.metrics.get(m) for m in cell.metrics]
    label = f"eval {cell.algorithm} {cell.dataset.name} {cell.n_way}w{cell.k_shot}s seed {cell.seed}"
    if allow_embed_once and not regression and isinstance(sampler, EpisodeSampler) and alg.embeds_once():
        return _embed_once(alg, cell, sampler, ctx, metrics, device, label)
    return _per_episode(alg, cell, sampler, ctx, metrics, device, label, regression)


def _per_episode(alg: Algorithm, cell: "Cell", sampler: Any, ctx: RunContext, metrics: list, device: torch.device,
                 label: str, regression: bool) -> tuple[list[list[Any]], dict[str, Any]]:
    fingerprint = hashlib.sha256()
    scorer = _Scorer(metrics)
    start = time.perf_counter()
    with ctx.progress(label, cell.n_episodes) as advance:
        for index in range(cell.n_episodes):
            episode, identity = sampler.draw(index)  # one draw: the episode and what identifies it
            fingerprint.update(identity)
            episode = episode.to(device)
            torch.manual_seed(cell.seed * 1_000_003 + index)  # adaptation randomness is per episode
            t0 = time.perf_counter()
            predictor = alg.adapt(episode.support(), ctx)
            output = predictor.predict(episode.query_x) if regression else predictor.predict_proba(episode.query_x)
            scorer.add(index, episode.query_y, output, _elapsed_ms(t0, device))
            advance(1)
    return scorer.rows, _info(fingerprint, cell, start, scorer, {"adapt_path": PER_EPISODE})


def _embed_once(alg: Algorithm, cell: "Cell", sampler: EpisodeSampler, ctx: RunContext, metrics: list,
                device: torch.device, label: str) -> tuple[list[list[Any]], dict[str, Any]]:
    fingerprint = hashlib.sha256()
    start = time.perf_counter()
    drawn: list[EpisodeRows] = []
    for index in range(cell.n_episodes):
        rows, identity = sampler.draw_rows(index)
        fingerprint.update(identity)
        drawn.append(rows)
    t0 = time.perf_counter()
    z, position = embed_rows(alg, sampler.data, drawn, ctx, device, label)
    embed_s = time.perf_counter() - t0
    scorer = _Scorer(metrics)
    with ctx.progress(label, cell.n_episodes) as advance:
        for index, rows in enumerate(drawn):
            support_z, query_z = z[position[rows.support]], z[position[rows.query]]
            torch.manual_seed(cell.seed * 1_000_003 + index)  # the same per-episode randomness as adapt()
            t1 = time.perf_counter()
            predictor = alg.adapt_embedded(Support(support_z, rows.support_y.to(device), cell.n_way), ctx)
            output = predictor.predict_proba(query_z)
            scorer.add(index, rows.query_y, output, _elapsed_ms(t1, device))
            advance(1)
    extra = {"adapt_path": EMBED_ONCE, "embed_s": round(embed_s, 3), "embedded_images": int(len(z))}
    return scorer.rows, _info(fingerprint, cell, start, scorer, extra)


def embed_rows(alg: Algorithm, data: Any, drawn: list[EpisodeRows], ctx: RunContext, device: torch.device,
               label: str = "embed") -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of every row the episodes use, each once, and ``position[row]`` into them (-1: unused)."""
    needed = torch.unique(torch.cat([torch.cat((r.support, r.query)) for r in drawn]))
    position = torch.full((len(data.labels),), -1, dtype=torch.long)
    position[needed] = torch.arange(len(needed))
    chunks = needed.split(EMBED_BATCH)
    parts = []
    with ctx.progress(f"{label}: embed {len(needed)} test images", len(chunks)) as advance:
        for chunk in chunks:
            parts.append(alg.embed_images(data.as_float(chunk).to(device), ctx).detach())
            advance(1)
    z = torch.cat(parts)
    return z, position.to(z.device)


class _Scorer:
    """Metric rows (episode, metric, value, ms) and the adaptation times."""

    def __init__(self, metrics: list) -> None:
        self.metrics = metrics
        self.rows: list[list[Any]] = []
        self.adapt_ms: list[float] = []

    def add(self, index: int, y: torch.Tensor, output: torch.Tensor, ms: float) -> None:
        self.adapt_ms.append(ms)
        y, out = y.cpu(), output.detach().cpu()
        for metric in self.metrics:
            self.rows.append([index, metric.name, metric(y, out), round(ms, 3)])


def _elapsed_ms(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000


def _info(fingerprint: Any, cell: "Cell", start: float, scorer: _Scorer, extra: dict[str, Any]) -> dict[str, Any]:
    adapt_ms = scorer.adapt_ms
    return {"digest": fingerprint.hexdigest()[:16], "count": cell.n_episodes,
            "timings": {"eval_s": round(time.perf_counter() - start, 3),
                        "adapt_ms_mean": round(sum(adapt_ms) / len(adapt_ms), 3), **extra}}

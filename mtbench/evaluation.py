"""Scoring a fitted algorithm on a cell's test episodes: adapt to each support set, score each query set.

Kept apart from the runner so that every place that executes a cell (in process, a worker process, a
Ray task) scores episodes the same way.

Two paths give the same numbers:

* per episode: ``adapt(support)`` then ``predict_proba(query_x)`` on images, for every algorithm;
* embed once: for algorithms that opt in (``Algorithm.embeds_once``), every test image an episode uses
  is embedded once per fit, in batches, and each episode indexes into those embeddings by row
  (``adapt_embedded`` / ``predict_proba`` of embeddings). Its cost barely grows with the episode count.
  The embeddings are kept for the next cell of the same fit (same fitted state, hyperparameters and test
  split: other protocols of a suite), so a test image is embedded at most once per fit. Where the
  adaptation is a fixed function of the embeddings (``Algorithm.adapts_embedded_in_batches``: prototypes),
  blocks of episodes are adapted and scored at once, so that what is left per episode is drawing it.

``adapt_ms`` times what is done per episode (in blocks: the block's time over its episodes): on the
embed-once path that excludes embedding, whose total is ``embed_s`` (``embedded_images`` new ones,
``reused_embeddings`` from an earlier cell of the fit); ``adapt_path`` in the timings says which path
produced a result.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .algorithm import Algorithm
from .context import RunContext
from .episode import EpisodeSampler, Support, make_sampler

if TYPE_CHECKING:
    from .plugins import Plugins
    from .runner import Cell

# Test images per embed_images call on the embed-once path. On the CPU small batches keep a Conv-4's
# activations in cache (2 threads, 28x28: 0.11 ms per image at 32-75 images, 0.25 at 128-512).
EMBED_BATCH = {"cpu": 64}
EMBED_BATCH_DEFAULT = 512
PER_EPISODE, EMBED_ONCE, EMBED_ONCE_BATCHED = "per-episode", "embed-once", "embed-once, episodes in blocks"
# Episodes adapted at once when an algorithm adapts to embeddings in batches: enough to make the per-episode
# share of each tensor operation negligible, few enough that a block's distance tensors stay small.
EPISODE_BLOCK = 256


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
            seed_episode(cell.seed * 1_000_003 + index, device)  # adaptation randomness is per episode
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
    _, rows, identities = sampler.indices_many(range(cell.n_episodes))  # rows [E, n_way, k_shot + n_query]
    for identity in identities:
        fingerprint.update(identity)
    rows_t = torch.from_numpy(rows)
    support_rows = rows_t[:, :, : cell.k_shot].reshape(len(rows_t), -1)
    query_rows = rows_t[:, :, cell.k_shot:].reshape(len(rows_t), -1)
    support_y, query_y = sampler.labels()
    t0 = time.perf_counter()
    store = _store_for(alg, sampler.data, device)
    before = store.count
    needed = torch.from_numpy(np.unique(rows))
    z, position = store.embed(alg, needed, ctx, device, label)
    embed_s = time.perf_counter() - t0
    scorer = _Scorer(metrics)
    batched = alg.adapts_embedded_in_batches()
    block = EPISODE_BLOCK if batched else 1
    with ctx.progress(label, cell.n_episodes) as advance:
        for first in range(0, cell.n_episodes, block):
            s_rows, q_rows = support_rows[first:first + block], query_rows[first:first + block]
            if batched:
                t1 = time.perf_counter()
                predictor = alg.adapt_embedded_batch(Support(z[position[s_rows]], support_y.to(device), cell.n_way),
                                                     ctx)
                output = predictor.predict_proba(z[position[q_rows]])
                ms = _elapsed_ms(t1, device) / len(s_rows)
                scorer.add_many(first, query_y.expand(len(s_rows), -1), output, ms)
            else:
                seed_episode(cell.seed * 1_000_003 + first, device)  # the same per-episode randomness as adapt()
                t1 = time.perf_counter()
                predictor = alg.adapt_embedded(Support(z[position[s_rows[0]]], support_y.to(device), cell.n_way), ctx)
                output = predictor.predict_proba(z[position[q_rows[0]]])
                scorer.add(first, query_y, output, _elapsed_ms(t1, device))
            advance(len(s_rows))
    extra = {"adapt_path": EMBED_ONCE_BATCHED if batched else EMBED_ONCE, "embed_s": round(embed_s, 3),
             "embedded_images": store.count - before, "reused_embeddings": len(needed) - (store.count - before)}
    return scorer.rows, _info(fingerprint, cell, start, scorer, extra)


@dataclass(eq=False)
class EmbeddingStore:
    """Embeddings of one fit's images of one split, grown lazily: ``z[position[row]]`` (position -1: not yet)."""

    key: str
    data: Any  # the split (held, so that its identity cannot be reused by another object)
    position: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    z: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return 0 if self.z is None else len(self.z)

    def embed(self, alg: Algorithm, needed: torch.Tensor, ctx: RunContext, device: torch.device,
              label: str = "embed") -> tuple[torch.Tensor, torch.Tensor]:
        """Embed the ``needed`` rows not embedded yet; returns (z, position) on z's device."""
        if not len(self.position):
            self.position = torch.full((len(self.data.labels),), -1, dtype=torch.long)
        missing = needed[self.position[needed] < 0]
        chunks = missing.split(EMBED_BATCH.get(device.type, EMBED_BATCH_DEFAULT))
        parts = [] if self.z is None else [self.z]
        with ctx.progress(f"{label}: embed {len(missing)} test images", len(chunks)) as advance:
            for chunk in chunks:
                parts.append(alg.embed_images(self.data.as_float(chunk).to(device), ctx).detach())
                advance(1)
        if len(missing):
            self.position[missing] = torch.arange(self.count, self.count + len(missing))
            self.z = torch.cat(parts)
        assert self.z is not None
        return self.z, self.position.to(self.z.device)


_STORE: list[EmbeddingStore] = []  # the last fit's embeddings only: one fit is evaluated at a time


def _store_for(alg: Algorithm, data: Any, device: torch.device) -> EmbeddingStore:
    """The embeddings kept for this fit and split, or a new empty store (which replaces the kept one)."""
    key = fit_identity(alg, device)
    if key is not None and _STORE and _STORE[0].key == key and _STORE[0].data is data:
        return _STORE[0]
    store = EmbeddingStore(key or "", data)
    _STORE[:] = [store] if key is not None else []
    return store


def forget_embeddings() -> None:
    """Drop the kept embeddings (benchmarks time each evaluation from scratch)."""
    _STORE.clear()


def fit_identity(alg: Algorithm, device: torch.device) -> str | None:
    """A hash of the fitted state, hyperparameters and class: equal only for fits that embed alike.

    None when the algorithm cannot list its fitted state (its embeddings are then not kept).
    """
    try:
        tensors, meta = alg.fitted_state()
    except (TypeError, NotImplementedError):
        return None
    h = hashlib.sha256(f"{type(alg).__module__}.{type(alg).__qualname__} {device}".encode())
    h.update(json.dumps([meta, alg.get_params()], sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def seed_episode(seed: int, device: torch.device) -> None:
    """``torch.manual_seed`` for the generators an episode can use: the CPU's, and CUDA's on a CUDA run.

    ``torch.manual_seed`` also queues seeding for every uninitialised accelerator backend, recording a
    stack trace each time (about 0.5 ms): per episode, that was most of embed-once evaluation's cost.
    """
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)


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

    def add_many(self, first: int, y: torch.Tensor, output: torch.Tensor, ms: float) -> None:
        """Episodes ``first``, ``first + 1``, ... at once: ``y`` [E, Q], ``output`` [E, Q, C]; ``ms`` each."""
        y, out = y.cpu(), output.detach().cpu()
        values = [metric.many(y, out) for metric in self.metrics]
        self.adapt_ms.extend([ms] * len(y))
        for offset in range(len(y)):
            for metric, column in zip(self.metrics, values):
                self.rows.append([first + offset, metric.name, column[offset], round(ms, 3)])


def _elapsed_ms(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000


def _info(fingerprint: Any, cell: "Cell", start: float, scorer: _Scorer, extra: dict[str, Any]) -> dict[str, Any]:
    adapt_ms = scorer.adapt_ms
    return {"digest": fingerprint.hexdigest()[:16], "count": cell.n_episodes,
            "timings": {"eval_s": round(time.perf_counter() - start, 3),
                        "adapt_ms_mean": round(sum(adapt_ms) / len(adapt_ms), 3), **extra}}

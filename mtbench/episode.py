"""The N-way K-shot protocol: explicit episodes and a random-access, deterministic sampler.

Episode ``i`` of (split, ways, shots, queries, seed) depends on nothing else: not on the algorithm, not
on which episodes were drawn before. Every algorithm is therefore scored on identical episodes, which
makes comparisons paired.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .data import LabeledImages
from .errors import ProtocolError


@dataclass(frozen=True, eq=False)
class Episode:
    """One task. Support labels are 0..N-1 in class-major order; ``classes[j]`` is local label j's split class."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: tuple[int, ...]
    index: int
    seed: int

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to(self, device: torch.device | str) -> "Episode":
        return replace(self, support_x=self.support_x.to(device), support_y=self.support_y.to(device),
                       query_x=self.query_x.to(device), query_y=self.query_y.to(device))

    def support(self) -> "Support":
        return Support(self.support_x, self.support_y, self.n_way)


@dataclass(frozen=True, eq=False)
class Support:
    """What an algorithm sees at adaptation time: labelled examples and the number of classes."""

    x: torch.Tensor
    y: torch.Tensor
    n_way: int


def episode_rng(seed: int, index: int, n_way: int, k_shot: int, n_query: int, stream: int = 0) -> np.random.Generator:
    """The generator of one episode: a function of its coordinates only.

    ``stream`` 0 is evaluation; training and validation episodes use other streams, so they never
    coincide with test episodes (which matters for task families such as sinusoids, where every split
    draws from the same distribution).
    """
    words = (seed, index, n_way, k_shot, n_query, stream, 0x6D74)
    if all(0 <= w < 2**32 for w in words):  # the same entropy words as the list, without converting it in Python
        return np.random.default_rng(np.array(words, dtype=np.uint32))
    return np.random.default_rng(list(words))


class EpisodeSampler:
    """Random access to the episodes of (split, n_way, k_shot, n_query, seed).

    ``sampler[i]`` draws ``n_way`` distinct classes, then ``k_shot + n_query`` distinct examples per
    class, all with one generator seeded by the episode's coordinates.
    """

    def __init__(self, data: LabeledImages, n_way: int, k_shot: int, n_query: int, seed: int,
                 where: str = "split", stream: int = 0) -> None:
        check_protocol(data, n_way, k_shot, n_query, where)
        self.data, self.n_way, self.k_shot, self.n_query, self.seed = data, n_way, k_shot, n_query, seed
        self.stream = stream
        self._rows = data.class_rows.numpy()
        self._padded = bool((self._rows < 0).any())  # classes of unequal size: rows padded with -1
        self._ways = np.arange(n_way)[:, None]

    def indices(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Chosen classes [n_way] and the rows of their examples [n_way, k_shot + n_query]."""
        rng = episode_rng(self.seed, index, self.n_way, self.k_shot, self.n_query, self.stream)
        classes = rng.choice(self.data.n_classes, size=self.n_way, replace=False)
        rows = self._rows[classes]
        keys = rng.random(rows.shape)
        if self._padded:
            keys[rows < 0] = np.inf  # padding never wins
        order = np.argsort(keys, axis=1)[:, : self.k_shot + self.n_query]
        return classes, rows[self._ways, order]

    def __getitem__(self, index: int) -> Episode:
        return self.draw(index)[0]

    def draw(self, index: int) -> tuple[Episode, bytes]:
        """Episode ``index`` and the bytes that identify it (classes and rows), for the digest in results."""
        rows, identity = self.draw_rows(index)
        return Episode(
            support_x=self.data.as_float(rows.support),
            support_y=rows.support_y,
            query_x=self.data.as_float(rows.query),
            query_y=rows.query_y,
            classes=rows.classes,
            index=index,
            seed=self.seed,
        ), identity

    def indices_many(self, indices: range) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
        """:meth:`indices` of several episodes, stacked: classes [E, n_way], rows [E, n_way, k_shot + n_query]
        and each episode's identity bytes (those of :meth:`draw`). No tensor is made per episode."""
        drawn = [self.indices(i) for i in indices]
        identities = [classes.tobytes() + rows.tobytes() for classes, rows in drawn]
        shape = (0, self.n_way)
        classes = np.stack([c for c, _ in drawn]) if drawn else np.empty(shape, dtype=np.int64)
        rows = np.stack([r for _, r in drawn]) if drawn else np.empty((*shape, self.k_shot + self.n_query), np.int64)
        return classes, rows, identities

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query labels [n_way * k_shot], [n_way * n_query]: the same class-major order in every
        episode."""
        ways = torch.arange(self.n_way)
        return ways.repeat_interleave(self.k_shot), ways.repeat_interleave(self.n_query)

    def draw_rows(self, index: int) -> tuple["EpisodeRows", bytes]:
        """Episode ``index`` as row numbers of the split (no image is copied) and the bytes of :meth:`draw`."""
        classes, rows = self.indices(index)
        rows_t = torch.from_numpy(rows)
        support_y, query_y = self.labels()
        return EpisodeRows(support=rows_t[:, : self.k_shot].reshape(-1), query=rows_t[:, self.k_shot:].reshape(-1),
                           support_y=support_y, query_y=query_y,
                           classes=tuple(int(c) for c in classes)), classes.tobytes() + rows.tobytes()


@dataclass(frozen=True, eq=False)
class EpisodeRows:
    """An episode as rows of its split: what evaluation needs to index precomputed per-image embeddings."""

    support: torch.Tensor  # [n_way * k_shot] rows, class-major like Episode.support_x
    query: torch.Tensor  # [n_way * n_query] rows
    support_y: torch.Tensor
    query_y: torch.Tensor
    classes: tuple[int, ...]


@runtime_checkable
class TaskDistribution(Protocol):
    """A family of regression tasks (e.g. sinusoids): ``draw`` picks one task and ``n_points`` (x, y) of it."""

    def draw(self, rng: np.random.Generator, n_points: int) -> tuple[np.ndarray, np.ndarray]:
        ...


class TaskSampler:
    """Random access to regression episodes: episode ``i`` is one task with K support and Q query points.

    The same seeding rule as :class:`EpisodeSampler`: episode ``i`` depends only on its coordinates.
    """

    def __init__(self, tasks: TaskDistribution, k_shot: int, n_query: int, seed: int, where: str = "split",
                 stream: int = 0) -> None:
        if k_shot < 1 or n_query < 1:
            raise ProtocolError(f"regression episodes need shots >= 1 and queries >= 1 in {where}")
        self.tasks, self.k_shot, self.n_query, self.seed, self.stream = tasks, k_shot, n_query, seed, stream

    def points(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = episode_rng(self.seed, index, 1, self.k_shot, self.n_query, self.stream)
        return self.tasks.draw(rng, self.k_shot + self.n_query)

    def __getitem__(self, index: int) -> Episode:
        return self.draw(index)[0]

    def draw(self, index: int) -> tuple[Episode, bytes]:
        """Episode ``index`` and its fingerprint, from one draw of its generator."""
        xs, ys = self.points(index)
        x, y = (torch.as_tensor(a, dtype=torch.float32).reshape(-1, 1) for a in (xs, ys))
        k = self.k_shot
        return Episode(x[:k], y[:k], x[k:], y[k:], classes=(0,), index=index, seed=self.seed), xs.tobytes() + ys.tobytes()


def make_sampler(data: object, n_way: int, k_shot: int, n_query: int, seed: int,
                 where: str = "split", stream: int = 0) -> EpisodeSampler | TaskSampler:
    """The sampler for a split: N-way K-shot classification, or K-shot regression on a task family."""
    if isinstance(data, LabeledImages):
        return EpisodeSampler(data, n_way, k_shot, n_query, seed, where, stream)
    if isinstance(data, TaskDistribution):
        if n_way != 1:
            raise ProtocolError(f"{where} is a regression task family: use ways = 1, not {n_way}")
        return TaskSampler(data, k_shot, n_query, seed, where, stream)
    raise ProtocolError(f"{where} is neither LabeledImages nor a TaskDistribution ({type(data).__name__})")


def check_protocol(data: LabeledImages, n_way: int, k_shot: int, n_query: int, where: str) -> None:
    """Raise a one-line :class:`ProtocolError` if the split cannot supply the episodes."""
    if n_way < 1 or k_shot < 1 or n_query < 0:
        raise ProtocolError(f"need ways >= 1, shots >= 1, queries >= 0; got {n_way}, {k_shot}, {n_query}")
    if n_way > data.n_classes:
        raise ProtocolError(f"{n_way}-way episodes need {n_way} classes but {where} has {data.n_classes}; "
                            f"lower the ways or use a split with more classes")
    need = k_shot + n_query
    counts = data.class_counts
    if len(counts) and int(counts.min()) < need:
        worst = int(torch.argmin(counts))
        raise ProtocolError(f"{k_shot}-shot + {n_query}-query needs {need} examples per class but class "
                            f"{data.class_names[worst]!r} of {where} has {int(counts[worst])}; lower the "
                            f"shots or queries")

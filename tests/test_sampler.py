"""The episode sampler: class and label invariants, determinism, random access, bad protocols."""
from __future__ import annotations

import pytest
import torch

from mtbench import EpisodeSampler, LabeledImages, ProtocolError


def make_split(n_classes: int = 12, per_class: int = 10, uneven: bool = False) -> LabeledImages:
    counts = [per_class + (i % 3 if uneven else 0) for i in range(n_classes)]
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])
    # every image encodes its own row number, so episodes can be traced back to rows
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    return LabeledImages(images[perm], labels[perm], tuple(f"c{i}" for i in range(n_classes)))


def rows_of(x: torch.Tensor) -> list[int]:
    return x[:, 0, 0, 0].long().tolist()


@pytest.mark.parametrize("n_way,k_shot,n_query", [(5, 1, 15 - 6), (5, 5, 5), (12, 2, 3), (2, 1, 0)])
def test_episode_invariants(n_way, k_shot, n_query):
    data = make_split(uneven=True)
    sampler = EpisodeSampler(data, n_way, k_shot, n_query, seed=3)
    for index in range(20):
        ep = sampler[index]
        assert len(set(ep.classes)) == n_way
        assert ep.support_y.tolist() == [c for c in range(n_way) for _ in range(k_shot)]
        assert ep.query_y.tolist() == [c for c in range(n_way) for _ in range(n_query)]
        support_rows, query_rows = rows_of(ep.support_x), rows_of(ep.query_x)
        assert not set(support_rows) & set(query_rows), "support and query share an image"
        assert len(set(support_rows + query_rows)) == n_way * (k_shot + n_query)
        original = data.images[:, 0, 0, 0].long()
        for rows, labels in ((support_rows, ep.support_y), (query_rows, ep.query_y)):
            for row, local in zip(rows, labels.tolist()):
                position = (original == row).nonzero().item()
                assert int(data.labels[position]) == ep.classes[local]
        assert ep.index == index and ep.seed == 3


def test_random_access_is_deterministic_and_order_free():
    data = make_split()
    a = EpisodeSampler(data, 5, 1, 5, seed=0)
    b = EpisodeSampler(data, 5, 1, 5, seed=0)
    forward = [rows_of(a[i].query_x) for i in range(10)]
    backward = [rows_of(b[i].query_x) for i in reversed(range(10))][::-1]
    assert forward == backward
    assert torch.equal(a[7].support_x, b[7].support_x)


def test_seed_and_index_change_the_episode():
    data = make_split()
    base = EpisodeSampler(data, 5, 1, 5, seed=0)
    other = EpisodeSampler(data, 5, 1, 5, seed=1)
    assert rows_of(base[0].query_x) != rows_of(base[1].query_x)
    assert rows_of(base[0].query_x) != rows_of(other[0].query_x)


def test_classes_are_used_evenly():
    data = make_split(n_classes=10)
    sampler = EpisodeSampler(data, 5, 1, 1, seed=0)
    counts = torch.zeros(10)
    for i in range(400):
        counts[list(sampler[i].classes)] += 1
    assert counts.min() > 150 and counts.max() < 250  # expected 200 each


def test_too_many_ways_is_a_clear_error():
    with pytest.raises(ProtocolError, match="6-way episodes need 6 classes but test split has 5"):
        EpisodeSampler(make_split(n_classes=5), 6, 1, 1, seed=0, where="test split")


def test_too_many_shots_and_queries_is_a_clear_error():
    with pytest.raises(ProtocolError, match=r"5-shot \+ 6-query needs 11 examples per class .* has 10"):
        EpisodeSampler(make_split(per_class=10), 5, 5, 6, seed=0)


def test_uint8_images_are_scaled():
    data = LabeledImages(torch.full((4, 1, 2, 2), 255, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), ("a", "b"))
    ep = EpisodeSampler(data, 2, 1, 1, seed=0)[0]
    assert ep.support_x.dtype == torch.float32 and float(ep.support_x.max()) == 1.0


def test_a_block_of_episodes_is_the_episodes_drawn_one_by_one():
    """indices_many (embed-once evaluation) stacks exactly what draw gives each episode: its rows, its identity
    bytes (the results' digest) and the shared class-major labels, also with uneven classes."""
    sampler = EpisodeSampler(make_split(uneven=True), 4, 2, 3, seed=3)
    classes, rows, identities = sampler.indices_many(range(5, 12))
    support_y, query_y = sampler.labels()
    assert classes.shape == (7, 4) and rows.shape == (7, 4, 5) and len(identities) == 7
    for offset, index in enumerate(range(5, 12)):
        episode_rows, identity = sampler.draw_rows(index)
        assert identities[offset] == identity and tuple(classes[offset]) == episode_rows.classes
        assert torch.equal(torch.from_numpy(rows[offset, :, :2]).reshape(-1), episode_rows.support)
        assert torch.equal(torch.from_numpy(rows[offset, :, 2:]).reshape(-1), episode_rows.query)
        assert torch.equal(support_y, episode_rows.support_y) and torch.equal(query_y, episode_rows.query_y)
    empty = sampler.indices_many(range(0))
    assert empty[1].shape == (0, 4, 5) and empty[2] == []


def test_episode_generators_are_seeded_from_the_coordinates_as_a_list_of_integers():
    """The fast path (32-bit words as an array) gives numpy's stream for the list of coordinates, so episodes stay
    those of every earlier result; coordinates of 2**32 and more take the list itself."""
    import numpy as np

    from mtbench.episode import episode_rng
    for coords in [(0, 0, 5, 1, 15, 0), (3, 9_999, 20, 1, 15, 2), (2**32 - 1, 2**31, 5, 5, 0, 1), (2**40, 7, 5, 1, 1, 0)]:
        expected = np.random.default_rng([*coords, 0x6D74])
        assert np.array_equal(episode_rng(*coords).random(8), expected.random(8))

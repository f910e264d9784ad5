"""Kaiser et al.'s memory module: the update rule on a hand-made sequence (miss, hit, oldest-slot overwrite,
ages, random tie-breaking), the memory loss, nearest-neighbour answers, and the conformance kit."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtbench import FitData, Target
from mtbench.testing import _blobs, _context, _episode, parametrize_with_checks
from mtbench_zoo.memory import EMPTY, KeyValueMemory, Memory


def unit(*xs: float) -> torch.Tensor:
    return F.normalize(torch.tensor(xs, dtype=torch.float32), dim=0)


def test_update_rule_on_a_hand_made_sequence():
    mem = KeyValueMemory(size=3, dim=2, generator=torch.Generator().manual_seed(0))
    assert mem.write(unit(1, 0), 0) == "miss"  # empty memory: a miss, written to one of three equally old slots
    a = int((mem.values == 0).nonzero())
    assert mem.ages[a] == 0 and sorted(mem.ages.tolist()) == [0, 1, 1]

    assert mem.write(unit(0, 1), 1) == "miss"  # nearest key holds label 0: a miss, into an oldest (empty) slot
    b = int((mem.values == 1).nonzero())
    (empty,) = {0, 1, 2} - {a, b}
    assert mem.values[empty] == EMPTY and mem.ages.tolist()[a] == 1 and mem.ages[b] == 0 and mem.ages[empty] == 2

    q = unit(1, 0.2)
    assert mem.write(q, 0) == "hit"  # nearest key holds label 0: averaged with the query and normalised, age reset
    torch.testing.assert_close(mem.keys[a], F.normalize(q + unit(1, 0), dim=0))
    assert math.isclose(mem.keys[a].norm().item(), 1.0, rel_tol=1e-6)
    assert (mem.ages[a], mem.ages[b], mem.ages[empty]) == (0, 1, 3)

    assert mem.write(unit(-1, 0), 2) == "miss"  # the oldest slot is the empty one
    assert mem.values[empty] == 2 and (mem.ages[a], mem.ages[b], mem.ages[empty]) == (1, 2, 0)

    assert mem.write(unit(0, -1), 3) == "miss"  # memory full: the oldest slot (label 1's) is overwritten
    assert mem.values.tolist()[b] == 3 and mem.values.tolist()[a] == 0 and mem.values.tolist()[empty] == 2
    torch.testing.assert_close(mem.keys[b], unit(0, -1))
    assert (mem.ages[a], mem.ages[b], mem.ages[empty]) == (2, 0, 1)


def test_miss_breaks_ties_between_oldest_slots_at_random_and_never_picks_a_younger_one():
    chosen = set()
    for seed in range(40):
        mem = KeyValueMemory(size=4, dim=2, generator=torch.Generator().manual_seed(seed))
        mem.ages = torch.tensor([5.0, 7.0, 7.0, 6.0])
        mem.values = torch.tensor([0, 1, 2, 3])
        mem.keys = torch.stack([unit(1, 0), unit(0, 1), unit(-1, 0), unit(0, -1)])
        mem.write(unit(1, 1), 9)
        chosen.add(int((mem.values == 9).nonzero()))
    assert chosen == {1, 2}


def test_memory_loss_is_the_margin_between_nearest_positive_and_negative_keys():
    mem = KeyValueMemory(size=4, dim=2)
    for key, label in [(unit(1, 1), 1), (unit(1, 0), 0), (unit(0, -1), 1)]:
        assert mem.write(key, label) == "miss"
    q = unit(1, 0.5).requires_grad_(True)
    loss = mem.loss(q[None], torch.tensor([0]), margin=0.1)
    pos, neg = q @ unit(1, 0), q @ unit(1, 1)  # nearest label-0 key, nearest other key
    torch.testing.assert_close(loss[0], torch.relu(neg - pos + 0.1))
    loss.sum().backward()
    assert q.grad is not None and mem.keys.grad is None  # the memory is not trained by backprop
    # no positive key yet (a new label): its similarity counts as 0
    lone = mem.loss(unit(0, 1)[None], torch.tensor([7]), margin=0.1)
    torch.testing.assert_close(lone[0], unit(0, 1) @ unit(1, 1) + 0.1)


def test_episode_answers_are_the_nearest_keys_value():
    base, novel = _blobs()
    alg = Memory(backbone="mlp", validate_every=0)
    torch.manual_seed(0)
    alg.init_fitted(FitData(base, novel, Target(5, 1, 3), seed=0), _context())
    ep = _episode(5, 1, index=1)
    proba = alg.adapt(ep.support(), _context()).predict_proba(ep.query_x)
    with torch.no_grad():
        ks = F.normalize(alg.project_(alg.encoder_(ep.support_x)), dim=1)
        kq = F.normalize(alg.project_(alg.encoder_(ep.query_x)), dim=1)
    assert proba.argmax(1).tolist() == ep.support_y[(kq @ ks.T).argmax(1)].tolist()
    torch.testing.assert_close(proba.sum(1), torch.ones(len(proba)))


@parametrize_with_checks([Memory(backbone="mlp", episodes=30, validate_every=0)])
def test_conformance(algorithm, check):
    check(algorithm)

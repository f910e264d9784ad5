"""Meta-Baseline: cosine nearest-centroid logits with a temperature, on a hand-built episode; conformance."""
from __future__ import annotations

import math

import torch

from mtbench import Support
from mtbench.testing import parametrize_with_checks
from mtbench_zoo.meta_baseline import MetaBaseline, cosine_centroid_logits


def test_cosine_centroid_logits_on_a_hand_built_episode():
    # 3-way 2-shot: class 0 around the x axis, class 1 along y, class 2 along -x; order scrambled.
    support = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [4.0, 0.0], [0.0, 3.0], [-3.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    query = torch.tensor([[1.0, 1.0], [0.0, -5.0], [-2.0, 0.0]])
    logits = cosine_centroid_logits(query, support, labels, 3, tau=10.0)
    r = 1 / math.sqrt(2)
    expected = 10.0 * torch.tensor([[r, r, -r], [0.0, -1.0, 0.0], [-1.0, 0.0, 1.0]])
    assert torch.allclose(logits, expected, atol=1e-6)
    # the temperature only scales; the centroid is the mean, not a single shot
    assert torch.allclose(cosine_centroid_logits(query, support, labels, 3, tau=2.5), expected / 4, atol=1e-6)
    skewed = cosine_centroid_logits(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                                    torch.tensor([0, 0]), 1, 1.0)
    assert torch.allclose(skewed, torch.tensor([[1.0]]))  # mean (0.5, 0.5) points at (1, 1)


def test_predictor_uses_learned_temperature():
    torch.manual_seed(0)
    alg = MetaBaseline()
    alg.encoder_ = torch.nn.Flatten()
    alg.tau_ = torch.tensor(3.0)
    support = Support(torch.eye(2).view(2, 1, 1, 2), torch.tensor([0, 1]), 2)
    proba = alg.adapt(support, None).predict_proba(torch.tensor([[[[1.0, 0.0]]]]))
    assert torch.allclose(proba, torch.softmax(torch.tensor([[3.0, 0.0]]), 1))


@parametrize_with_checks([MetaBaseline(backbone="mlp", pretrain_steps=30, batch_size=32, meta_episodes=20,
                                       validate_every=10, val_episodes=3)])
def test_conformance(algorithm, check):
    check(algorithm)

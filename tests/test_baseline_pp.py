"""Baseline++: the cosine classifier, its learned scale, the head-training recipes, conformance."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtbench import RunContext
from mtbench.testing import parametrize_with_checks
from mtbench_zoo.baseline_pp import CHEN2019, BaselinePP, CosineClassifier, train_head


def test_cosine_classifier_is_scale_times_cosine_and_ignores_feature_norm():
    torch.manual_seed(0)
    head = CosineClassifier(3, 2, scale=7.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0], [3.0, 3.0, 0.0]])
    expected = 7.0 * torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 0.0], [1 / math.sqrt(2), 1.0]])
    assert torch.allclose(head(z), expected, atol=1e-6)
    assert torch.allclose(head(10 * z), head(z), atol=1e-5)  # only directions matter


def test_scale_is_learned_in_pretraining_and_fixed_in_new_heads():
    head = CosineClassifier(4, 3)
    loss = F.cross_entropy(head(torch.randn(8, 4)), torch.randint(0, 3, (8,)))
    loss.backward()
    assert head.scale.grad is not None and head.scale.grad.abs() > 0
    frozen = CosineClassifier(4, 3, scale=5.0, learn_scale=False)
    assert not frozen.scale.requires_grad


def test_chen2019_recipe_takes_100_epochs_of_batches_of_4():
    """The recipe's step count is epochs x ceil(n / 4): count optimizer steps through the loss calls."""
    torch.manual_seed(0)
    y = torch.arange(5).repeat(2)
    z = 3 * torch.eye(5)[y] + 0.1 * torch.randn(10, 5)
    head = torch.nn.Linear(5, 5)
    calls = []
    original = head.forward
    head.forward = lambda x: calls.append(len(x)) or original(x)
    train_head(head, z, y, RunContext(torch.device("cpu")), recipe="chen2019")
    assert len(calls) == CHEN2019["epochs"] * math.ceil(10 / CHEN2019["batch_size"])
    assert max(calls) == 4 and sum(calls) == CHEN2019["epochs"] * 10  # every support example once per epoch
    assert (head(z).argmax(1) == y).float().mean() == 1.0


@parametrize_with_checks([BaselinePP(backbone="mlp", pretrain_steps=30, batch_size=32, head_steps=30),
                          BaselinePP(backbone="mlp", pretrain_steps=30, batch_size=32, recipe="chen2019")])
def test_conformance(algorithm, check):
    check(algorithm)

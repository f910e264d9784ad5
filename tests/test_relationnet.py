"""Relation Networks: the relation module's scores on a hand-built episode, K-shot class sums, the paper's
embedding shapes, and the conformance kit."""
from __future__ import annotations

import torch
from torch import nn

from mtbench.testing import parametrize_with_checks
from mtbench_zoo.relationnet import RelationConv4, RelationHead, RelationModule, RelationNet, class_sums, relation_scores


def l1_relation(features: int, bias: float) -> RelationModule:
    """A hand-set relation module on 1x1 maps: score(c, q) = sigmoid(bias - sum_i |c_i - q_i|).

    conv1 writes c_i - q_i and q_i - c_i to two channels (ReLU keeps the positive one), conv2 sums them,
    fc1 copies the sum and fc2 maps it to bias - sum. BatchNorm is the identity (running mean 0, var 1, eps 0)."""
    module = RelationModule((features, 1, 1), channels=2 * features, hidden=2).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        conv1, bn1 = module.convs[0][0], module.convs[0][1]
        conv2, bn2 = module.convs[1][0], module.convs[1][1]
        for i in range(features):  # pair channels: [class features, query features]
            conv1.weight[2 * i, i, 1, 1], conv1.weight[2 * i, features + i, 1, 1] = 1.0, -1.0
            conv1.weight[2 * i + 1, i, 1, 1], conv1.weight[2 * i + 1, features + i, 1, 1] = -1.0, 1.0
        conv2.weight[0, :, 1, 1] = 1.0
        for bn in (bn1, bn2):
            bn.weight.fill_(1.0), bn.running_mean.zero_(), bn.running_var.fill_(1.0)
            bn.eps = 0.0
        module.fc1.weight[0, 0] = 1.0
        module.fc2.weight[0, 0], module.fc2.bias[0] = -1.0, bias
    return module


def test_relation_scores_on_a_hand_built_episode():
    relation = l1_relation(features=2, bias=2.0)
    # 2-way 2-shot support embeddings; the class feature is the SUM of a class's embeddings (paper section 3.2)
    support_z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 0.0]])
    support_y = torch.tensor([0, 0, 1, 1])
    classes = class_sums(support_z, support_y, 2)
    assert classes.tolist() == [[1.0, 1.0], [0.5, 0.5]]
    query_z = torch.tensor([[1.0, 1.0], [0.5, 0.0], [2.0, -1.0]])
    with torch.no_grad():
        scores = relation_scores(relation, classes[:, :, None, None], query_z[:, :, None, None])
    # L1 distances to (1, 1) and (0.5, 0.5): q0 -> 0, 1; q1 -> 1.5, 0.5; q2 -> 3, 3
    expected = torch.sigmoid(2.0 - torch.tensor([[0.0, 1.0], [1.5, 0.5], [3.0, 3.0]]))
    torch.testing.assert_close(scores, expected)
    # the episode head normalises the scores to a distribution without changing the decision
    head = RelationHead(relation, (2, 1, 1), support_z, support_y, 2)
    proba = head(query_z)
    torch.testing.assert_close(proba, expected / expected.sum(1, keepdim=True))
    assert proba.argmax(1).tolist()[:2] == [0, 1]


def test_relation_scores_pair_every_class_with_every_query():
    torch.manual_seed(0)
    relation = RelationModule((4, 3, 3)).eval()
    classes, queries = torch.randn(5, 4, 3, 3), torch.randn(7, 4, 3, 3)
    with torch.no_grad():
        scores = relation_scores(relation, classes, queries)
        one = relation(torch.cat([classes[3], queries[6]])[None])
    assert scores.shape == (7, 5) and ((scores > 0) & (scores < 1)).all()
    torch.testing.assert_close(scores[6, 3], one[0])
    # the split first convolution equals scoring every explicitly concatenated pair, in training mode too
    # (BatchNorm then normalises over the same n_query * n_way pairs)
    pairs = torch.cat([classes[None].expand(7, -1, -1, -1, -1), queries[:, None].expand(-1, 5, -1, -1, -1)], 2)
    relation.train()
    torch.testing.assert_close(relation_scores(relation, classes, queries), relation(pairs.flatten(0, 1)).view(7, 5))


def test_paper_embedding_and_relation_shapes():
    encoder = RelationConv4((1, 28, 28))
    assert encoder.feature_shape == (64, 5, 5) and encoder.out_dim == 1600
    assert encoder(torch.zeros(3, 1, 28, 28)).shape == (3, 1600)
    relation = RelationModule(encoder.feature_shape)
    assert relation.fc1.in_features == 64 and relation.fc1.out_features == 8  # 5x5 -> 2x2 -> 1x1 maps
    assert isinstance(relation.convs[0][-1], nn.MaxPool2d) and isinstance(relation.convs[1][-1], nn.MaxPool2d)


@parametrize_with_checks([RelationNet(backbone="mlp", episodes=30, train_query=3, validate_every=0),
                          RelationNet(episodes=60, train_query=2, validate_every=0)])
def test_conformance(algorithm, check):
    check(algorithm)

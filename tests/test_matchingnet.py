"""Matching Networks: attention is a distribution over the support set, and with a one-hot (argmax) kernel the
classifier is exactly cosine 1-nearest-neighbour; full context embeddings read the whole support set."""
from __future__ import annotations

import torch
from sklearn.neighbors import KNeighborsClassifier

from mtbench import FitData, Target
from mtbench.testing import _blobs, _context, _episode, parametrize_with_checks
from mtbench_zoo.matchingnet import FullContextEmbedding, MatchingNet, attention, label_distribution


def test_attention_rows_sum_to_one_and_follow_cosine_order():
    gen = torch.Generator().manual_seed(0)
    support, query = torch.randn(10, 16, generator=gen), torch.randn(7, 16, generator=gen)
    attn = attention(query, support)
    assert attn.shape == (7, 10) and (attn > 0).all()
    torch.testing.assert_close(attn.sum(1), torch.ones(7))
    # softmax of cosine similarities: scaling a support vector changes nothing, the ranking is the cosine ranking
    torch.testing.assert_close(attention(query, support * (torch.rand(10, 1, generator=gen) * 5 + 0.1)), attn)
    cos = torch.nn.functional.cosine_similarity(query[:, None], support[None], dim=2)
    assert torch.equal(attn.argsort(1), cos.argsort(1))
    # a temperature sharpens the same distribution; as it goes to 0 the softmax becomes the argmax kernel
    sharp = attention(query, support, temperature=0.1)
    torch.testing.assert_close(sharp.sum(1), torch.ones(7))
    assert (sharp.max(1).values > attn.max(1).values).all() and torch.equal(sharp.argmax(1), attn.argmax(1))
    torch.testing.assert_close(attention(query, support, temperature=1e-4), attention(query, support, "argmax"))
    probs = label_distribution(attn, torch.arange(10) % 5, 5)
    torch.testing.assert_close(probs.sum(1), torch.ones(7))
    torch.testing.assert_close(probs[:, 0], attn[:, 0] + attn[:, 5])


def _untrained(**params) -> tuple[MatchingNet, FitData]:
    base, novel = _blobs()
    data = FitData(base, novel, Target(5, 1, 3), seed=0)
    torch.manual_seed(0)
    alg = MatchingNet(backbone="mlp", **params)
    alg.init_fitted(data, _context())
    return alg, data


def test_argmax_kernel_is_cosine_one_nearest_neighbour():
    alg, _ = _untrained(kernel="argmax")
    for k_shot in (1, 3):
        ep = _episode(5, k_shot, index=2)
        proba = alg.adapt(ep.support(), _context()).predict_proba(ep.query_x)
        assert set(proba.flatten().tolist()) <= {0.0, 1.0}
        with torch.no_grad():
            zs, zq = alg.encoder_(ep.support_x), alg.encoder_(ep.query_x)
        knn = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(zs.numpy(), ep.support_y.numpy())
        assert proba.argmax(1).tolist() == knn.predict(zq.numpy()).tolist()
    # the softmax kernel (the paper's) spreads mass over the support set instead
    alg.set_params(kernel="softmax")
    ep = _episode(5, 1)
    assert (alg.adapt(ep.support(), _context()).predict_proba(ep.query_x) < 1).all()


def test_full_context_embeddings_read_the_whole_support_set_but_not_other_queries():
    torch.manual_seed(0)
    fce = FullContextEmbedding(8, steps=3)
    support, query = torch.randn(6, 8), torch.randn(4, 8)
    g = fce.support(support)
    changed = support.clone()
    changed[-1] += 1.0
    assert not torch.allclose(fce.support(changed)[0], g[0]), "the first support embedding ignores the last one"
    f = fce.query(query, g)
    torch.testing.assert_close(fce.query(query[2:3], g), f[2:3])
    attn = attention(f, g)
    torch.testing.assert_close(attn.sum(1), torch.ones(4))


def test_fit_records_deviations_and_validation():
    base, novel = _blobs()
    alg = MatchingNet(backbone="mlp", episodes=20, train_way=10, validate_every=10, val_episodes=3)
    alg.fit(FitData(base, novel, Target(5, 1, 3), seed=0), _context())
    info = alg.fit_info()
    assert [row["step"] for row in info["history"]["validation"]] == [10, 20]
    assert any("trained 10-way" in d for d in info["deviations"])


@parametrize_with_checks([MatchingNet(backbone="mlp", episodes=30, validate_every=0),
                          MatchingNet(backbone="mlp", episodes=20, fce=True, fce_steps=2, validate_every=0)])
def test_conformance(algorithm, check):
    check(algorithm)

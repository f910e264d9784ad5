"""Conformance checks every algorithm plugin should pass (after scikit-learn's ``check_estimator``).

Use in a plugin's tests::

    from mtbench.testing import parametrize_with_checks

    @parametrize_with_checks([MyAlgorithm(episodes=3, backbone="mlp")])
    def test_conformance(algorithm, check):
        check(algorithm)

Checks read only the algorithm's declared tags, never its name. They run on the CPU with synthetic data.
"""
from __future__ import annotations

import copy
import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import torch

from .algorithm import Algorithm, FitData, Target
from .context import RunContext
from .data import LabeledImages
from .episode import EpisodeSampler, Support
from .fitstate import load_state, save_state, supports_fitted_state


@lru_cache(maxsize=1)
def _blobs() -> tuple[LabeledImages, LabeledImages]:
    gen = torch.Generator().manual_seed(0)

    def split(n_classes: int, prefix: str) -> LabeledImages:
        protos = torch.randn(n_classes, 1, 8, 8, generator=gen) * 2
        images = (protos[:, None] + 0.5 * torch.randn(n_classes, 10, 1, 8, 8, generator=gen)).reshape(-1, 1, 8, 8)
        return LabeledImages(images, torch.arange(n_classes).repeat_interleave(10),
                             tuple(f"{prefix}{i}" for i in range(n_classes)))
    return split(20, "base"), split(10, "novel")


@lru_cache(maxsize=1)
def _plugins():
    from .plugins import load_plugins
    return load_plugins()


def _context() -> RunContext:
    return RunContext(torch.device("cpu"), seed=0, budget="quick", plugins=_plugins())


_FITTED: dict[tuple[str, str, int, int], Algorithm] = {}


def _fitted(algorithm: Algorithm, n_way: int = 5, k_shot: int = 1) -> Algorithm:
    """A fitted copy; fits are cached per (class, params, protocol) so checks stay fast."""
    key = (type(algorithm).__qualname__, repr(algorithm), n_way, k_shot)
    if key not in _FITTED:
        base, novel = _blobs()
        alg = algorithm.clone()
        torch.manual_seed(0)
        _FITTED[key] = alg.fit(_fit_data(alg, n_way, k_shot), _context())
    return copy.deepcopy(_FITTED[key])


def _fit_data(algorithm: Algorithm, n_way: int = 5, k_shot: int = 1) -> FitData:
    """Base classes to fit on, the novel classes as validation; an algorithm tagged ``uses_unlabeled_target``
    also gets the novel images (labels withheld), as the runner gives it the test split's images."""
    base, novel = _blobs()
    unlabeled = novel.images if algorithm.tags.uses_unlabeled_target else None
    return FitData(base, novel, Target(n_way, k_shot, 3), seed=0, unlabeled_target=unlabeled)


def _episode(n_way: int = 5, k_shot: int = 1, index: int = 0):
    return EpisodeSampler(_blobs()[1], n_way, k_shot, 3, seed=0)[index]


def _state(alg: Algorithm) -> dict[str, torch.Tensor]:
    tensors = {}
    for attr, value in vars(alg).items():
        if isinstance(value, torch.nn.Module):
            tensors.update({f"{attr}.{k}": v.detach().clone() for k, v in value.state_dict().items()})
        elif isinstance(value, torch.Tensor):
            tensors[attr] = value.detach().clone()
    return tensors


def check_init_stores_params_only(algorithm: Algorithm) -> None:
    fresh = type(algorithm)()
    fitted = [k for k in vars(fresh) if k.endswith("_")]
    assert not fitted, f"__init__ sets fitted attributes {fitted}"
    assert set(vars(fresh)) == set(fresh.param_names()), "__init__ must store exactly its parameters"


def check_clone_roundtrip(algorithm: Algorithm) -> None:
    clone = algorithm.clone()
    assert clone is not algorithm and clone.get_params() == algorithm.get_params()


def check_fit_returns_self(algorithm: Algorithm) -> None:
    base, novel = _blobs()
    alg = algorithm.clone()
    assert alg.fit(_fit_data(alg), _context()) is alg


def check_predict_proba_contract(algorithm: Algorithm) -> None:
    for n_way, k_shot in ((2, 1), (5, 1), (5, 5)):
        alg, ep = _fitted(algorithm, n_way, k_shot), _episode(n_way, k_shot)
        proba = alg.adapt(ep.support(), _context()).predict_proba(ep.query_x)
        assert proba.shape == (len(ep.query_y), n_way), f"{n_way}-way {k_shot}-shot: shape {tuple(proba.shape)}"
        assert torch.isfinite(proba).all() and (proba >= 0).all()
        assert torch.allclose(proba.sum(1), torch.ones(len(proba)), atol=1e-4), "rows must sum to 1"


def check_adapt_does_not_mutate(algorithm: Algorithm) -> None:
    alg = _fitted(algorithm)
    before = _state(alg)
    params = copy.deepcopy(alg.get_params())
    ep = _episode()
    alg.adapt(ep.support(), _context()).predict_proba(ep.query_x)
    after = _state(alg)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"adapt changed the fitted model: {changed[:5]}"
    assert alg.get_params() == params


def check_seed_determinism(algorithm: Algorithm) -> None:
    """Same seed, same fit and same predictions (fits are not cached here)."""
    base, novel = _blobs()
    outputs = []
    for _ in range(2):
        torch.manual_seed(0)
        alg = algorithm.clone().fit(_fit_data(algorithm), _context())
        ep = _episode()
        torch.manual_seed(123)
        outputs.append(alg.adapt(ep.support(), _context()).predict_proba(ep.query_x))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6), "same seed, different predictions"


def check_query_independence(algorithm: Algorithm) -> None:
    """Without ``Tags(transductive=True)``, a query's prediction must not depend on the other queries."""
    if algorithm.tags.transductive:
        return
    alg, ep = _fitted(algorithm), _episode()
    torch.manual_seed(1)
    whole = alg.adapt(ep.support(), _context()).predict_proba(ep.query_x)
    torch.manual_seed(1)
    half = alg.adapt(ep.support(), _context()).predict_proba(ep.query_x[::2])
    assert torch.allclose(whole[::2], half, atol=1e-5), "predictions depend on the other queries (BatchNorm in train mode?)"


def check_beats_chance(algorithm: Algorithm) -> None:
    alg = _fitted(algorithm)
    correct = total = 0
    for index in range(10):
        ep = _episode(index=index)
        proba = alg.adapt(ep.support(), _context()).predict_proba(ep.query_x)
        correct += int((proba.argmax(1) == ep.query_y).sum())
        total += len(ep.query_y)
    assert correct / total > 0.4, f"accuracy {correct / total:.2f} on easy blobs (chance 0.2)"


def check_fitted_state_roundtrip(algorithm: Algorithm) -> None:
    """The fit cache's round trip: fitted state to a tensors + JSON file, loaded into a fresh instance built by
    ``init_fitted``, gives the same fit record and identical predictions. Skipped without ``init_fitted``."""
    if not supports_fitted_state(algorithm):
        return
    base, novel = _blobs()
    alg = _fitted(algorithm)
    tensors, meta = alg.fitted_state()
    assert all(isinstance(t, torch.Tensor) for t in tensors.values()), "fitted_state tensors must be tensors"
    key = {"kind": "fit", "check": type(algorithm).__qualname__}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.safetensors"
        save_state(path, key, tensors, {"state": meta})
        loaded, stored = load_state(path, key)
    fresh = algorithm.clone()
    fresh.init_fitted(_fit_data(fresh), _context())
    fresh.load_fitted_state(loaded, stored["state"])
    assert json.dumps(fresh.fit_info(), sort_keys=True, default=str) == \
        json.dumps(alg.fit_info(), sort_keys=True, default=str), "fit_info differs after the round trip"
    ep = _episode()
    outputs = []
    for model in (alg, fresh):
        torch.manual_seed(3)
        outputs.append(model.adapt(ep.support(), _context()).predict_proba(ep.query_x))
    assert torch.equal(outputs[0], outputs[1]), "predictions differ after saving and loading the fitted state"


def check_embed_once_matches_adapt(algorithm: Algorithm) -> None:
    """Algorithms that opt in to embed-once evaluation predict the same from embeddings as from images.

    Embeddings come from one batch of support and query images, as in evaluation; probabilities must
    agree to 1e-5 (batch composition may move the last bits of a convolution) and the argmax exactly.
    """
    ctx = _context()
    for n_way, k_shot in ((5, 1), (5, 5)):
        alg, ep = _fitted(algorithm, n_way, k_shot), _episode(n_way, k_shot)
        if not alg.embeds_once():
            return
        torch.manual_seed(5)
        direct = alg.adapt(ep.support(), ctx).predict_proba(ep.query_x)
        z = alg.embed_images(torch.cat([ep.support_x, ep.query_x]), ctx)
        assert torch.allclose(alg.embed_images(ep.support_x[:2], ctx), z[:2], atol=1e-5), \
            "an image's embedding depends on the rest of the batch"
        n = len(ep.support_y)
        torch.manual_seed(5)
        embedded = alg.adapt_embedded(Support(z[:n], ep.support_y, ep.n_way), ctx).predict_proba(z[n:])
        assert embedded.shape == direct.shape, f"{n_way}-way {k_shot}-shot: shape {tuple(embedded.shape)}"
        assert torch.allclose(direct, embedded, atol=1e-5), "adapt_embedded disagrees with adapt"
        assert torch.equal(direct.argmax(1), embedded.argmax(1))


def check_batched_adaptation_matches_per_episode(algorithm: Algorithm) -> None:
    """Algorithms that adapt to blocks of episodes at once (``adapts_embedded_in_batches``) give each episode
    exactly what ``adapt_embedded`` gives it alone: same probabilities, bit for bit."""
    ctx = _context()
    for n_way, k_shot in ((5, 1), (5, 5)):
        alg = _fitted(algorithm, n_way, k_shot)
        if not (alg.embeds_once() and alg.adapts_embedded_in_batches()):
            return
        episodes = [_episode(n_way, k_shot, i) for i in range(4)]
        support_z = torch.stack([alg.embed_images(ep.support_x, ctx) for ep in episodes])
        query_z = torch.stack([alg.embed_images(ep.query_x, ctx) for ep in episodes])
        y = episodes[0].support_y
        assert all(torch.equal(ep.support_y, y) for ep in episodes), "episodes differ in label order"
        batch = alg.adapt_embedded_batch(Support(support_z, y, n_way), ctx).predict_proba(query_z)
        assert batch.shape == (len(episodes), *query_z.shape[1:2], n_way), f"batch shape {tuple(batch.shape)}"
        for i in range(len(episodes)):
            alone = alg.adapt_embedded(Support(support_z[i], y, n_way), ctx).predict_proba(query_z[i])
            assert torch.equal(batch[i], alone), f"episode {i} of a block differs from adapt_embedded alone"


CHECKS: tuple[Callable[[Algorithm], None], ...] = (
    check_init_stores_params_only, check_clone_roundtrip, check_fit_returns_self, check_predict_proba_contract,
    check_adapt_does_not_mutate, check_seed_determinism, check_query_independence, check_beats_chance,
    check_fitted_state_roundtrip, check_embed_once_matches_adapt, check_batched_adaptation_matches_per_episode,
)


def check_algorithm(algorithm: Algorithm, expected_failed_checks: dict[str, str] | None = None) -> None:
    """Run every check; ``expected_failed_checks`` maps check names to the reason they may fail."""
    for check in CHECKS:
        if check.__name__ not in (expected_failed_checks or {}):
            check(algorithm)


def parametrize_with_checks(algorithms: Iterable[Algorithm]):
    """A pytest parametrize decorator over (algorithm, check) with readable ids."""
    import pytest

    cases = [(alg, check) for alg in algorithms for check in CHECKS]
    ids = [f"{alg.name}-{check.__name__}" for alg, check in cases]
    return pytest.mark.parametrize("algorithm,check", cases, ids=ids)

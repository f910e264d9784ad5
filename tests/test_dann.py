"""DANN: the gradient-reversal layer, the paper's schedule, what the adversary changes, the target record."""
from __future__ import annotations

import math

import pytest
import torch

from mtbench import FitData, MtbenchError, RunContext, Target
from mtbench.testing import _blobs, parametrize_with_checks
from mtbench_zoo.dann import DANN, describe_images, reversal_weight, reverse_gradient


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_reversal_layer_is_identity_forward_and_minus_weight_identity_backward(weight):
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(reverse_gradient(x, weight), x)
    # full Jacobian through a downstream function: d f(GRL(x)) / dx = -weight * d f(x) / dx
    f = lambda t: (t.sin() * torch.arange(1.0, 13.0, dtype=torch.float64).view(4, 3)).sum()
    (reversed_grad,) = torch.autograd.grad(f(reverse_gradient(x, weight)), x)
    (plain_grad,) = torch.autograd.grad(f(x), x)
    assert torch.allclose(reversed_grad, -weight * plain_grad)
    jac = torch.autograd.functional.jacobian(lambda t: reverse_gradient(t, weight), x.detach())
    assert torch.allclose(jac.reshape(12, 12), -weight * torch.eye(12, dtype=torch.float64))


def test_plain_gradient_matches_finite_differences():
    """The reference the reversed gradient is compared with is itself right (central differences)."""
    x = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    f = lambda t: (t ** 3).sum()
    (grad,) = torch.autograd.grad(f(reverse_gradient(x, 0.5)), x)
    eps = 1e-6
    numeric = torch.stack([(f(x.detach() + eps * e) - f(x.detach() - eps * e)) / (2 * eps)
                           for e in torch.eye(2, dtype=torch.float64)])
    assert torch.allclose(grad, -0.5 * numeric, atol=1e-6)


def test_schedule_is_ganins_lambda_p():
    assert reversal_weight(0.0) == 0.0
    assert reversal_weight(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert reversal_weight(1.0) == pytest.approx(0.9999092, abs=1e-7)
    values = [reversal_weight(p / 10) for p in range(11)]
    assert values == sorted(values) and reversal_weight(0.1) == pytest.approx(0.462117, abs=1e-6)


def fit_dann(plugins, weight: float, steps: int = 12) -> DANN:
    base, novel = _blobs()
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    alg = DANN(backbone="mlp", steps=steps, batch_size=8, adversary_weight=weight, validate_every=0)
    torch.manual_seed(0)
    return alg.fit(FitData(base, novel, Target(5, 1, 3), seed=0, unlabeled_target=novel.images), ctx)


def test_without_adversary_the_domain_loss_never_reaches_the_encoder(plugins):
    """Weight 0 trains the same classifier path as a run whose domain branch is cut; weight 1 does not."""
    ablation, adversarial = fit_dann(plugins, 0.0), fit_dann(plugins, 1.0)
    state = lambda alg: torch.cat([p.flatten() for p in alg.encoder_.parameters()])
    assert not torch.allclose(state(ablation), state(adversarial))
    # the ablation's encoder gradient equals the label loss's alone at a fixed point
    alg = ablation
    base, novel = _blobs()
    xs, ys = base.images[:8], base.labels[:8]
    xt = novel.images[:8]

    def encoder_grad(include_domain: bool) -> torch.Tensor:
        alg.encoder_.zero_grad()
        z = alg.encoder_(torch.cat([xs, xt]))
        loss = torch.nn.functional.cross_entropy(alg.classifier_(z[:8]), ys)
        if include_domain:
            logit = alg.domain_(reverse_gradient(z, 0.0)).squeeze(1)
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.ones(16))
        loss.backward()
        return torch.cat([p.grad.flatten() for p in alg.encoder_.parameters()])
    assert torch.allclose(encoder_grad(True), encoder_grad(False))


def test_fit_records_the_unlabeled_images_it_saw(plugins):
    alg = fit_dann(plugins, 1.0)
    _, novel = _blobs()
    seen = alg.fit_info()["unlabeled_target"]
    assert seen["used"] and seen["count"] == len(novel.images) and seen["images_drawn"] == 12 * 8
    assert seen["sha256"] == describe_images(novel.images)["sha256"] != describe_images(novel.images[1:])["sha256"]
    assert DANN.tags.uses_unlabeled_target
    assert [row["reversal_weight"] for row in alg.fit_info()["domain_log"]][0] == 0.0


def test_fit_without_target_images_is_an_error(plugins):
    base, novel = _blobs()
    with pytest.raises(MtbenchError, match="unlabeled target"):
        DANN(backbone="mlp", steps=2).fit(FitData(base, novel, Target(5, 1, 3), seed=0),
                                          RunContext(torch.device("cpu"), plugins=plugins))


@parametrize_with_checks([DANN(backbone="mlp", steps=40, batch_size=16, validate_every=0)])
def test_conformance(algorithm, check):
    check(algorithm)

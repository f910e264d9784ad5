"""Reptile: its inner Adam is Adam, its outer step moves theta toward the adapted weights, and evaluation
never changes the carried optimiser state."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from mtbench import Support
from mtbench_zoo.functional import MetaConv4, MetaModel
from mtbench_zoo.reptile import InnerAdam, Reptile


def test_inner_adam_matches_torch_adam_with_beta1_zero():
    torch.manual_seed(0)
    weights = {"a": torch.randn(3, 4), "b": torch.randn(4)}
    reference = {n: w.clone().requires_grad_() for n, w in weights.items()}
    opt = torch.optim.Adam(reference.values(), lr=0.01, betas=(0.0, 0.999), eps=1e-8)
    adam = InnerAdam(0.01)
    mine = {n: w.clone().requires_grad_() for n, w in weights.items()}
    for step in range(5):
        target = torch.randn(3, generator=torch.Generator().manual_seed(step))

        def loss(p):
            return ((p["a"] @ p["b"] - target) ** 2).sum()
        opt.zero_grad()
        loss(reference).backward()
        opt.step()
        grads = torch.autograd.grad(loss(mine), list(mine.values()))
        mine = adam.step(mine, dict(zip(mine, grads)))
    for n in weights:
        # torch adds eps to sqrt(v_hat), supervised-reptile (TF) to sqrt(v): equal up to eps-sized terms
        assert torch.allclose(mine[n], reference[n], atol=1e-5), n


def tiny_reptile() -> Reptile:
    torch.manual_seed(0)
    alg = Reptile(inner_lr=0.01, inner_steps=3, inner_batch=4, test_inner_steps=4, test_inner_batch=3, meta_batch=2)
    alg.model_ = MetaModel(MetaConv4((1, 8, 8), hidden=4), 3)
    alg.regression_ = False
    alg.settings_ = alg.settings(3)
    alg.adam_state_ = InnerAdam(0.01).state
    return alg


def test_train_task_walks_through_different_minibatches_and_leaves_theta_alone():
    alg = tiny_reptile()
    theta = {n: p.detach().clone() for n, p in alg.model_.named_parameters()}
    x, y = torch.randn(12, 1, 8, 8), torch.arange(3).repeat(4)
    torch.manual_seed(1)
    fast, loss = alg.train_task(dict(alg.model_.named_parameters()), x, y, alg.inner_adam(), 3, 4)
    assert alg.adam_state_["t"] == 3 and loss > 0
    assert all(not torch.equal(fast[n], theta[n]) for n in ("head.weight", "features.convs.0.weight"))
    assert all(torch.equal(p, theta[n]) for n, p in alg.model_.named_parameters())


def test_adaptation_is_repeatable_and_does_not_touch_the_carried_state():
    alg = tiny_reptile()
    alg.inner_adam().step({n: p.detach() for n, p in alg.model_.named_parameters()},
                          {n: torch.ones_like(p) for n, p in alg.model_.named_parameters()})
    state = alg.inner_adam().copy()
    support = Support(torch.randn(6, 1, 8, 8), torch.arange(3).repeat(2), 3)
    query = torch.randn(5, 1, 8, 8)
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)  # the runner seeds every episode
        outputs.append(alg.adapt(support, None).predict_proba(query))
    assert torch.equal(outputs[0], outputs[1])
    carried = alg.inner_adam()
    assert carried.t == state.t == 1 and all(torch.equal(carried.v[n], state.v[n]) for n in state.v)


def test_outer_step_moves_theta_toward_the_mean_of_the_adapted_weights():
    """theta <- theta + eps * mean(phi_task - theta): with eps = 1 theta lands on the mean."""
    alg = tiny_reptile()
    params = dict(alg.model_.named_parameters())
    tasks = [(torch.randn(12, 1, 8, 8), torch.arange(3).repeat(4)) for _ in range(2)]
    probe = alg.inner_adam().copy()
    torch.manual_seed(5)
    adapted = [alg.train_task(params, x, y, probe, 3, 4)[0] for x, y in tasks]
    expected = {n: sum(a[n].detach() for a in adapted) / 2 for n in params}
    torch.manual_seed(5)
    episodes = [SimpleNamespace(support_x=x, support_y=y) for x, y in tasks]
    grads, loss = alg.meta_gradient(params, episodes)
    assert loss > 0
    opt = torch.optim.SGD(params.values(), lr=1.0)
    for n, p in params.items():
        p.grad = grads[n]
    opt.step()
    for n, p in params.items():
        assert torch.allclose(p, expected[n], atol=1e-6), n
    assert F.mse_loss(params["head.weight"], expected["head.weight"]) < 1e-12

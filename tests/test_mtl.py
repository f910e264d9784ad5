"""Meta-Transfer Learning: scaling/shifting leaves the pretrained network unchanged at (1, 0); only SS and the
head receive meta-gradients; the inner loop; hard tasks come from failure classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mtbench import FitData, RunContext, Target
from mtbench.episode import EpisodeSampler
from mtbench.testing import _blobs, parametrize_with_checks
from mtbench_zoo.mtl import MTL, HardTasks, ScaleShift, adapt_head


def test_identity_at_scale_one_shift_zero_for_conv4_and_mlp(plugins):
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    for name, shape in (("conv4", (1, 28, 28)), ("mlp", (1, 8, 8))):
        torch.manual_seed(0)
        encoder = ctx.build_backbone(name, shape)
        for m in encoder.modules():  # non-trivial running statistics, as after pretraining
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.rand(6, *shape)
        expected = encoder.eval()(x)
        wrapped = ScaleShift(encoder)
        assert torch.allclose(wrapped(x), expected, atol=1e-6)
        assert len(wrapped.layers) == (4 if name == "conv4" else 2)
        with torch.no_grad():  # a real scale changes it: the parameters are in the computation
            wrapped.scale[wrapped._key(wrapped.layers[0])].mul_(2.0)
        assert not torch.allclose(wrapped(x), expected, atol=1e-4)


def test_only_scale_shift_and_head_receive_meta_gradients(plugins):
    base, _ = _blobs()
    alg = MTL(backbone="mlp", inner_steps=3)
    alg.init_fitted(FitData(base, None, Target(5, 1, 3), seed=0), RunContext(torch.device("cpu"), plugins=plugins))
    ep = EpisodeSampler(base, 5, 1, 3, seed=0)[0]
    loss, per_class = alg.task_loss(ep)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in alg.encoder_.encoder.parameters())
    for p in [*alg.encoder_.scale.parameters(), *alg.encoder_.shift.parameters(), *alg.head_.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert per_class.shape == (5,) and ((per_class >= 0) & (per_class <= 1)).all()


def test_inner_loop_is_plain_gradient_descent_on_the_head_and_second_order():
    torch.manual_seed(0)
    z, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    w1, b1 = adapt_head(z, y, w, b, lr=0.5, steps=1, create_graph=True)
    gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(z, w, b), y), (w, b))
    assert torch.allclose(w1, w - 0.5 * gw) and torch.allclose(b1, b - 0.5 * gb)
    # the meta-gradient through two steps matches finite differences of the initial weights
    f = lambda w0: F.cross_entropy(F.linear(z, *adapt_head(z, y, w0, b, 0.5, 2, True)), y)
    (grad,) = torch.autograd.grad(f(w), w)
    eps, e = 1e-6, torch.zeros_like(w)
    e[1, 2] = 1.0
    numeric = (f((w + eps * e).detach().requires_grad_()) - f((w - eps * e).detach().requires_grad_())) / (2 * eps)
    assert torch.isclose(grad[1, 2], numeric, atol=1e-7)


def test_hard_tasks_are_drawn_from_failure_classes():
    base, _ = _blobs()
    hard = HardTasks(base, n_way=3, k_shot=1, n_query=2, seed=0)
    sampler = EpisodeSampler(base, 3, 1, 2, seed=0)
    assert hard.draw() is None  # no failures yet
    failures = []
    for i in range(3):
        ep = sampler[i]
        hard.remember(ep, torch.tensor([1.0, 0.0, 0.5]))  # local class 1 was the worst
        failures.append(ep.classes[1])
    task = hard.draw()
    assert sorted(task.classes) == sorted(set(failures))
    for label, cls in enumerate(task.classes):  # the images are those classes' images
        rows = base.class_rows[cls]
        pool = base.as_float(rows[rows >= 0])
        for x in task.support_x[task.support_y == label]:
            assert any(torch.equal(x, p) for p in pool)


@parametrize_with_checks([MTL(backbone="mlp", pretrain_steps=30, batch_size=32, meta_iterations=20, validate_every=0),
                          MTL(backbone="mlp", pretrain_steps=30, batch_size=32, meta_iterations=20, validate_every=0,
                              hard_tasks=True)])
def test_conformance(algorithm, check):
    check(algorithm)


def test_the_best_validated_step_is_kept(plugins):
    base, novel = _blobs()
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    alg = MTL(backbone="mlp", pretrain_steps=20, batch_size=32, meta_iterations=6, validate_every=3, val_episodes=4,
              inner_steps=5, inner_lr=0.1, ss_lr=0.05, head_lr=0.05)
    torch.manual_seed(0)
    alg.fit(FitData(base, novel, Target(5, 1, 3), seed=0), ctx)
    info = alg.fit_info()
    scores = [row["val_accuracy"] for row in info["history"]["validation"]]
    assert info["selected"]["step"] in (0, 3, 6) and info["selected"]["val_accuracy"] >= max(scores)
    from mtbench_zoo.meta_baseline import validation_accuracy
    assert validation_accuracy(alg, FitData(base, novel, Target(5, 1, 3), seed=0), ctx, 4) == \
        info["selected"]["val_accuracy"]  # the kept model is the one that scored it

"""Gradient-based meta-learning: exact second-order meta-gradients, vmap = grouped = loop, the joint objective."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtbench import EpisodeSampler, FitData, LabeledImages, RunContext, Target
from mtbench.plugins import load_plugins
from mtbench_zoo.functional import InnerLoop, MetaConv4, MetaModel, l2_distance, meta_objective
from mtbench_zoo.maml import MAML, MAMLL2SP
from mtbench_zoo.sinusoid import SineTasks


def tiny_tasks(n_tasks: int = 3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(6 * 4, 1, 8, 8, generator=gen, dtype=torch.float32)
    data = LabeledImages(images, torch.arange(6).repeat_interleave(4), tuple("abcdef"))
    sampler = EpisodeSampler(data, 3, 1, 2, seed=0)
    tasks = [sampler[i] for i in range(n_tasks)]
    for ep in tasks:
        object.__setattr__(ep, "support_x", ep.support_x.to(dtype))
        object.__setattr__(ep, "query_x", ep.query_x.to(dtype))
    return tasks


def tiny_model(dtype=torch.float64) -> MetaModel:
    torch.manual_seed(0)
    model = MetaModel(MetaConv4((1, 8, 8), hidden=4), 3).to(dtype)
    with torch.no_grad():  # non-trivial norm parameters, so every term of the gradient is exercised
        for name, p in model.named_parameters():
            if "norms" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def meta_loss(model, params, tasks, first_order=False, strategy="loop", steps=2):
    inner = InnerLoop(F.cross_entropy, steps, 0.3)
    loss, grads = meta_objective(model, params, tasks, inner, first_order, strategy)
    return loss, grads


def test_second_order_meta_gradient_matches_finite_differences():
    model, tasks = tiny_model(), tiny_tasks()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    loss, _ = meta_loss(model, params, tasks)
    grads = torch.autograd.grad(loss, list(params.values()))
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in params.items()}
        eps = 1e-7  # the loss is sharply curved near ReLU kinks: larger steps leave the linear regime
        plus = {n: (p + eps * direction[n]).detach() for n, p in params.items()}
        minus = {n: (p - eps * direction[n]).detach() for n, p in params.items()}
        numeric = (meta_loss(model, {n: p.requires_grad_() for n, p in plus.items()}, tasks)[0]
                   - meta_loss(model, {n: p.requires_grad_() for n, p in minus.items()}, tasks)[0]) / (2 * eps)
        analytic = sum((g * direction[n]).sum() for g, n in zip(grads, params)).detach()
        assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_meta_gradient_equals_the_loop(first_order):
    model, tasks = tiny_model(), tiny_tasks()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    loss, _ = meta_loss(model, params, tasks, first_order)
    loop_grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    vloss, vgrads = meta_loss(model, params, tasks, first_order, strategy="vmap")
    assert float(vloss) == pytest.approx(float(loss), rel=1e-12)
    for name in params:
        assert torch.allclose(vgrads["params"][name], loop_grads[name], rtol=1e-9, atol=1e-12), name
    if not first_order:  # conv biases before a norm get exactly zero gradient
        assert float(loop_grads["features.convs.0.bias"].abs().max()) < 1e-12


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("variant", ["maml", "anil-with-support-stats", "meta-sgd-with-inner-penalty"])
def test_grouped_meta_gradient_equals_the_loop(first_order, variant):
    """All tasks at once as grouped convolutions: the same loss and meta-gradient as the per-task loop,
    also for a head-only inner loop, support-set statistics, learned step sizes and the inner penalty."""
    model, tasks = tiny_model(), tiny_tasks(4)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    lr_params = None
    inner = InnerLoop(F.cross_entropy, 2, 0.3)
    if variant == "anil-with-support-stats":
        inner = InnerLoop(F.cross_entropy, 2, 0.3, ("head.weight", "head.bias"), support_stats=True)
    elif variant == "meta-sgd-with-inner-penalty":
        anchor = {n: p.detach() + 0.05 for n, p in params.items()}
        inner = InnerLoop(F.cross_entropy, 2, 0.3, penalty_weight=0.1, anchor=anchor)
        lr_params = {n: torch.full_like(p, 0.2).requires_grad_() for n, p in params.items()}
    results = []
    for strategy in ("loop", "grouped"):
        loss, none = meta_objective(model, params, tasks, inner, first_order, strategy, lr_params)
        assert none is None
        trainable = [*params.values(), *(lr_params or {}).values()]
        results.append((loss, torch.autograd.grad(loss, trainable)))
    (loop_loss, loop_grads), (grouped_loss, grouped_grads) = results
    assert float(grouped_loss) == pytest.approx(float(loop_loss), rel=1e-12)
    for a, b in zip(loop_grads, grouped_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_auto_strategy_is_grouped_on_cpu_and_grouped_needs_a_grouped_backbone():
    from mtbench_zoo.backbones import MLP
    from mtbench_zoo.functional import resolve_strategy
    cpu = torch.device("cpu")
    assert resolve_strategy("auto", cpu, tiny_model()) == "grouped"
    mlp = MetaModel(MLP((1,), (8,)), 1)
    assert resolve_strategy("auto", cpu, mlp) == "loop"
    assert resolve_strategy("auto", torch.device("cuda"), tiny_model()) == "vmap"
    with pytest.raises(ValueError, match="grouped operations"):
        resolve_strategy("grouped", cpu, mlp)


def test_first_order_drops_the_second_derivatives():
    model, tasks = tiny_model(), tiny_tasks()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    second = torch.autograd.grad(meta_loss(model, params, tasks)[0], list(params.values()))
    first = torch.autograd.grad(meta_loss(model, params, tasks, first_order=True)[0], list(params.values()))
    assert max(float((a - b).abs().max()) for a, b in zip(first, second)) > 1e-4


def synthetic_fit_data(n_way=3, k_shot=1):
    gen = torch.Generator().manual_seed(0)
    def split(n_classes, prefix):
        protos = torch.randn(n_classes, 1, 8, 8, generator=gen) * 2
        x = (protos[:, None] + 0.5 * torch.randn(n_classes, 6, 1, 8, 8, generator=gen)).reshape(-1, 1, 8, 8)
        return LabeledImages(x, torch.arange(n_classes).repeat_interleave(6), tuple(f"{prefix}{i}" for i in range(n_classes)))
    return FitData(split(12, "b"), split(6, "v"), Target(n_way, k_shot, 2), seed=0)


def context():
    return RunContext(torch.device("cpu"), plugins=load_plugins())


def small(cls, **kwargs):
    return cls(meta_iterations=5, meta_batch=4, validate_every=0, **kwargs)


def test_maml_l2sp_with_lambda_zero_and_no_pretraining_is_bit_identical_to_maml():
    data = synthetic_fit_data()
    torch.manual_seed(0)
    maml = small(MAML).fit(data, context())
    torch.manual_seed(0)
    joint = small(MAMLL2SP, pretrain_steps=0, l2sp=0.0).fit(data, context())
    for (n, a), (_, b) in zip(maml.model_.named_parameters(), joint.model_.named_parameters()):
        assert torch.equal(a, b), n
    ep = EpisodeSampler(data.val, 3, 1, 2, seed=0)[0]
    assert torch.equal(maml.adapt(ep.support(), context()).predict_proba(ep.query_x),
                       joint.adapt(ep.support(), context()).predict_proba(ep.query_x))


def test_l2sp_penalty_gradient_matches_finite_differences():
    model, tasks = tiny_model(), tiny_tasks()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    anchor = {n: (p + 0.05 * torch.randn_like(p)).detach() for n, p in params.items() if n.startswith("features.")}
    lam = 0.7

    def objective(p):
        inner = InnerLoop(F.cross_entropy, 1, 0.3, penalty_weight=0.2, anchor=anchor)  # inner-loop penalty too
        loss, _ = meta_objective(model, p, tasks, inner, False, "loop")
        return loss + lam * l2_distance(p, anchor)

    grads = torch.autograd.grad(objective(params), list(params.values()))
    direction = {n: torch.randn_like(p) for n, p in params.items()}
    eps = 1e-7
    shift = lambda s: {n: (p + s * eps * direction[n]).detach().requires_grad_() for n, p in params.items()}
    numeric = (objective(shift(1)) - objective(shift(-1))) / (2 * eps)
    analytic = sum((g * direction[n]).sum() for g, n in zip(grads, params))
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5)
    # and the penalty alone has the closed-form gradient 2 * lambda * (theta - theta_source)
    only = torch.autograd.grad(lam * l2_distance(params, anchor), [params[n] for n in anchor])
    for g, n in zip(only, anchor):
        assert torch.allclose(g, 2 * lam * (params[n] - anchor[n]))


def test_joint_method_starts_from_pretrained_weights_and_records_it():
    data = synthetic_fit_data()
    ctx = context()
    joint = small(MAMLL2SP, backbone="conv4-maml", pretrain_steps=3, l2sp=0.01).fit(data, ctx)
    assert joint.anchor_ and all(n.startswith("features.") for n in joint.anchor_)
    assert joint.fit_info_["pretrain"]["history"]["steps"] == 3
    assert joint.kind == "joint" and MAML.kind == "meta"


def test_sinusoid_tasks_follow_the_paper_ranges():
    tasks = SineTasks()
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y = tasks.draw(rng, 10)
        assert x.min() >= -5 and x.max() <= 5 and np.abs(y).max() <= 5.0


def test_benchmark_meta_gradients_agree_with_its_reference_loop():
    """benchmarks/maml_step.py compares timings only if the two meta-gradients agree (float32, < 1e-4)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "maml_step.py"
    spec = importlib.util.spec_from_file_location("maml_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu = torch.device("cpu")
    for first_order, steps in bench.SETTINGS.values():
        model, tasks = bench.make_problem(cpu)
        tasks = tasks[:4]
        ref = bench.reference_meta_gradient(model, tasks, first_order, min(steps, 2))
        mine = bench.plugin_meta_gradient(model, tasks, first_order, min(steps, 2), cpu)
        assert max(float((ref[n] - mine[n]).abs().max()) for n in ref) < 1e-4


@pytest.mark.parametrize("name", ["maml", "maml-fo", "anil", "meta-sgd", "maml-l2sp", "reptile"])
def test_every_meta_learner_records_its_meta_iteration_time_memory_and_batchnorm_mode(name):
    plugins = load_plugins()
    algorithm = plugins.algorithms.get(name)(meta_iterations=3, meta_batch=2, validate_every=2, val_episodes=2)
    if name == "maml-l2sp":
        algorithm.set_params(pretrain_steps=2)
    if name == "reptile":
        algorithm.set_params(train_shot=4)  # six examples per class here
    fitted = algorithm.fit(synthetic_fit_data(), RunContext(torch.device("cpu"), plugins=plugins))
    info = fitted.fit_info_
    assert info["seconds_per_meta_iteration"] > 0 and info["peak_memory_mb"] > 0
    assert info["peak_memory_kind"] == "process peak RSS" and "transductive" in info["batchnorm"]
    assert [row["step"] for row in info["history"]["validation"]] == [2, 3]
    if name != "reptile":
        assert info["strategy"] == "grouped"  # auto on the CPU with conv4-maml

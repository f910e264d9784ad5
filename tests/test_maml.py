"""Gradient-based meta-learning: exact second-order meta-gradients, vmap = grouped = loop, the joint objective."""
from __future__ import annotations

from types import SimpleNamespace

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


def test_auto_strategy_by_device_threads_and_memory_and_grouped_needs_a_grouped_backbone():
    from mtbench_zoo.backbones import MLP
    from mtbench_zoo.functional import DEFAULT_CHUNK, resolve_strategy
    cpu = torch.device("cpu")
    two = resolve_strategy("auto", cpu, tiny_model(), threads=2)
    assert (two.name, two.chunk_size, two.workers) == ("grouped", DEFAULT_CHUNK, 2) and "2 threads" in two.reason
    assert resolve_strategy("auto", cpu, tiny_model(), threads=1).name == "loop"
    budget = resolve_strategy("auto", cpu, tiny_model(), threads=2, max_memory_mb=200, task_mb=30)
    assert budget.chunk_size == 3 and "max_memory_mb=200" in budget.reason  # 2 chunks of 3 tasks at once
    assert resolve_strategy("grouped", cpu, tiny_model(), threads=1).workers == 1
    assert resolve_strategy("grouped", cpu, tiny_model(), chunk_size=5).chunk_size == 5
    mlp = MetaModel(MLP((1,), (8,)), 1)
    assert resolve_strategy("auto", cpu, mlp, threads=2).name == "loop"
    cuda = torch.device("cuda")  # resolving needs no GPU
    on_gpu = resolve_strategy("auto", cuda, tiny_model(), threads=2)
    assert (on_gpu.name, on_gpu.chunk_size, on_gpu.workers) == ("grouped", None, 1) and "CUDA" in on_gpu.reason
    assert resolve_strategy("auto", cuda, tiny_model(), chunk_size=8).chunk_size == 8
    assert resolve_strategy("auto", cuda, tiny_model(), max_memory_mb=200, task_mb=30).chunk_size == 6
    assert resolve_strategy("auto", cuda, mlp).name == "vmap"
    with pytest.raises(ValueError, match="grouped operations"):
        resolve_strategy("grouped", cpu, mlp)


@pytest.mark.parametrize("first_order", [False, True])
def test_grouped_chunks_side_by_side_give_the_same_numbers_and_restore_the_threads(first_order):
    """Two worker threads taking chunks: the meta-gradient is bit for bit the one-worker one (chunks are summed
    in their order), and torch's thread count is what it was before."""
    from mtbench_zoo.functional import Strategy, meta_gradient
    torch.manual_seed(0)
    model = tiny_model(torch.float32)  # float32: a different order of summation would show
    params = dict(model.named_parameters())
    tasks = tiny_tasks(7, torch.float32)
    inner = InnerLoop(F.cross_entropy, 2, 0.3)
    threads = torch.get_num_threads()
    one = meta_gradient(model, params, tasks, inner, first_order, Strategy("grouped", 2))
    two = meta_gradient(model, params, tasks, inner, first_order, Strategy("grouped", 2, workers=2))
    assert torch.equal(one[0], two[0]) and all(torch.equal(one[1]["params"][n], two[1]["params"][n]) for n in params)
    assert torch.get_num_threads() == threads


def test_side_by_side_workers_share_the_threads_and_never_outnumber_the_chunks(monkeypatch):
    from mtbench_zoo import functional
    threads = torch.get_num_threads()
    seen: list[int] = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n))[1])
    try:
        real(4)
        out = functional._side_by_side(lambda c: (c, torch.get_num_threads()), [1, 2, 3], workers=2)
        assert [c for c, _ in out] == [1, 2, 3] and {n for _, n in out} == {2}  # 2 workers x 2 threads
        seen.clear()
        functional._side_by_side(lambda c: c, [1], workers=8)  # one chunk: one worker with all 4 threads
        assert seen[0] == 4 and seen[-1] == 4
    finally:
        real(threads)


@pytest.mark.parametrize("strategy", ["loop", "grouped-1", "grouped-3", "grouped", "vmap"])
@pytest.mark.parametrize("variant", ["maml", "first-order", "anil", "meta-sgd"])
def test_meta_gradient_by_chunks_equals_the_whole_graph(strategy, variant):
    """Back-propagating task by task (loop) or chunk by chunk (grouped) accumulates exactly the gradient
    of the whole meta-batch's loss (float64)."""
    from mtbench_zoo.functional import Strategy, meta_gradient
    model, tasks = tiny_model(), tiny_tasks(4)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    inner, lr_params, first_order = member(variant, params)
    whole, _ = meta_objective(model, params, tasks, inner, first_order, "loop", lr_params)
    wrt = [*params.values(), *(lr_params or {}).values()]
    expected = torch.autograd.grad(whole, wrt)
    name, _, chunk = strategy.partition("-")
    loss, grads = meta_gradient(model, params, tasks, inner, first_order, Strategy(name, int(chunk) if chunk else None),
                                lr_params)
    got = [*grads["params"].values(), *grads["lr"].values()]
    assert float(loss) == pytest.approx(float(whole), rel=1e-12) and not loss.requires_grad
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def member(variant: str, params: dict):
    """(inner loop, learned step sizes, first order) of a member of the MAML family on ``params``."""
    if variant == "anil":
        return InnerLoop(F.cross_entropy, 2, 0.3, ("head.weight", "head.bias")), None, False
    if variant == "meta-sgd":
        return InnerLoop(F.cross_entropy, 2, 0.3), {n: torch.full_like(p, 0.2).requires_grad_()
                                                    for n, p in params.items()}, False
    if variant == "maml-l2sp":
        anchor = {n: (p.detach() * 0.9).clone() for n, p in params.items() if n.startswith("features.")}
        return InnerLoop(F.cross_entropy, 2, 0.3, penalty_weight=0.01, anchor=anchor), None, False
    return InnerLoop(F.cross_entropy, 2, 0.3), None, variant == "first-order"


@pytest.mark.parametrize("strategy", ["loop", "grouped", "vmap"])
@pytest.mark.parametrize("variant", ["maml", "first-order", "anil", "meta-sgd", "maml-l2sp"])
def test_float32_meta_gradient_within_5e_5_of_float64(strategy, variant):
    """Issue 11: the float32 meta-gradient of every strategy and member stays within 5e-5 (relative, whole
    vector) of the float64 one, on a small network with 28x28 inputs and the paper's 5-way 1-shot episodes."""
    from mtbench_zoo.functional import Strategy, meta_gradient
    grads = {}
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(0)
        model = MetaModel(MetaConv4((1, 28, 28), hidden=8), 5).to(dtype)
        gen = torch.Generator().manual_seed(1)
        tasks = [SimpleNamespace(support_x=torch.rand(5, 1, 28, 28, generator=gen, dtype=torch.float64).to(dtype),
                                 support_y=torch.arange(5),
                                 query_x=torch.rand(10, 1, 28, 28, generator=gen, dtype=torch.float64).to(dtype),
                                 query_y=torch.arange(5).repeat(2)) for _ in range(4)]
        params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
        inner, lr_params, first_order = member(variant, params)
        _, g = meta_gradient(model, params, tasks, inner, first_order, Strategy(strategy, 2), lr_params)
        grads[dtype] = torch.cat([t.flatten().double() for part in ("params", "lr") for t in g[part].values()])
    error = float((grads[torch.float32] - grads[torch.float64]).norm() / grads[torch.float64].norm())
    assert error <= 5e-5, error


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
    """benchmarks/maml_step.py compares timings only if the meta-gradients agree; its float32 error is relative
    to its float64 reference loop."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "maml_step.py"
    spec = importlib.util.spec_from_file_location("maml_step", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu = torch.device("cpu")
    for first_order in bench.SETTINGS.values():
        model, tasks = bench.make_problem(cpu, torch.float64, meta_batch=3)
        ref = bench.reference_meta_gradient(model, tasks, first_order)
        for impl in ("loop", "grouped-2", "vmap"):
            mine = bench.implementation(impl)(model, tasks, first_order)
            for n in ref:
                assert torch.allclose(ref[n], mine[n], rtol=1e-9, atol=1e-12), (impl, n)


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
    if name != "reptile":  # auto on the CPU with conv4-maml: grouped with two threads or more, else the loop
        assert info["strategy"] == ("grouped" if torch.get_num_threads() >= 2 else "loop")
        assert info["strategy_detail"]["reason"].startswith("auto: ")

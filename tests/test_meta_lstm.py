"""The LSTM meta-learner: with its gates fixed it is gradient descent; its inputs follow Andrychowicz et al.;
meta-gradients reach the LSTM and c_0 but not through the gradient inputs; conformance."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtbench import RunContext
from mtbench.plugins import load_plugins
from mtbench.testing import parametrize_with_checks
from mtbench_zoo.functional import MetaConv4, MetaModel, call
from mtbench_zoo.meta_lstm import MetaLearnerLSTM, MetaLSTM, learn, preprocess
from test_maml import synthetic_fit_data, tiny_tasks


def small_lstm(**settings) -> MetaLSTM:
    """A MetaLSTM small enough for the synthetic data, which has 6 examples per class: 3 training queries
    (the paper's 15 would not fit), 4 filters and no validation unless asked."""
    return MetaLSTM(**{"train_query": 3, "validate_every": 0, "filters": 4, **settings})


def tiny_learner() -> MetaModel:
    torch.manual_seed(0)
    return MetaModel(MetaConv4((1, 8, 8), hidden=4), 3).double()


def test_fixed_gates_forget_one_input_lr_are_gradient_descent_step_for_step():
    model, ep = tiny_learner(), tiny_tasks(1)[0]
    meta = MetaLearnerLSTM(hidden=5).double()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr, plain = 0.3, dict(start)
    for steps in range(1, 5):
        fast = learn(model, meta, start, ep.support_x, ep.support_y, steps, fixed_gates=(1.0, lr))
        current = {n: p.detach().requires_grad_() for n, p in plain.items()}
        grads = torch.autograd.grad(F.cross_entropy(call(model, current, ep.support_x), ep.support_y),
                                    list(current.values()))
        plain = {n: p.detach() - lr * g for (n, p), g in zip(current.items(), grads)}
        for n in plain:
            assert torch.allclose(fast[n], plain[n], rtol=1e-12, atol=1e-14), (steps, n)


def test_preprocessing_follows_andrychowicz():
    x = torch.tensor([2.0, -3e-3, 1e-6, -1e-7, 0.0], dtype=torch.float64)
    out = preprocess(x)
    assert torch.allclose(out[0], torch.tensor([math.log(2.0) / 10, 1.0], dtype=torch.float64))
    assert torch.allclose(out[1], torch.tensor([math.log(3e-3) / 10, -1.0], dtype=torch.float64))
    assert torch.allclose(out[2], torch.tensor([-1.0, math.exp(10) * 1e-6], dtype=torch.float64))  # below e^-10
    assert torch.allclose(out[4], torch.tensor([-1.0, 0.0], dtype=torch.float64))


def test_learned_gates_start_near_gradient_descent_and_meta_gradients_reach_lstm_and_initial_learner():
    model, ep = tiny_learner(), tiny_tasks(1)[0]
    torch.manual_seed(1)
    meta = MetaLearnerLSTM().double()
    start = dict(model.named_parameters())
    fast = learn(model, meta, start, ep.support_x, ep.support_y, 3)
    state = meta.initial_state(torch.cat([p.reshape(-1) for p in start.values()]))
    forget = torch.sigmoid(meta.cell.b_forget.detach())  # bias in [4, 6]: f near 1; in [-5, -4]: i near 0.01
    assert 0.98 < float(forget) < 1.0 and 0.006 < float(torch.sigmoid(meta.cell.b_input.detach())) < 0.02
    assert state["theta"].shape[0] == sum(p.numel() for p in start.values())
    loss = F.cross_entropy(call(model, fast, ep.query_x), ep.query_y)
    loss.backward()
    for name, p in [*model.named_parameters(), *meta.named_parameters()]:
        if "convs" in name and "bias" in name:
            continue  # conv biases before a batch-statistics norm have no effect
        assert p.grad is not None and float(p.grad.abs().max()) > 0, name


def test_the_meta_learner_is_fitted_state_and_survives_a_round_trip():
    plugins = load_plugins()
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = synthetic_fit_data()
    alg = small_lstm(meta_iterations=3, meta_batch=2, updates=2)
    torch.manual_seed(0)
    alg.fit(data, ctx)
    info = alg.fit_info_
    assert info["updates"] == 2 and "transductive" in info["batchnorm"] and info["seconds_per_meta_iteration"] > 0
    tensors, meta = alg.fitted_state()
    fresh = alg.clone()
    fresh.init_fitted(data, ctx)
    fresh.load_fitted_state(tensors, meta)
    ep = tiny_tasks(1, torch.float32)[0]
    torch.manual_seed(3)
    a = alg.adapt(ep.support(), ctx).predict_proba(ep.query_x)
    b = fresh.adapt(ep.support(), ctx).predict_proba(ep.query_x)
    assert torch.equal(a, b)


@parametrize_with_checks([small_lstm(meta_iterations=5, meta_batch=2, filters=8, updates=3)])
def test_conformance(algorithm, check):
    check(algorithm)


def test_input_gate_bias_sets_the_first_step_and_a_departure_from_the_paper_is_recorded():
    torch.manual_seed(0)
    meta = MetaLearnerLSTM(input_gate_bias=-2.0)
    assert -2.5 <= float(meta.cell.b_input) <= -1.5
    plugins = load_plugins()
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = synthetic_fit_data()
    paper = small_lstm(meta_iterations=1, updates=1).fit(data, ctx).fit_info_
    moved = small_lstm(meta_iterations=1, updates=1, input_gate_bias=-2.0).fit(data, ctx)
    assert not any("input-gate" in d for d in paper["deviations"]) and paper["input_gate_bias_init"] == [-5.0, -4.0]
    assert any("input-gate bias drawn in [-2.5, -1.5]" in d for d in moved.fit_info_["deviations"])
    assert -2.5 <= float(moved.meta_.cell.b_input) <= -1.5 + 1e-2  # one Adam step of 1e-3 at most


def test_keep_best_restores_the_learner_and_meta_learner_of_the_best_validation(monkeypatch):
    """Early stopping on validation: the kept state is the one scored best (ties to the earliest), not the last."""
    from mtbench_zoo.meta_learner import GradientMetaLearner

    def fitted(keep_best: bool):
        scores, seen = [0.2, 0.7, 0.4, 0.7, 0.1], []

        def scripted(self, data, ctx):
            seen.append({**{f"model.{k}": v.clone() for k, v in self.model_.state_dict().items()},
                         **{f"meta.{k}": v.clone() for k, v in self.meta_.state_dict().items()}})
            return scores[len(seen) - 1]

        monkeypatch.setattr(GradientMetaLearner, "validation_score", scripted)
        torch.manual_seed(0)
        alg = small_lstm(meta_iterations=5, meta_batch=1, validate_every=1, updates=2, keep_best=keep_best)
        alg.fit(synthetic_fit_data(), RunContext(torch.device("cpu"), plugins=load_plugins()))
        state = {**{f"model.{k}": v for k, v in alg.model_.state_dict().items()},
                 **{f"meta.{k}": v for k, v in alg.meta_.state_dict().items()}}
        return alg, state, seen

    alg, state, seen = fitted(True)
    assert len(seen) == 5 and alg.fit_info_["kept"] == {"step": 2, "val_accuracy": 0.7, "last_val_accuracy": 0.1}
    assert all(torch.equal(state[k], seen[1][k]) for k in state)
    assert any("best on validation" in d for d in alg.fit_info_["deviations"])
    last, last_state, last_seen = fitted(False)
    assert "kept" not in last.fit_info_ and all(torch.equal(last_state[k], last_seen[-1][k]) for k in last_state)
    assert not all(torch.equal(last_state[k], last_seen[1][k]) for k in last_state)


def test_meta_lr_schedule_cosine_decays_to_zero_and_is_recorded():
    data = synthetic_fit_data()
    ctx = RunContext(torch.device("cpu"), plugins=load_plugins())
    alg = small_lstm(meta_iterations=4, meta_batch=1, updates=1, meta_lr_schedule="cosine")
    opt = alg.meta_optimizer()([{"params": [torch.zeros(1, requires_grad=True)]}])
    schedule = alg.meta_schedule()(opt, 4)
    rates = []
    for _ in range(4):
        opt.step()
        schedule.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates[0] < 1e-3 and abs(rates[-1]) < 1e-12 and rates == sorted(rates, reverse=True)
    assert MetaLSTM().meta_schedule() is None  # the paper's constant rate by default
    info = alg.fit(data, ctx).fit_info_
    assert any("cosine schedule" in d for d in info["deviations"])


def test_a_meta_batch_above_one_averages_its_tasks_and_the_episode_count_is_recorded():
    """meta_batch = 2: the meta-gradient is the mean of the two tasks' (so the count is not hidden in a larger
    step), and the result says how many episodes trained in all (meta-iterations x meta-batch)."""
    data = synthetic_fit_data()
    ctx = RunContext(torch.device("cpu"), plugins=load_plugins())
    torch.manual_seed(0)
    alg = small_lstm(meta_iterations=2, meta_batch=2, updates=2, grad_clip=1e9)
    info = alg.fit(data, ctx).fit_info_
    assert any("4 episodes of meta-training (2 meta-iterations of 2" in d for d in info["deviations"])
    assert any("meta-batch of 2 episodes (paper: 1)" in d for d in info["deviations"])
    tasks = next(iter(alg.meta_batches(data, ctx)))
    assert len(tasks) == 2

    def grads(batch):
        for p in alg.meta_parameters():
            p.grad = None
        alg.meta_loss(batch)
        return [p.grad.clone() for p in alg.meta_parameters()]

    both, first, second = grads(tasks), grads(tasks[:1]), grads(tasks[1:])
    assert all(torch.allclose(b, (f + s) / 2, atol=1e-6) for b, f, s in zip(both, first, second))


def test_training_queries_default_to_the_papers_and_only_a_departure_is_recorded():
    """15 query examples per class in training episodes (Ravi & Larochelle 2017); another count is a deviation."""
    data = synthetic_fit_data()  # 6 examples per class: the paper's 15 queries do not fit, so its facts are read
    paper = MetaLSTM()
    assert paper.training_episodes(data.target) == (data.target.k_shot, 15)
    paper.k_shot_ = data.target.k_shot
    paper.settings_ = paper.settings(data.target.n_way)
    assert not any("query examples" in d for d in paper.fit_facts()["deviations"])
    ctx = RunContext(torch.device("cpu"), plugins=load_plugins())
    fewer = small_lstm(train_query=5, meta_iterations=1, updates=1).fit(data, ctx)
    assert "5 query examples per class in training (paper: 15)" in fewer.fit_info_["deviations"]

"""Fair baselines: the regression fine-tune baseline selects its step size on validation tasks, and finetune
offers Chen et al.'s head recipe."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import FitData, RunContext, Target
from mtbench.testing import parametrize_with_checks
from mtbench_zoo.finetune import Finetune
from mtbench_zoo.regression_selection import finetune_curve, select_regression_lr
from mtbench_zoo.sinusoid import SineTasks


def test_curve_is_plain_gradient_descent_and_leaves_the_network_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    sx, sy, qx, qy = torch.randn(5, 1), torch.randn(5, 1), torch.randn(7, 1), torch.randn(7, 1)
    before = [p.detach().clone() for p in net.parameters()]
    curve = finetune_curve(net, sx, sy, qx, qy, lr=0.1, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    manual = [p.detach().clone().requires_grad_() for p in net.parameters()]
    forward = lambda x, w: F.linear(F.relu(F.linear(x, w[0], w[1])), w[2], w[3])
    for step in range(2):
        grads = torch.autograd.grad(F.mse_loss(forward(sx, manual), sy), manual)
        manual = [(p - 0.1 * g).detach().requires_grad_() for p, g in zip(manual, grads)]
        assert math.isclose(curve[step], float(F.mse_loss(forward(qx, manual), qy).detach()), rel_tol=1e-5)


def test_selection_picks_the_lowest_validation_mse_and_records_the_table():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1))
    data = FitData(SineTasks(), SineTasks(), Target(1, 5, 10), seed=0)
    out = select_regression_lr(net, data, (1e-3, 1e-2, 10.0), max_steps=3, n_tasks=4)
    table = {float(lr): curve for lr, curve in out["val_mse"].items()}
    assert table[10.0][2] is None or table[10.0][2] > table[1e-2][2]  # a step size that diverges is never chosen
    for steps, lr in out["lr_by_steps"].items():
        s = int(steps) - 1
        assert table[lr][s] == min(v[s] for v in table.values() if v[s] is not None)
    best = out["best"]
    assert best["val_mse"] == min(v for curve in table.values() for v in curve if v is not None)
    # the tasks are validation tasks: recomputing one curve on the val stream reproduces the table
    task = data.episodes(1, 5, 10, split="val", seed_offset=7)[0]
    assert finetune_curve(net, task.support_x, task.support_y, task.query_x, task.query_y, 1e-3, 1)[0] > 0


def test_finetune_regression_uses_the_selected_lr(plugins):
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = FitData(SineTasks(), SineTasks(), Target(1, 5, 10), seed=0)
    alg = Finetune(backbone="sine-mlp", pretrain_steps=30, batch_size=8, select_lr=True, lr_grid=(1e-3, 0.03),
                   select_max_steps=4, val_tasks=3, head_steps=2).fit(data, ctx)
    selection = alg.fit_info()["selection"]
    assert alg.fit_info()["adaptation"] == {"lr": selection["lr_by_steps"]["2"], "steps": 2, "optimizer": "plain SGD",
                                            "source": "lr selected on validation tasks"}
    alg.set_params(select_steps=True)
    assert alg.fit_info()["adaptation"]["steps"] == selection["best"]["steps"]
    alg.set_params(select_steps=False, head_steps=50)  # beyond the validated steps: the last validated lr, said so
    assert alg.fit_info()["adaptation"]["lr"] == selection["lr_by_steps"]["4"]
    assert "for 4 steps" in alg.fit_info()["adaptation"]["source"]
    assert Finetune(select_lr=True).fit_key(Target(1, 5, 10)) == {"k_shot": 5}  # selected with the test shots


@parametrize_with_checks([Finetune(backbone="mlp", pretrain_steps=30, batch_size=32, recipe="chen2019")])
def test_conformance_with_chen2019_recipe(algorithm, check):
    check(algorithm)


def test_maml_l2sp_rows_state_the_pretraining_cost_and_the_penalty(plugins):
    from mtbench_zoo.maml import MAMLL2SP

    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = FitData(SineTasks(), SineTasks(), Target(1, 5, 10), seed=0)
    alg = MAMLL2SP(backbone="sine-mlp", pretrain_steps=5, meta_iterations=3, meta_batch=2, inner_lr=0.01,
                   inner_steps=1, validate_every=0, select_l2sp=False).fit(data, ctx)
    info = alg.fit_info()
    cost = info["training_cost"]
    assert cost["pretrain_steps"] == 5 and cost["pretrain_s"] == info["pretrain"]["history"]["seconds"]
    assert cost["total_s"] == round(cost["pretrain_s"] + info["history"]["seconds"], 3)
    assert info["l2sp"]["lambda_selected_on_validation"] is False and "not penalised" in info["l2sp"]["head_penalty"]


def test_maml_l2sp_selects_lambda_on_validation_then_meta_trains_as_if_it_had_been_set(plugins, monkeypatch):
    """Issue 9: lambda is chosen on validation episodes; the full meta-training is the one lambda set by hand
    gives (the trial fits do not disturb its randomness); the scores and the selection's cost are recorded."""
    from mtbench.execute import training_cost
    from mtbench_zoo.maml import MAMLL2SP

    val_mse = {1e-4: 0.5, 1e-3: 0.9, 1e-2: 0.2}  # regression: lower is better, so 1e-2 wins
    monkeypatch.setattr(MAMLL2SP, "validation_score", lambda self, data, ctx: val_mse[self.l2sp])
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = FitData(SineTasks(), SineTasks(), Target(1, 5, 10), seed=0)
    settings = dict(backbone="sine-mlp", pretrain_steps=5, meta_iterations=20, meta_batch=2, inner_lr=0.01,
                    inner_steps=1, validate_every=0)
    torch.manual_seed(0)
    selected = MAMLL2SP(**settings, l2sp=0.5).fit(data, ctx)
    info = selected.fit_info()
    assert info["selection"]["candidates"] == [1e-4, 1e-3, 1e-2] and info["selection"]["chosen"] == 1e-2
    assert info["selection"]["scores"] == [0.5, 0.9, 0.2] and info["selection"]["meta_iterations_each"] == 2
    assert info["l2sp"]["lambda"] == 1e-2 and info["l2sp"]["lambda_selected_on_validation"] is True
    assert selected.get_params()["l2sp"] == 0.5  # the parameter is not overwritten; the fit records its choice
    assert training_cost(info)["selection_s"] == info["selection"]["seconds"] > 0
    assert any("lambda = 0.01, selected on" in d and "0.0001: 0.5" in d for d in info["deviations"])
    torch.manual_seed(0)
    by_hand = MAMLL2SP(**settings, l2sp=1e-2, select_l2sp=False).fit(data, ctx)
    for (name, a), (_, b) in zip(selected.model_.named_parameters(), by_hand.model_.named_parameters()):
        assert torch.equal(a, b), name
    torch.manual_seed(0)
    other = MAMLL2SP(**settings, l2sp=1e-4, select_l2sp=False).fit(data, ctx)
    assert not all(torch.equal(a, b) for a, b in zip(other.model_.parameters(), by_hand.model_.parameters()))
    no_val = MAMLL2SP(**settings).fit(FitData(SineTasks(), None, Target(1, 5, 10), seed=0), ctx).fit_info()
    assert "selection" not in no_val and "no validation data" in no_val["l2sp"]["lambda_source"]


def test_training_cost_counts_the_pretraining_a_fit_started_from():
    from mtbench.execute import training_cost

    plain = {"history": {"steps": 300, "seconds": 10.0}}
    assert training_cost(plain) == {"train_steps": 300, "train_s": 10.0}
    joint = {**plain, "pretrain": {"history": {"steps": 1500, "seconds": 120.5}, "pretrain_reused": True}}
    assert training_cost(joint) == {"train_steps": 300, "train_s": 130.5, "pretrain_s": 120.5, "pretrain_steps": 1500}

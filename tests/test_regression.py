"""Regression tasks (sinusoid) in the same protocol: deterministic episodes, a tiny suite run end to end."""
from __future__ import annotations

import json

import numpy as np
import torch

from mtbench.episode import TaskSampler, make_sampler
from mtbench.runner import plan_cells
from mtbench_zoo.sinusoid import SineTasks

from runner_helpers import make_runner


def test_task_episodes_are_deterministic_and_streams_never_coincide():
    tasks = SineTasks()
    test = TaskSampler(tasks, 5, 10, seed=0)
    again = make_sampler(tasks, 1, 5, 10, seed=0)
    train = make_sampler(tasks, 1, 5, 10, seed=0, stream=1)
    ep = test[3]
    assert ep.support_x.shape == (5, 1) and ep.query_y.shape == (10, 1)
    assert torch.equal(ep.query_y, again[3].query_y)
    assert not torch.equal(ep.query_x, train[3].query_x)
    # support and query points are the same task: one amplitude and phase fit all 15 points
    x = torch.cat([ep.support_x, ep.query_x]).numpy().ravel()
    y = torch.cat([ep.support_y, ep.query_y]).numpy().ravel()
    design = np.stack([np.sin(x), np.cos(x)], 1)
    coef, residual, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert residual[0] < 1e-6


def test_regression_suite_runs_maml_joint_and_finetune(tmp_path, plugins):
    suite = plugins.suites.get("regression")
    tiny = {"meta_iterations": 20, "validate_every": 10, "val_episodes": 5}
    overrides = {"maml-10-steps": tiny, "maml-l2sp-10-steps": {**tiny, "pretrain_steps": 20},
                 "finetune-10-steps": {"pretrain_steps": 20}}
    cells = plan_cells(suite, plugins, algorithms=list(overrides), n_episodes=8, overrides=overrides,
                       protocols=[(1, 5)])
    done = make_runner(plugins, tmp_path).run(cells).done
    assert len(done) == 3
    for path in done:
        run = json.loads(path.read_text())
        assert {row[1] for row in run["rows"]} == {"mse"}
        assert all(np.isfinite(row[2]) and row[2] >= 0 for row in run["rows"])
    joint = json.loads(next(p for p in done if "maml-l2sp" in p.name).read_text())
    assert joint["spec"]["kind"] == "joint" and joint["fit_info"]["pretrain"]["history"]["steps"] == 20
    assert joint["fit_info"]["history"]["validation"][-1]["step"] == 20

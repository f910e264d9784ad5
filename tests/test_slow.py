"""Acceptance runs on real data and the GPU checks: deselected by default (``make test-slow``, ``-m gpu``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtbench.cli import app


def mean_metric(results, pattern: str, metric: str) -> float:
    run = json.loads(next(results.rglob(pattern)).read_text())
    return float(np.mean([row[2] for row in run["rows"] if row[1] == metric]))


@pytest.mark.slow
def test_quick_fewshot_reaches_the_acceptance_floors(tmp_path, data_root):
    """Issue 2: at the quick budget, 5-way 1-shot: ProtoNet >= 93%, linear-probe >= 85% (about 8 minutes)."""
    result = CliRunner().invoke(app, ["run", "--suite", "fewshot", "--budget", "quick", "-a", "protonet",
                                      "-a", "linear-probe", "--protocol", "5w1s", "--data-dir", str(data_root),
                                      "--results-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert mean_metric(tmp_path, "protonet__*5w1s*.json", "accuracy") >= 0.93
    assert mean_metric(tmp_path, "linear-probe__*5w1s*.json", "accuracy") >= 0.85


@pytest.mark.slow
def test_sinusoid_maml_beats_the_transfer_baseline(tmp_path):
    """Issue 3: K = 5, 10 test steps: MAML MSE <= 0.6 and below pretrain-then-fine-tune (quick budget)."""
    result = CliRunner().invoke(app, ["run", "--suite", "regression", "-a", "maml-10-steps", "-a",
                                      "finetune-10-steps", "--protocol", "1w5s", "--results-dir", str(tmp_path),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    maml = mean_metric(tmp_path, "maml-10-steps__*.json", "mse")
    assert maml <= 0.6 and maml < mean_metric(tmp_path, "finetune-10-steps__*.json", "mse")


@pytest.mark.gpu
def test_cuda_meta_gradient_matches_cpu():
    """The vmap and grouped strategies on CUDA give the CPU loop's meta-gradient."""
    import torch.nn.functional as F

    from mtbench.precision import full_float32
    from mtbench_zoo.functional import InnerLoop, MetaConv4, MetaModel, meta_objective

    if not torch.cuda.is_available():
        pytest.fail("marked gpu but torch sees no CUDA device")
    full_float32()  # what every mtbench cell on CUDA runs with; with TF32 the gradients differed by 2%
    torch.manual_seed(0)
    model = MetaModel(MetaConv4((1, 28, 28)), 5)
    labels = torch.arange(5)
    from mtbench import Episode
    tasks = [Episode(torch.rand(5, 1, 28, 28), labels, torch.rand(5, 1, 28, 28), labels, tuple(range(5)), i, 0)
             for i in range(8)]
    inner = InnerLoop(F.cross_entropy, 1, 0.4)
    params = dict(model.named_parameters())
    cpu = dict(zip(params, torch.autograd.grad(meta_objective(model, params, tasks, inner, False, "loop")[0],
                                               list(params.values()))))
    gpu_model = model.cuda()
    gpu_params = dict(gpu_model.named_parameters())
    gpu_tasks = [t.to("cuda") for t in tasks]
    _, grads = meta_objective(gpu_model, gpu_params, gpu_tasks, inner, False, "vmap")
    grouped_loss, _ = meta_objective(gpu_model, gpu_params, gpu_tasks, inner, False, "grouped")
    grouped = dict(zip(gpu_params, torch.autograd.grad(grouped_loss, list(gpu_params.values()))))
    for name, g in cpu.items():
        assert torch.allclose(grads["params"][name].cpu(), g, atol=1e-4), name
        assert torch.allclose(grouped[name].cpu(), g, atol=1e-4), name


@pytest.mark.gpu
def test_smoke_suite_on_cuda(tmp_path):
    result = CliRunner().invoke(app, ["run", "--suite", "smoke", "--device", "cuda", "--results-dir", str(tmp_path),
                                      "--quiet", "--episodes", "10"])
    assert result.exit_code == 0, result.output
    runs = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert runs and all(r["spec"]["device"].startswith("cuda") for r in runs)
    assert all(r["environment"]["float32"] == "ieee" for r in runs)


@pytest.mark.slow
def test_quick_reptile_learns_omniglot(tmp_path, data_root):
    """Issue 3: Reptile with the paper's settings learns (quick budget, 2,000 meta-iterations, about 7 minutes:
    85.6% measured; the 1,500-iteration SGD version this replaced stayed near 54%)."""
    result = CliRunner().invoke(app, ["run", "--suite", "fewshot", "--budget", "quick", "-a", "reptile",
                                      "--protocol", "5w1s", "--data-dir", str(data_root),
                                      "--results-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert mean_metric(tmp_path, "reptile__*5w1s*.json", "accuracy") >= 0.82

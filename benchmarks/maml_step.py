"""Time one MAML meta-iteration: the plugin's implementation against a straightforward per-task loop.

Setting (Finn et al. 2017, Omniglot): 1x28x28 inputs, strided Conv-4 (64 filters), 5-way 1-shot with one
query per class, meta-batch 32; second order with 1 inner step, then first order, then 5 inner steps.

(i)  plugin: ``mtbench_zoo.functional.meta_objective`` with the strategy the plugin picks for the device
     (on CPU "grouped": the 32 tasks at once, each task's weights one group of a grouped convolution;
     ``torch.func.vmap`` over tasks on CUDA);
(ii) reference: a plain loop over the 32 tasks with ``torch.autograd.grad(create_graph=True)``, written
     here with ``F.conv2d`` and ``F.batch_norm`` on the same parameters.

Prints, per setting: the max abs difference of the two meta-gradients (float32), seconds per
meta-iteration of each, the ratio reference/plugin (> 1 means the plugin is faster) and each one's peak
memory (CUDA max allocated, or on CPU the peak RSS (VmHWM) of a fresh process that ran only that
measurement, torch and the problem included).

    python benchmarks/maml_step.py [--device cpu|cuda] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from mtbench_zoo.functional import InnerLoop, MetaConv4, MetaModel, meta_objective, resolve_strategy

WAYS, SHOTS, QUERY, META_BATCH, INNER_LR = 5, 1, 1, 32, 0.4
SETTINGS = {"second-order, 1 step": (False, 1), "first-order, 1 step": (True, 1), "second-order, 5 steps": (False, 5)}


class Task:
    def __init__(self, sx, sy, qx, qy):
        self.support_x, self.support_y, self.query_x, self.query_y = sx, sy, qx, qy


def make_problem(device: torch.device):
    torch.manual_seed(0)
    model = MetaModel(MetaConv4((1, 28, 28)), WAYS).to(device)
    labels = torch.arange(WAYS, device=device)
    tasks = [Task(torch.rand(WAYS * SHOTS, 1, 28, 28, device=device), labels.repeat_interleave(SHOTS),
                  torch.rand(WAYS * QUERY, 1, 28, 28, device=device), labels.repeat_interleave(QUERY))
             for _ in range(META_BATCH)]
    return model, tasks


def reference_forward(p: dict, x: torch.Tensor) -> torch.Tensor:
    for i in range(4):
        x = F.conv2d(x, p[f"features.convs.{i}.weight"], p[f"features.convs.{i}.bias"], stride=2, padding=1)
        x = F.batch_norm(x, None, None, p[f"features.norms.{i}.weight"], p[f"features.norms.{i}.bias"], training=True)
        x = F.relu(x)
    return F.linear(x.mean(dim=(2, 3)), p["head.weight"], p["head.bias"])


def reference_meta_gradient(model, tasks, first_order: bool, steps: int) -> dict:
    params = dict(model.named_parameters())
    total = 0.0
    for t in tasks:
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, t.support_x), t.support_y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {n: w - INNER_LR * g for (n, w), g in zip(fast.items(), grads)}
        total = total + F.cross_entropy(reference_forward(fast, t.query_x), t.query_y)
    grads = torch.autograd.grad(total / len(tasks), list(params.values()))
    return dict(zip(params, grads))


def plugin_meta_gradient(model, tasks, first_order: bool, steps: int, device: torch.device) -> dict:
    params = dict(model.named_parameters())
    inner = InnerLoop(F.cross_entropy, steps, INNER_LR)
    loss, grads = meta_objective(model, params, tasks, inner, first_order, resolve_strategy("auto", device, model))
    if grads is not None:
        return grads["params"]
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def measure(impl: str, setting: str, device: torch.device, repeats: int) -> dict:
    model, tasks = make_problem(device)
    first_order, steps = SETTINGS[setting]
    run = (lambda: reference_meta_gradient(model, tasks, first_order, steps)) if impl == "reference" else (
        lambda: plugin_meta_gradient(model, tasks, first_order, steps, device))
    run()  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    sync()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"seconds": seconds, "peak_mb": peak}


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec,
    so a child would report its parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(impl: str, setting: str, device: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", impl, setting, "--device", device,
                          "--repeats", str(repeats)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], device, args.repeats)))
        return
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}, plugin strategy "
          f"{resolve_strategy('auto', device, make_problem(device)[0])}, meta-batch {META_BATCH}, {WAYS}-way {SHOTS}-shot, {args.repeats} repeats")
    print(f"{'setting':24} {'max|dgrad|':>11} {'reference s':>12} {'plugin s':>9} {'ratio':>6} "
          f"{'ref peak MB':>12} {'plugin peak MB':>15}")
    for setting, (first_order, steps) in SETTINGS.items():
        model, tasks = make_problem(device)
        ref = reference_meta_gradient(model, tasks, first_order, steps)
        mine = plugin_meta_gradient(model, tasks, first_order, steps, device)
        diff = max(float((ref[n] - mine[n]).abs().max()) for n in ref)
        r, p = child("reference", setting, args.device, args.repeats), child("plugin", setting, args.device, args.repeats)
        print(f"{setting:24} {diff:11.2e} {r['seconds']:12.3f} {p['seconds']:9.3f} {r['seconds'] / p['seconds']:6.2f} "
              f"{r['peak_mb']:12.0f} {p['peak_mb']:15.0f}")


if __name__ == "__main__":
    main()

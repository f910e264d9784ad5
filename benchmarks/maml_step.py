"""One MAML meta-iteration, strategy by strategy, against a plain per-task loop: seconds, extra peak memory and
float32 error of the meta-gradient.

Setting (the one peers are timed on, issue 10 F2 and issue 11): 1x28x28 inputs, strided Conv-4 (64 filters,
``conv4-maml``), 5-way 1-shot with 5 queries per class, meta-batch 32, inner lr 0.4, one inner step; second
order, then first order.

* reference: a plain loop over the 32 tasks, written here with ``F.conv2d`` and ``F.batch_norm``, that calls
  ``torch.autograd.grad`` on each task's loss and accumulates the meta-gradient, so one task's graph is alive
  at a time;
* plain: the reference in a process whose allocator mtbench has not set (``MTBENCH_MALLOC=system``), as a
  per-task-loop library runs; every other line runs with freed memory kept (mtbench/allocator.py), as mtbench's
  cells do;
* ``loop``, ``grouped`` at every chunk size (tasks per backward pass), ``grouped-<chunk>x<workers>`` (chunks
  side by side on worker threads of one core each) and, with ``--vmap``, ``vmap``:
  ``mtbench_zoo.functional.meta_gradient``.

Every measurement runs in a fresh process with the given number of threads; ``--rounds`` rounds time every
implementation in turn and each keeps its fastest round. Extra peak memory: on CPU the
peak resident memory (VmHWM) during the first meta-iteration minus the resident memory just before it (the
network and episodes already built), on CUDA the max allocated during it minus the allocated before.
float32 error: ``|g32 - g64| / |g64|`` over the whole meta-gradient vector, g64 being the reference loop in
float64 on the same weights and episodes. ``vs ref`` is reference seconds / strategy seconds (> 1: faster),
``vs plain`` the same against the plain line.

    python benchmarks/maml_step.py [--device cpu|cuda] [--threads 1 2] [--repeats 3] [--rounds 3]
                                   [--chunks 1 2 4 8 16 32] [--workers 1 2]
                                   [--vmap] [--tf32] [--cudnn default|deterministic|off]

On CUDA, float32 is IEEE float32 (TF32 off), as in mtbench's runs (mtbench/precision.py); ``--tf32`` measures
torch's default instead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from mtbench.allocator import keep_freed_memory
from mtbench.precision import float32_mode, full_float32

from mtbench_zoo.functional import (DEFAULT_CHUNK, InnerLoop, MetaConv4, MetaModel, Strategy, meta_gradient,
                                    resolve_strategy)

WAYS, SHOTS, QUERY, META_BATCH, INNER_LR = 5, 1, 5, 32, 0.4
SETTINGS = {"second order": False, "first order": True}


class Task:
    def __init__(self, sx, sy, qx, qy):
        self.support_x, self.support_y, self.query_x, self.query_y = sx, sy, qx, qy


def make_problem(device: torch.device, dtype: torch.dtype = torch.float32, meta_batch: int = META_BATCH):
    """The same weights and episodes for every implementation (drawn in float64, then cast)."""
    torch.manual_seed(0)
    model = MetaModel(MetaConv4((1, 28, 28)), WAYS).to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(WAYS, device=device)
    image = lambda n: torch.rand(n, 1, 28, 28, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    tasks = [Task(image(WAYS * SHOTS), labels.repeat_interleave(SHOTS), image(WAYS * QUERY),
                  labels.repeat_interleave(QUERY)) for _ in range(meta_batch)]
    return model, tasks


def reference_forward(p: dict, x: torch.Tensor) -> torch.Tensor:
    for i in range(4):
        x = F.conv2d(x, p[f"features.convs.{i}.weight"], p[f"features.convs.{i}.bias"], stride=2, padding=1)
        x = F.batch_norm(x, None, None, p[f"features.norms.{i}.weight"], p[f"features.norms.{i}.bias"], training=True)
        x = F.relu(x)
    return F.linear(x.mean(dim=(2, 3)), p["head.weight"], p["head.bias"])


def reference_meta_gradient(model, tasks, first_order: bool, steps: int = 1) -> dict:
    """The plain per-task loop: adapt, then ``torch.autograd.grad`` of the task's query loss, accumulated."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for t in tasks:
        fast = params
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, t.support_x), t.support_y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {n: w - INNER_LR * g for (n, w), g in zip(fast.items(), grads)}
        query_loss = F.cross_entropy(reference_forward(fast, t.query_x), t.query_y) / len(tasks)
        for n, g in zip(params, torch.autograd.grad(query_loss, list(params.values()))):
            total[n] += g
    return total


def plugin_meta_gradient(model, tasks, first_order: bool, strategy: Strategy | str, steps: int = 1) -> dict:
    params = dict(model.named_parameters())
    _, grads = meta_gradient(model, params, tasks, InnerLoop(F.cross_entropy, steps, INNER_LR), first_order, strategy)
    return grads["params"]


def implementation(name: str):
    """'reference', 'plain', 'loop', 'vmap' or 'grouped-<chunk>' as a function (model, tasks, first_order) -> grads."""
    if name in ("reference", "plain"):
        return reference_meta_gradient
    strategy, _, chunk = name.partition("-")
    chunk, _, workers = chunk.partition("x")  # grouped-4x2: chunks of 4 tasks, 2 worker threads
    return lambda model, tasks, first_order: plugin_meta_gradient(
        model, tasks, first_order, Strategy(strategy, int(chunk) if chunk else None, workers=int(workers or 1)))


def rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(impl: str, setting: str, device: torch.device, repeats: int) -> dict:
    """In a fresh process: extra peak memory of the first meta-iteration, then seconds per meta-iteration,
    then the float32 error against the float64 reference."""
    first_order = SETTINGS[setting]
    run = implementation(impl)
    model, tasks = make_problem(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        grads = run(model, tasks, first_order)
        extra = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        before = rss_mb("VmRSS")
        grads = run(model, tasks, first_order)
        extra = rss_mb("VmHWM") - before
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        run(model, tasks, first_order)
    sync()
    seconds = (time.perf_counter() - start) / repeats
    model64, tasks64 = make_problem(device, torch.float64)
    exact = reference_meta_gradient(model64, tasks64, first_order)
    g32 = torch.cat([grads[n].flatten().double() for n in exact])
    g64 = torch.cat([g.flatten() for g in exact.values()])
    return {"seconds": seconds, "extra_mb": extra, "error": float((g32 - g64).norm() / g64.norm())}


def child(impl: str, setting: str, device: str, threads: int, repeats: int, tf32: bool = False,
          cudnn: str = "default") -> dict:
    env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "MTBENCH_MALLOC": "system" if impl == "plain" else "keep"}
    out = subprocess.run([sys.executable, __file__, "--child", impl, setting, "--device", device,
                          "--threads", str(threads), "--repeats", str(repeats), *(["--tf32"] if tf32 else []),
                          "--cudnn", cudnn],
                         capture_output=True, text=True,
                         env={**os.environ, **env_threads})
    if out.returncode:
        raise RuntimeError(f"{impl} / {setting} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the implementations; the fastest is kept")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="grouped's worker threads (one core each; only counts up to --threads are run)")
    parser.add_argument("--vmap", action="store_true", help="also time vmap (slow on CPU)")
    parser.add_argument("--tf32", action="store_true",
                        help="let CUDA run float32 convolutions in TF32 (torch's default; mtbench runs never do)")
    parser.add_argument("--cudnn", choices=["default", "deterministic", "off"], default="default",
                        help="cuDNN's algorithm choice: torch's default, deterministic algorithms only, or no cuDNN")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if not args.tf32:
        full_float32()
    torch.backends.cudnn.deterministic = args.cudnn == "deterministic"
    torch.backends.cudnn.enabled = args.cudnn != "off"
    if args.child:
        keep_freed_memory()  # as a cell does; "plain" runs with MTBENCH_MALLOC=system, which leaves it alone
        torch.set_num_threads(args.threads[0])
        print(json.dumps(measure(args.child[0], args.child[1], device, args.repeats)))
        return
    grouped = [f"grouped-{c}" + (f"x{w}" if w > 1 else "") for w in args.workers for c in args.chunks]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch "
          f"{torch.__version__}; {WAYS}-way {SHOTS}-shot, {QUERY} queries per class, meta-batch {META_BATCH}, "
          f"conv4-maml (64 filters), {args.repeats} repeats; default grouped chunk {DEFAULT_CHUNK}; float32 "
          f"{float32_mode() if device.type == 'cuda' else 'ieee'}; cudnn {args.cudnn}")
    for threads in args.threads:
        auto = resolve_strategy("auto", device, make_problem(device, meta_batch=1)[0], threads=threads)
        print(f"\nthreads {threads}: auto picks {auto.name}"
              f"{f' (chunk {auto.chunk_size})' if auto.chunk_size else ''}: {auto.reason}")
        print(f"{'setting':13} {'strategy':11} {'seconds':>8} {'vs ref':>7} {'vs plain':>8} {'extra MB':>9} "
              f"{'vs ref':>7} {'f32 error':>10}")
        impls = ["plain", "reference", "loop", *(g for g in grouped if int(g.partition("x")[2] or 1) <= threads),
                 *(["vmap"] if args.vmap else [])]
        for setting in SETTINGS:
            # Rounds over the implementations in turn, each keeping its fastest round: a slow spell of the
            # machine then hits every implementation alike instead of one of them.
            best: dict[str, dict] = {}
            for _ in range(args.rounds):
                for impl in impls:
                    r = child(impl, setting, args.device, threads, args.repeats, args.tf32, args.cudnn)
                    if impl not in best or r["seconds"] < best[impl]["seconds"]:
                        best[impl] = r
            ref, plain = best["reference"], best["plain"]
            for impl in impls:
                r = best[impl]
                print(f"{setting:13} {impl:11} {r['seconds']:8.3f} {ref['seconds'] / r['seconds']:7.2f} "
                      f"{plain['seconds'] / r['seconds']:8.2f} {r['extra_mb']:9.0f} "
                      f"{r['extra_mb'] / max(ref['extra_mb'], 1e-9):7.2f} {r['error']:10.1e}", flush=True)


if __name__ == "__main__":
    main()

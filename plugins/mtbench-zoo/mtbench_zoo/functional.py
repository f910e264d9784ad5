"""Functional machinery shared by the gradient-based meta-learners (MAML, ANIL, Meta-SGD, Reptile, joint).

* :class:`BatchStatNorm`: BatchNorm that always normalises with the statistics of the current batch
  (optionally of its first ``stats_rows`` rows). Under ``torch.func.vmap`` it is written with plain tensor
  ops: ``nn.BatchNorm2d`` under vmap gave a wrong second-order meta-gradient in our measurements, this one
  is exact (tests/test_maml.py). Outside vmap it calls the native kernel, which is faster on the CPU.
* :class:`MetaModel`: features + linear head, called functionally with ``torch.func.functional_call``.
* :func:`inner_loop`: K gradient steps on functional parameters (second order keeps the graph).
* :func:`meta_gradient`: the mean query loss of a meta-batch of tasks and its gradient (the meta-gradient),
  by one of three strategies. "loop": task after task, each task's graph back-propagated and freed before
  the next (peak memory about one task's graph). "grouped": chunks of tasks at once through grouped
  convolutions (each task's weights are one group), one backward pass per chunk; the chunk size bounds
  the memory (see benchmarks/maml_step.py). "vmap": ``torch.func.vmap`` over tasks (on CUDA for backbones
  without grouped operations: it removes thousands of small kernel launches). :func:`resolve_strategy`
  picks one for ``auto`` and says why.
* :func:`meta_objective`: the same mean query loss with its whole graph kept, for tests that check the
  meta-gradient against finite differences.

Precision: the float32 meta-gradient stays within 5e-5 (relative) of float64 for every strategy
(tests/test_maml.py). Convolutions in channels-last layout broke that bound (about 1e-3) in issue 11's
measurements, so ``conv4-maml`` runs in the default layout; ``conv4-maml-channels-last`` is the explicit,
recorded opt-in.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
LearningRate = float | Mapping[str, torch.Tensor]


class BatchStatNorm(nn.Module):
    """Per-channel normalisation with batch statistics (the MAML paper's mode, at training and test)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        return batch_stat_norm(x, self.weight, self.bias, self.eps, stats_rows)


def batch_stat_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5,
                    stats_rows: int | None = None) -> torch.Tensor:
    """Normalise each channel of ``x`` with the statistics of its first ``stats_rows`` rows (all by default)."""
    if stats_rows is None and not _under_vmap(x):  # the native kernel: same values, faster on CPU
        return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    ref = x if stats_rows is None else x[:stats_rows]
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    mean = ref.mean(dims, keepdim=True)
    var = (ref - mean).pow(2).mean(dims, keepdim=True)
    shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
    return (x - mean) * torch.rsqrt(var + eps) * weight.view(shape) + bias.view(shape)


class MetaConv4(nn.Module):
    """Conv-4 for gradient-based meta-learning (Finn et al. 2017, Omniglot): 4 x [conv3x3 64 stride 2,
    batch-statistics norm, ReLU], then the spatial mean, giving 64 features."""

    uses_batch_stats = True

    def __init__(self, in_shape: tuple[int, ...], hidden: int = 64, blocks: int = 4, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last  # faster oneDNN kernels on CPU, but float32 error ~1e-3 (issue 11)
        channels = [in_shape[0], *([hidden] * blocks)]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(channels, channels[1:]))
        self.norms = nn.ModuleList(BatchStatNorm(b) for b in channels[1:])
        self.out_dim = hidden

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        if self.channels_last and x.device.type == "cpu" and not _under_vmap(x):
            x = x.contiguous(memory_format=torch.channels_last)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x), stats_rows))
        return x.mean(dim=(2, 3))

    def grouped(self, params: Params, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        """Every task of a meta-batch at once. ``x`` is (tasks, rows, C, H, W) and every parameter has a
        leading task dimension; returns (tasks, rows, features).

        The tasks' images go side by side as channels, so each task's convolution is one group of a
        grouped convolution, and per-task batch statistics are per-channel statistics of the result.
        """
        tasks, rows = x.shape[:2]
        h = x.transpose(0, 1).reshape(rows, tasks * x.shape[2], *x.shape[3:])
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            w = params[f"convs.{i}.weight"]
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), params[f"convs.{i}.bias"].reshape(-1), conv.stride,
                         conv.padding, groups=tasks)
            h = F.relu(batch_stat_norm(h, params[f"norms.{i}.weight"].reshape(-1),
                                       params[f"norms.{i}.bias"].reshape(-1), norm.eps, stats_rows))
        return h.mean(dim=(2, 3)).view(rows, tasks, -1).transpose(0, 1)


def _under_vmap(x: torch.Tensor) -> bool:
    """True inside any torch.func transform (vmap, grad). There the native batch-norm kernel gives a wrong
    second-order meta-gradient and memory formats cannot be changed, so plain ops are used. A tensor
    under ``grad`` inside ``vmap`` is a grad wrapper, not a batched tensor: test for any functorch wrapper."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


class MetaModel(nn.Module):
    """Features followed by a linear head; ``stats_rows`` reaches the batch-statistics norms."""

    def __init__(self, features: nn.Module, n_out: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(features.out_dim, n_out)

    def forward(self, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        z = self.features(x, stats_rows) if getattr(self.features, "uses_batch_stats", False) else self.features(x)
        return self.head(z)

    def grouped(self, params: Params, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
        """Outputs (tasks, rows, n_out) of per-task parameters (leading task dimension) on (tasks, rows, ...)."""
        inner = {n[len("features."):]: p for n, p in params.items() if n.startswith("features.")}
        z = self.features.grouped(inner, x, stats_rows)
        return torch.baddbmm(params["head.bias"].unsqueeze(1), z, params["head.weight"].transpose(1, 2))


def supports_grouped(model: nn.Module) -> bool:
    """Whether ``model`` can run a meta-batch as grouped operations (its features define ``grouped``)."""
    return isinstance(model, MetaModel) and hasattr(model.features, "grouped")


def call(model: nn.Module, params: Params, x: torch.Tensor, stats_rows: int | None = None) -> torch.Tensor:
    return functional_call(model, params, (x,), {"stats_rows": stats_rows})


def step_size(lr: LearningRate, name: str) -> float | torch.Tensor:
    return lr if isinstance(lr, (int, float)) else lr[name]


def l2_distance(params: Params, reference: Params) -> torch.Tensor:
    """Squared L2 distance over the parameters named in ``reference`` (L2-SP, Li et al. 2018)."""
    return sum(((params[n] - ref) ** 2).sum() for n, ref in reference.items())


@dataclass(frozen=True)
class InnerLoop:
    """How a task adapts: loss, steps, step sizes, which parameters move, and an optional penalty."""

    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    steps: int
    lr: LearningRate
    names: tuple[str, ...] | None = None  # None: every parameter (MAML); head only: ANIL
    penalty_weight: float = 0.0  # inner-loop L2-SP toward ``anchor``
    anchor: Params | None = None
    support_stats: bool = False  # queries normalised with the support set's statistics (non-transductive)

    def with_lr(self, lr: LearningRate) -> "InnerLoop":
        return InnerLoop(self.loss, self.steps, lr, self.names, self.penalty_weight, self.anchor, self.support_stats)

    def query_output(self, model: nn.Module, params: Params, sx: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        """Query predictions: batch statistics of the queries (transductive) or of the support set."""
        if not self.support_stats:
            return call(model, params, qx)
        return call(model, params, torch.cat([sx, qx]), stats_rows=len(sx))[len(sx):]

    def objective(self, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.loss(call(model, params, x), y)
        if self.penalty_weight and self.anchor is not None:
            loss = loss + self.penalty_weight * l2_distance(params, self.anchor)
        return loss


def inner_loop(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, inner: InnerLoop,
               create_graph: bool, steps: int | None = None) -> Params:
    """``steps`` gradient steps from ``params`` on (x, y); differentiable when ``create_graph``."""
    names = list(inner.names or params)
    for _ in range(inner.steps if steps is None else steps):
        grads = torch.autograd.grad(inner.objective(model, params, x, y), [params[n] for n in names],
                                    create_graph=create_graph)
        params = {**params, **{n: params[n] - step_size(inner.lr, n) * g for n, g in zip(names, grads)}}
    return params


def _task_query_loss_functional(model: nn.Module, inner: InnerLoop, first_order: bool):
    """One task's query loss as a pure function of (params, lr, support, query), for torch.func."""
    def task(params: Params, lr: LearningRate, sx, sy, qx, qy) -> torch.Tensor:
        names = list(inner.names or params)
        fast = params
        adapt = inner.with_lr(lr)
        for _ in range(inner.steps):
            grads = torch.func.grad(lambda p: adapt.objective(model, {**fast, **p}, sx, sy))(
                {n: fast[n] for n in names})
            if first_order:
                grads = {n: g.detach() for n, g in grads.items()}
            fast = {**fast, **{n: fast[n] - step_size(lr, n) * grads[n] for n in names}}
        return inner.loss(inner.query_output(model, fast, sx, qx), qy)
    return task


@dataclass(frozen=True)
class Strategy:
    """How a meta-batch is evaluated: ``name`` loop, grouped or vmap; for grouped, ``chunk_size`` tasks per
    backward pass (None: the whole meta-batch) and ``workers`` threads that take chunks side by side, each
    running its operations on one core (1: chunk after chunk on all cores); ``reason`` says why ``auto`` chose
    it (recorded)."""

    name: str
    chunk_size: int | None = None
    reason: str = ""
    workers: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "chunk_size": self.chunk_size, "reason": self.reason, "workers": self.workers}


def task_query_loss(model: nn.Module, params: Params, ep, inner: InnerLoop, first_order: bool) -> torch.Tensor:
    """One task's query loss after adapting ``params`` on its support set (``inner.lr`` may hold tensors)."""
    fast = inner_loop(model, params, ep.support_x, ep.support_y, inner, create_graph=not first_order)
    return inner.loss(inner.query_output(model, fast, ep.support_x, ep.query_x), ep.query_y)


def meta_objective(model: nn.Module, params: Params, tasks: list, inner: InnerLoop, first_order: bool,
                   strategy: str, lr_params: Params | None = None) -> tuple[torch.Tensor, dict | None]:
    """Mean query loss after adaptation over a meta-batch, with the whole graph kept (tests, small batches).

    ``strategy="loop"`` and ``"grouped"`` return a loss with a graph to ``params`` (and ``lr_params``);
    ``"vmap"`` returns the detached loss plus the meta-gradients (a dict for ``params`` and one for
    ``lr_params``). Training uses :func:`meta_gradient`, which frees each task's (or chunk's) graph.
    """
    lr = lr_params if lr_params is not None else inner.lr
    if strategy == "loop":
        step = inner.with_lr(lr)
        return sum(task_query_loss(model, params, ep, step, first_order) for ep in tasks) / len(tasks), None
    if strategy == "grouped":
        return _grouped_meta_objective(model, params, tasks, inner, first_order, lr), None
    if strategy != "vmap":
        raise ValueError(f"unknown strategy {strategy!r}; use loop, grouped or vmap")
    return _vmap_meta_gradient(model, params, tasks, inner, first_order, lr_params)


def meta_gradient(model: nn.Module, params: Params, tasks: list, inner: InnerLoop, first_order: bool,
                  strategy: Strategy | str, lr_params: Params | None = None) -> tuple[torch.Tensor, dict[str, Params]]:
    """The detached mean query loss of a meta-batch and its gradients ``{"params": ..., "lr": ...}``.

    ``loop`` back-propagates task by task and ``grouped`` chunk by chunk, accumulating the meta-gradient,
    so only one task's (one chunk's) graph is alive at a time; ``vmap`` differentiates all tasks at once.
    """
    strategy = strategy if isinstance(strategy, Strategy) else Strategy(strategy)
    if strategy.name == "vmap":
        return _vmap_meta_gradient(model, params, tasks, inner, first_order, lr_params)
    lr = lr_params if lr_params is not None else inner.lr
    if strategy.name == "loop":
        step = inner.with_lr(lr)
        chunks = [[ep] for ep in tasks]
        piece = lambda chunk: task_query_loss(model, params, chunk[0], step, first_order)
    elif strategy.name == "grouped":
        size = strategy.chunk_size or len(tasks)
        chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
        piece = lambda chunk: _grouped_meta_objective(model, params, chunk, inner, first_order, lr)
    else:
        raise ValueError(f"unknown strategy {strategy.name!r}; use loop, grouped or vmap")
    lr_params = lr_params or {}
    wrt = [*params.values(), *lr_params.values()]

    def chunk_gradient(chunk: list) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        value = piece(chunk) * (len(chunk) / len(tasks))  # each chunk's share of the mean
        return value.detach(), torch.autograd.grad(value, wrt, allow_unused=True)

    total = [torch.zeros_like(p) for p in wrt]
    loss = torch.zeros((), dtype=wrt[0].dtype, device=wrt[0].device)
    parallel = strategy.name == "grouped" and strategy.workers > 1 and len(chunks) > 1 and wrt[0].device.type == "cpu"
    # Chunks are summed in their order whichever worker computed them: the same numbers as one worker.
    for value, grads in (_side_by_side(chunk_gradient, chunks, strategy.workers) if parallel
                         else map(chunk_gradient, chunks)):
        for acc, g in zip(total, grads):
            if g is not None:
                acc.add_(g)
        loss = loss + value
    grads = dict(zip([*params, *(f"lr:{n}" for n in lr_params)], total))
    return loss, {"params": {n: grads[n] for n in params}, "lr": {n: grads[f"lr:{n}"] for n in lr_params}}


def _side_by_side(work: Callable, chunks: list, workers: int) -> list:
    """``[work(c) for c in chunks]`` on ``workers`` threads (at most one per chunk), each running its operations on
    one core, or on an equal share of torch's threads when there are more threads than workers.

    On the CPU, one grouped chunk does not keep two cores busy (small convolutions, many small operations),
    while two chunks at once, one per core, do. Only grouped runs here: it reads the model's parameters from
    the dict it is given, never swapping them into the modules, so threads do not interfere. torch's
    intra-op thread count is process-wide (and OpenMP's is per thread: each worker sets its own): it is set to the
    workers' share for the step and restored after.
    """
    threads = torch.get_num_threads()
    workers = min(workers, len(chunks))
    each = max(1, threads // workers)  # more threads than chunks: each worker gets a share of them
    torch.set_num_threads(each)
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(each,)) as pool:
            return list(pool.map(work, chunks))
    finally:
        torch.set_num_threads(threads)


def _vmap_meta_gradient(model: nn.Module, params: Params, tasks: list, inner: InnerLoop, first_order: bool,
                        lr_params: Params | None) -> tuple[torch.Tensor, dict[str, Params]]:
    stack = [torch.stack([getattr(ep, f) for ep in tasks]) for f in ("support_x", "support_y", "query_x", "query_y")]
    task = _task_query_loss_functional(model, inner, first_order)
    batched = torch.func.vmap(task, in_dims=(None, None, 0, 0, 0, 0))

    def mean_loss(p: Params, lrs) -> torch.Tensor:
        return batched(p, lrs if lr_params is not None else inner.lr, *stack).mean()
    argnums = (0, 1) if lr_params is not None else 0
    grads, loss = torch.func.grad_and_value(mean_loss, argnums=argnums)(params, lr_params or {})
    if lr_params is None:
        grads = (grads, {})
    return loss.detach(), {"params": grads[0], "lr": grads[1]}


def _grouped_meta_objective(model: nn.Module, params: Params, tasks: list, inner: InnerLoop, first_order: bool,
                            lr: LearningRate) -> torch.Tensor:
    """The loop's meta-objective with every task at once: parameters get a leading task dimension
    (a broadcast view of theta, so the meta-gradient sums over tasks) and the per-task losses are summed
    for the inner gradient, which gives each task exactly its own gradient."""
    sx, sy, qx, qy = (torch.stack([getattr(ep, f) for ep in tasks]) for f in
                      ("support_x", "support_y", "query_x", "query_y"))
    n_tasks = len(tasks)
    names = list(inner.names or params)
    fast = {n: p.expand(n_tasks, *p.shape) for n, p in params.items()}
    for _ in range(inner.steps):
        objective = _per_task_loss(inner, model.grouped(fast, sx), sy).sum()
        if inner.penalty_weight and inner.anchor is not None:
            objective = objective + inner.penalty_weight * l2_distance(fast, inner.anchor)
        grads = torch.autograd.grad(objective, [fast[n] for n in names], create_graph=not first_order)
        fast = {**fast, **{n: fast[n] - step_size(lr, n) * g for n, g in zip(names, grads)}}
    if inner.support_stats:  # queries normalised with their task's support statistics
        out = model.grouped(fast, torch.cat([sx, qx], dim=1), stats_rows=sx.shape[1])[:, sx.shape[1]:]
    else:
        out = model.grouped(fast, qx)
    return _per_task_loss(inner, out, qy).mean()


def _per_task_loss(inner: InnerLoop, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each task's mean loss, from (tasks, rows, ...) outputs and targets."""
    rows = inner.loss(out.flatten(0, 1), y.flatten(0, 1), reduction="none")
    return rows.reshape(out.shape[0], -1).mean(1)


DEFAULT_CHUNK = 4  # tasks per backward pass for grouped: at the peers' setting (benchmarks/maml_step.py, 2 threads)
# 4 tasks held 2.4x the per-task loop's extra memory at the speed of 8 (4.0x) or 32 (9.9x)


def resolve_strategy(strategy: str, device: torch.device, model: nn.Module | None = None, *,
                     chunk_size: int | None = None, max_memory_mb: float | None = None,
                     task_mb: float | None = None, threads: int | None = None) -> Strategy:
    """The strategy to use, its chunk size and why.

    ``auto``: grouped when the backbone supports it, on CUDA, or on the CPU with at least two threads (with
    one thread grouped is no faster than the loop and holds more memory, issue 11); else vmap on CUDA and
    the loop on the CPU. Grouped's chunk: ``chunk_size`` if set; else as many tasks as ``max_memory_mb``
    holds at ``task_mb`` of graph per task; else the whole meta-batch on CUDA and :data:`DEFAULT_CHUNK` on
    the CPU. On an H200 (README, "On a GPU"), grouped over the whole meta-batch of 32 took 0.033 s per
    second-order meta-iteration against 0.045 s for vmap, with about a third of vmap's memory.
    """
    threads = threads or torch.get_num_threads()
    grouped_ok = model is not None and supports_grouped(model)
    why = f"{strategy} as set"
    if strategy == "auto":
        if device.type == "cuda" and not grouped_ok:
            return Strategy("vmap", None, "auto: CUDA, and the backbone has no grouped operations: vmap "
                                          "batches the tasks' many small kernels")
        if not grouped_ok:
            return Strategy("loop", None, "auto: the backbone has no grouped operations")
        if device.type == "cuda":
            strategy, why = "grouped", "auto: CUDA, grouped convolutions over the meta-batch (faster than vmap)"
        elif threads < 2:
            return Strategy("loop", None, "auto: one CPU thread, where grouped is not faster than the loop")
        else:
            strategy, why = "grouped", f"auto: CPU with {threads} threads, grouped convolutions use them"
    if strategy == "grouped":
        if not grouped_ok:
            raise ValueError("strategy 'grouped' needs a backbone with grouped operations (conv4-maml); "
                             "use strategy=loop or auto")
        workers = threads if device.type == "cpu" else 1
        side = f"; {workers} chunks side by side, one core each" if workers > 1 else ""
        if chunk_size:
            return Strategy("grouped", chunk_size, f"{why}; chunk_size={chunk_size}{side}", workers)
        if max_memory_mb and task_mb:
            chunk = max(1, int(max_memory_mb // (task_mb * workers)))
            return Strategy("grouped", chunk, f"{why}; {chunk} tasks per chunk: {task_mb:.1f} MB of graph per "
                                              f"task, {workers} chunk(s) at once within max_memory_mb="
                                              f"{max_memory_mb}{side}", workers)
        if device.type == "cuda":
            return Strategy("grouped", None, f"{why}; the whole meta-batch at once", workers)
        return Strategy("grouped", DEFAULT_CHUNK, f"{why}; default chunk of {DEFAULT_CHUNK} tasks{side}", workers)
    if strategy not in ("loop", "vmap"):
        raise ValueError(f"unknown strategy {strategy!r}; use auto, loop, grouped or vmap")
    return Strategy(strategy, None, why)


def graph_megabytes(compute: Callable[[], torch.Tensor]) -> float:
    """Megabytes of tensors that autograd saves while ``compute()`` builds its graph (each storage once):
    what one task (or chunk) keeps alive until its backward pass."""
    seen: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), str(t.device))] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        compute()
    return sum(seen.values()) / 2**20

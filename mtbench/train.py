"""The one training loop every algorithm reuses.

An algorithm supplies ``loss_fn(batch) -> loss`` and an iterator of batches (supervised minibatches,
episodes, meta-batches of episodes); the loop owns the optimiser, learning-rate schedule, gradient
clipping, progress bar, periodic validation and the recorded history.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch

from .errors import DivergedError

if TYPE_CHECKING:
    from .context import RunContext


@dataclass
class History:
    """What a fit did: losses, validation scores and its length, stored with every result."""

    steps: int = 0
    seconds: float = 0.0
    loss: list[tuple[int, float]] = field(default_factory=list)
    validation: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": round(self.seconds, 3), "loss": self.loss,
                "validation": self.validation}

    def first_step_reaching(self, key: str, threshold: float) -> int | None:
        """The first validated step whose ``key`` is at least ``threshold`` (None if never)."""
        for row in self.validation:
            if row.get(key, -math.inf) >= threshold:
                return int(row["step"])
        return None


OptimizerFactory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer, int], "torch.optim.lr_scheduler.LRScheduler"]


def make_optimizer(params: Iterable[Any], name: str, lr: float,
                   weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam or SGD (Nesterov) over parameters or parameter groups (dicts with their own ``lr``)."""
    params = list(params)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; use adam or sgd")


def linear_to_zero(opt: torch.optim.Optimizer, steps: int) -> "torch.optim.lr_scheduler.LRScheduler":
    """Learning rate annealed linearly from its initial value to zero at the last step (Reptile's meta step)."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)


def cosine_schedule(opt: torch.optim.Optimizer, steps: int) -> "torch.optim.lr_scheduler.LRScheduler":
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)


def step_schedule(every: int, gamma: float = 0.5) -> ScheduleFactory:
    """Multiply the learning rate by ``gamma`` every ``every`` steps."""
    return lambda opt, steps: torch.optim.lr_scheduler.StepLR(opt, every, gamma=gamma)


EXPLODED = 1e6  # a loss this many times its first value (and above 1) has diverged


def check_loss(value: float, first: float, step: int, description: str) -> None:
    """Stop a fit whose loss is NaN, infinite or exploding: its scores would be chance, not a result."""
    if not math.isfinite(value) or abs(value) > EXPLODED * max(abs(first), 1.0):
        raise DivergedError(f"{description}: the loss diverged to {value:.3g} at step {step} (first step: "
                            f"{first:.3g}); lower the learning rate")


def fit_loop(
    loss_fn: Callable[[Any], torch.Tensor],
    batches: Iterator[Any],
    params: Iterable[Any],
    *,
    steps: int,
    ctx: "RunContext",
    lr: float = 1e-3,
    optimizer: str | OptimizerFactory = "adam",
    schedule: ScheduleFactory | None = None,
    weight_decay: float = 0.0,
    lr_decay_every: int | None = None,
    lr_decay: float = 0.5,
    cosine: bool = False,
    momentum: float = 0.9,
    grad_clip: float | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
    validate_every: int = 0,
    log_every: int = 50,
    description: str = "fit",
    progress: bool = True,
) -> History:
    """Run ``steps`` optimiser steps of ``loss_fn`` over ``batches``.

    ``loss_fn`` may return a loss whose gradient the loop computes, or set ``.grad`` itself and return
    a detached loss (Reptile-style updates). ``optimizer`` is "adam", "sgd" (built from ``lr``,
    ``weight_decay``, ``momentum``) or a factory taking the parameter groups; ``schedule`` a factory
    ``(optimizer, steps) -> scheduler`` (``cosine`` and ``lr_decay_every`` are shorthands for two of them).
    An algorithm with its own optimiser or schedule passes a factory instead of adding a knob here.
    ``validate`` is called every ``validate_every`` steps and at the end; its dict is recorded with the
    step number. ``progress=False`` hides the bar (inner loops run once per episode, such as fitting a
    classifier head on a support set).
    """
    params = list(params)
    if params and isinstance(params[0], dict):  # parameter groups, e.g. a head and a backbone with two lrs
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    else:
        groups = [{"params": [p for p in params if p.requires_grad]}]
    params = [p for g in groups for p in g["params"]]
    opt = (make_optimizer(groups, optimizer, lr, weight_decay, momentum) if isinstance(optimizer, str)
           else optimizer(groups))
    if schedule is None and cosine:
        schedule = cosine_schedule
    elif schedule is None and lr_decay_every:
        schedule = step_schedule(lr_decay_every, lr_decay)
    sched = schedule(opt, steps) if schedule is not None else None
    history = History()
    start = time.perf_counter()
    running = 0.0
    bar = ctx.progress(description, steps) if progress else contextlib.nullcontext(lambda n=1, status="": None)
    with bar as advance:
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(next(batches))
            if loss.requires_grad:
                loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            value = float(loss.detach())
            if step == 1:
                first = value
            check_loss(value, first, step, description)
            running = value if step == 1 else 0.98 * running + 0.02 * value
            if step % log_every == 0 or step == steps:
                history.loss.append((step, round(running, 5)))
            status = f"loss {running:.3f}"
            if validate is not None and validate_every and (step % validate_every == 0 or step == steps):
                scores = validate()
                history.validation.append({"step": step, **scores})
                status += " " + " ".join(f"{k} {v:.3f}" for k, v in scores.items())
            advance(1, status)
    history.steps = steps
    history.seconds = time.perf_counter() - start
    return history

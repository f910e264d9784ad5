"""The LSTM meta-learner (Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR 2017).

A learned optimiser trains the learner network on each support set. Its core is an LSTM cell whose cell
state *is* the learner's parameter vector theta, coordinate by coordinate:

    c_t = f_t * c_{t-1} - i_t * grad_t        (theta_t = c_t)
    f_t = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F),   i_t = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I)

With f = 1 and i = lr this is plain gradient descent (tests/test_meta_lstm.py checks it step for step). The
gates are learned, so the meta-learner chooses a step size and a weight decay per coordinate and per step.
``h_t`` comes from a first, ordinary LSTM layer (20 units) that reads the preprocessed gradient and loss
(Andrychowicz et al. 2016, App. A: log-magnitude and sign, 4 inputs per coordinate); both layers share their
weights across all coordinates. The initial cell state c_0 is the meta-learned initial learner.

Meta-training: T updates on the support set, then the query loss of theta_T, back-propagated through the
unrolled updates into the LSTM and c_0. The gradient and loss that the meta-learner reads are treated as
constants (no second derivatives through them), as in the paper. The learner's BatchNorm uses the
statistics of the batch it sees, the support set at every update and the query set at prediction, in
training and at test, never running averages (transductive, like MAML's mode here).

Settings (the authors' released configuration, as reproduced by markdtw/meta-learning-lstm-pytorch):
T = 12 updates on the 1-shot support set, 8 on the 5-shot one, the whole support set as each batch; 15 query
examples per class in training episodes, as at test; Adam 1e-3, gradient-norm clipping 0.25, forget-gate bias
drawn in [4, 6] and input-gate bias in [-5, -4] so that training starts near gradient descent with a small
step. One episode per meta-iteration in the paper; the budgets here follow it (``meta_batch`` = 1) and are
shorter. The learner is this package's strided Conv-4
(``conv4-maml``) with the paper's 32 filters. Paper figures exist for miniImageNet only (43.44 ± 0.77 /
60.60 ± 0.71, 5-way 1/5-shot): the README cites them; the Omniglot rows have no paper column.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtbench import FitData, RunContext, Support, hookimpl
from mtbench.train import OptimizerFactory, ScheduleFactory, cosine_schedule

from .functional import InnerLoop, Params, call
from .meta_learner import AdaptedPredictor, GradientMetaLearner

PREPROCESS_P = 10.0  # Andrychowicz et al. 2016, App. A
INPUT_GATE_BIAS = -4.5  # the paper's input-gate bias is drawn in [-5, -4]: this is the centre, width 1
PAPER_TRAIN_QUERY = 15  # query examples per class in the paper's training episodes (its D_test)


def preprocess(x: torch.Tensor, p: float = PREPROCESS_P) -> torch.Tensor:
    """Andrychowicz et al. 2016: (log|x| / p, sign x) where |x| >= e^-p, else (-1, e^p x); shape [..., 2].
    Brings gradients and losses of every magnitude to a scale an LSTM can read."""
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, torch.log(x.abs().clamp_min(1e-30)) / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), math.exp(p) * x)
    return torch.stack([first, second], dim=-1)


class MetaLSTMCell(nn.Module):
    """The second layer: forget and input gates per coordinate; its cell state is the learner's parameters."""

    def __init__(self, hidden: int, input_gate_bias: float = INPUT_GATE_BIAS) -> None:
        super().__init__()
        # weights over [h_t (hidden), theta_{t-1}, gate_{t-1}], one column per gate
        self.w_forget = nn.Parameter(torch.empty(hidden + 2).uniform_(-0.01, 0.01))
        self.w_input = nn.Parameter(torch.empty(hidden + 2).uniform_(-0.01, 0.01))
        self.b_forget = nn.Parameter(torch.empty(1).uniform_(4.0, 6.0))
        self.b_input = nn.Parameter(torch.empty(1).uniform_(input_gate_bias - 0.5, input_gate_bias + 0.5))

    def forward(self, h: torch.Tensor, grad: torch.Tensor, theta: torch.Tensor, forget: torch.Tensor,
                input_: torch.Tensor, fixed_gates: tuple[float, float] | None = None):
        """(theta_t, f_t, i_t) from the first layer's ``h`` [n, hidden], the gradient [n] and the previous
        state. ``fixed_gates=(f, i)`` replaces the learned gates by constants (a test of the update rule)."""
        if fixed_gates is not None:
            forget, input_ = torch.full_like(theta, fixed_gates[0]), torch.full_like(theta, fixed_gates[1])
        else:
            hidden = self.w_forget.shape[0] - 2
            forget = torch.sigmoid(h @ self.w_forget[:hidden] + theta * self.w_forget[hidden]
                                   + forget * self.w_forget[hidden + 1] + self.b_forget)
            input_ = torch.sigmoid(h @ self.w_input[:hidden] + theta * self.w_input[hidden]
                                   + input_ * self.w_input[hidden + 1] + self.b_input)
        return forget * theta - input_ * grad, forget, input_


class MetaLearnerLSTM(nn.Module):
    """Both layers: an ordinary LSTM cell over (preprocessed gradient, preprocessed loss), then
    :class:`MetaLSTMCell`. Coordinates are the batch dimension, so all share the weights."""

    def __init__(self, hidden: int = 20, input_gate_bias: float = INPUT_GATE_BIAS) -> None:
        super().__init__()
        self.hidden = hidden
        self.lstm = nn.LSTMCell(4, hidden)
        self.cell = MetaLSTMCell(hidden, input_gate_bias)

    def initial_state(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        zeros = theta.new_zeros(theta.shape[0], self.hidden)
        return {"theta": theta, "h": zeros, "c": zeros, "forget": torch.zeros_like(theta),
                "input": torch.zeros_like(theta)}

    def step(self, state: dict[str, torch.Tensor], grad: torch.Tensor, loss: torch.Tensor,
             fixed_gates: tuple[float, float] | None = None) -> dict[str, torch.Tensor]:
        """One update of the learner; ``grad`` and ``loss`` are inputs (constants), as in the paper."""
        x = torch.cat([preprocess(grad), preprocess(loss.expand_as(grad))], dim=1)
        h, c = self.lstm(x, (state["h"], state["c"]))
        theta, forget, input_ = self.cell(h, grad, state["theta"], state["forget"], state["input"], fixed_gates)
        return {"theta": theta, "h": h, "c": c, "forget": forget, "input": input_}


def flatten_params(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten_params(vector: torch.Tensor, like: Params) -> Params:
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


def learn(model: nn.Module, meta: MetaLearnerLSTM, start: Params, x: torch.Tensor, y: torch.Tensor, updates: int,
          loss_fn=F.cross_entropy, fixed_gates: tuple[float, float] | None = None) -> Params:
    """``updates`` steps of the learned optimiser from ``start`` on (x, y): the learner's parameters after
    them, differentiable with respect to ``start`` and the meta-learner (not through the gradient inputs)."""
    state = meta.initial_state(flatten_params(start))
    for _ in range(updates):
        current = {n: p.detach().requires_grad_() for n, p in unflatten_params(state["theta"], start).items()}
        with torch.enable_grad():
            loss = loss_fn(call(model, current, x), y)
            grads = torch.autograd.grad(loss, list(current.values()))
        state = meta.step(state, flatten_params(dict(zip(current, grads))), loss.detach(), fixed_gates)
    return unflatten_params(state["theta"], start)


def paper_settings(n_way: int, k_shot: int) -> dict[str, Any]:
    return {"updates": 12 if k_shot == 1 else 8, "meta_batch": 1}


class MetaLSTM(GradientMetaLearner):
    name = "meta-lstm"
    citation = "Ravi & Larochelle 2017, ICLR (openreview rJY0-Kcll)"
    adapt_params = frozenset({"test_updates"})
    # quick: about 15 minutes of 2 CPU cores at 5-way 1-shot (0.3 s per episode), the training time of the MAML
    # family's rows (750-870 s); paper: 50,000 episodes
    budgets = {"quick": {"meta_iterations": 3000}, "standard": {"meta_iterations": 10_000},
               "paper": {"meta_iterations": 50_000}}
    constraints = {"meta_iterations": ">= 1", "meta_batch": ">= 1", "updates": ">= 1", "test_updates": ">= 1",
                   "filters": ">= 1", "hidden": ">= 1", "meta_lr": "> 0", "grad_clip": "> 0", "train_query": ">= 1",
                   "bn": ("transductive",), "validate_every": ">= 0", "val_episodes": ">= 1",
                   "input_gate_bias": "< 0", "meta_lr_schedule": ("constant", "cosine")}

    def __init__(self, backbone: str = "conv4-maml", filters: int = 32, hidden: int = 20,
                 meta_iterations: int = 50_000, meta_batch: int | None = None, updates: int | None = None,
                 test_updates: int | None = None, meta_lr: float = 1e-3, grad_clip: float = 0.25,
                 train_query: int = PAPER_TRAIN_QUERY, bn: str = "transductive", validate_every: int = 250,
                 val_episodes: int = 100, input_gate_bias: float = INPUT_GATE_BIAS, keep_best: bool = True,
                 meta_lr_schedule: str = "constant") -> None:
        self.backbone = backbone
        self.filters = filters
        self.hidden = hidden
        self.meta_iterations = meta_iterations
        self.meta_batch = meta_batch
        self.updates = updates
        self.test_updates = test_updates
        self.meta_lr = meta_lr
        self.grad_clip = grad_clip
        self.train_query = train_query
        self.bn = bn
        self.validate_every = validate_every
        self.val_episodes = val_episodes
        self.input_gate_bias = input_gate_bias
        self.keep_best = keep_best
        self.meta_lr_schedule = meta_lr_schedule

    def settings(self, n_way: int) -> dict[str, Any]:
        paper = paper_settings(n_way, self.k_shot_)
        return {k: paper[k] if getattr(self, k) is None else getattr(self, k) for k in paper}

    def batchnorm_mode(self) -> str:
        super().batchnorm_mode()
        return ("batch statistics of the batch the learner sees: the support set at every update, the query set "
                "together at prediction; no running averages, in training and at test (transductive)")

    def init_fitted(self, data: FitData, ctx: RunContext, features: nn.Module | None = None) -> None:
        """The learner (whose weights are c_0, the meta-learned initial state) and the two-layer meta-learner."""
        self.k_shot_ = data.target.k_shot
        if features is None and self.backbone.startswith("conv4-maml"):
            features = ctx.build_backbone(self.backbone, data.train.shape, hidden=self.filters)
        super().init_fitted(data, ctx, features)
        self.meta_ = MetaLearnerLSTM(self.hidden, self.input_gate_bias).to(ctx.device)

    def training_episodes(self, target) -> tuple[int, int]:
        return target.k_shot, self.train_query

    def meta_parameters(self) -> list[torch.Tensor]:
        return [*self.model_.parameters(), *self.meta_.parameters()]

    def meta_optimizer(self) -> OptimizerFactory:
        return lambda groups: torch.optim.Adam(groups, lr=self.meta_lr)

    def meta_schedule(self) -> ScheduleFactory | None:
        """The paper's constant meta learning rate, or a cosine decay to 0 over the budget (``"cosine"``)."""
        return cosine_schedule if self.meta_lr_schedule == "cosine" else None

    def meta_loss(self, tasks: list) -> torch.Tensor:
        """Mean query loss after the learned updates, back-propagated task by task (one graph alive)."""
        start = dict(self.model_.named_parameters())
        total = 0.0
        for ep in tasks:
            fast = learn(self.model_, self.meta_, start, ep.support_x, ep.support_y, self.settings_["updates"])
            loss = F.cross_entropy(call(self.model_, fast, ep.query_x), ep.query_y) / len(tasks)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.meta_parameters(), self.grad_clip)
        return torch.tensor(total)

    def fit_facts(self) -> dict[str, Any]:
        s = self.settings_
        return {"updates": s["updates"], "learner": f"{self.backbone}, {self.filters} filters",
                "meta_learner": f"2-layer coordinate-wise LSTM, {self.hidden} units in the first layer",
                "gradient_clip": self.grad_clip, "second_derivatives": "none through the gradient and loss inputs",
                "input_gate_bias_init": [self.input_gate_bias - 0.5, self.input_gate_bias + 0.5],
                "deviations": [*([f"meta-batch of {s['meta_batch']} episodes (paper: 1)"]
                                 if s["meta_batch"] != 1 else []),
                               *([f"input-gate bias drawn in [{self.input_gate_bias - 0.5:g}, "
                                  f"{self.input_gate_bias + 0.5:g}] (paper: [-5, -4]; a first step of "
                                  f"about {torch.sigmoid(torch.tensor(self.input_gate_bias)).item():.2g} x gradient)"]
                                 if self.input_gate_bias != INPUT_GATE_BIAS else []),
                               *([f"meta learning rate {self.meta_lr:g} on a cosine schedule to 0 (paper: "
                                  "constant)"] if self.meta_lr_schedule == "cosine" else []),
                               *([f"{self.train_query} query examples per class in training (paper: "
                                  f"{PAPER_TRAIN_QUERY})"] if self.train_query != PAPER_TRAIN_QUERY else []),
                               f"{self.meta_iterations * s['meta_batch']} episodes of meta-training "
                               f"({self.meta_iterations} meta-iterations of {s['meta_batch']}; paper: 50,000 of 1)"]}

    def fit(self, data: FitData, ctx: RunContext) -> "MetaLSTM":
        """Meta-train; with ``keep_best``, keep the learner and meta-learner of the best validation score (early
        stopping on the validation classes, ties to the earliest), the last one when nothing was validated."""
        self.best_: dict[str, Any] | None = None
        self.validations_ = 0
        super().fit(data, ctx)
        best, self.best_ = self.best_, None
        if best is not None:
            self.model_.load_state_dict(best["model"])
            self.meta_.load_state_dict(best["meta"])
            validation = self.fit_info_["history"]["validation"]
            self.fit_info_["kept"] = {"step": validation[best["index"]]["step"], "val_accuracy": best["score"],
                                      "last_val_accuracy": validation[-1]["val_accuracy"]}
            self.fit_info_["deviations"].append("the meta-iteration kept is the best on validation episodes")
        return self

    def validation_score(self, data: FitData, ctx: RunContext) -> float:
        score = super().validation_score(data, ctx)
        if self.keep_best and (self.best_ is None or score > self.best_["score"]):
            self.best_ = {"index": self.validations_, "score": score,
                          "model": {k: v.detach().clone() for k, v in self.model_.state_dict().items()},
                          "meta": {k: v.detach().clone() for k, v in self.meta_.state_dict().items()}}
        self.validations_ += 1
        return score

    def adapt(self, support: Support, ctx: RunContext) -> AdaptedPredictor:
        updates = self.test_updates or self.settings_["updates"]
        start = {n: p.detach() for n, p in self.model_.named_parameters()}
        with torch.no_grad():
            fast = learn(self.model_, self.meta_, start, support.x, support.y, updates)
        inner = InnerLoop(F.cross_entropy, 0, 0.0)
        return AdaptedPredictor(self.model_, {n: p.detach() for n, p in fast.items()}, inner, support.x, False)


@hookimpl
def register_algorithms(register):
    register(MetaLSTM)

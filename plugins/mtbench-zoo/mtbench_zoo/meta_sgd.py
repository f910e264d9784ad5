"""Meta-SGD (Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning",
2017, arXiv:1707.09835): MAML whose inner step size is a learned tensor per parameter (alpha), meta-learned
together with the initialisation.

``meta-sgd`` follows the paper: one adaptation step in meta-training and at test, and alpha initialised at
random, uniformly in [0.005, 0.1] per coordinate (the paper's stated initialisation, Sec. 4.1). The other
settings (meta-batch, Adam 1e-3, the network, batch-statistics BatchNorm) are MAML's, as in the paper's
classification experiments.

``meta-sgd-maml`` keeps this package's earlier setting as a named variant: alpha starts at MAML's inner
learning rate everywhere (0.4 at 5-way) and adaptation takes MAML's number of steps (3 at test, 5-way).
Every such choice is written into ``fit_info["deviations"]`` so it shows on the row.
"""
from __future__ import annotations

from typing import Any

import torch

from mtbench import FitData, RunContext, hookimpl

from .functional import Params
from .maml import MAML, paper_settings as maml_settings

UNIFORM_INIT = (0.005, 0.1)  # Li et al. 2017, Sec. 4.1


class MetaSGD(MAML):
    name = "meta-sgd"
    citation = "Li et al. 2017, arXiv:1707.09835"
    added_params = {"step_size_init": (str, "uniform")}
    constraints = {**MAML.constraints, "step_size_init": ("uniform", "inner_lr")}

    def paper_settings(self, n_way: int) -> dict[str, Any]:
        """MAML's table with the paper's single adaptation step, in meta-training and at test."""
        return {**maml_settings(n_way), "inner_steps": 1, "test_inner_steps": 1}

    def init_fitted(self, data: FitData, ctx: RunContext, features: torch.nn.Module | None = None) -> None:
        super().init_fitted(data, ctx, features)
        if self.step_size_init == "uniform":
            low, high = UNIFORM_INIT
            self.step_sizes_ = {n: torch.empty_like(p).uniform_(low, high).requires_grad_()
                                for n, p in self.model_.named_parameters()}
        else:
            init = self.settings_["inner_lr"]
            self.step_sizes_ = {n: torch.full_like(p, init).requires_grad_() for n, p in self.model_.named_parameters()}

    def lr_parameters(self) -> Params:
        return self.step_sizes_

    def fit_facts(self) -> dict[str, Any]:
        """Which step-size initialisation and how many steps, against the paper's one step and U[0.005, 0.1]."""
        s = self.settings_
        test_steps = s["test_inner_steps"] if self.test_inner_steps is None else self.test_inner_steps
        deviations = []
        if self.step_size_init != "uniform":
            deviations.append(f"step sizes start at {s['inner_lr']} everywhere (paper: uniform in {list(UNIFORM_INIT)})")
        if s["inner_steps"] != 1 or test_steps != 1:
            deviations.append(f"{s['inner_steps']} inner step(s) in meta-training and {test_steps} at test (paper: 1)")
        init = (f"uniform in {list(UNIFORM_INIT)}" if self.step_size_init == "uniform" else f"constant {s['inner_lr']}")
        return {**super().fit_facts(), "step_size_init": init, "deviations": deviations}


class MetaSGDMAMLSettings(MetaSGD):
    """Meta-SGD on MAML's settings: alpha starts at MAML's inner learning rate, MAML's numbers of steps."""

    name = "meta-sgd-maml"
    citation = "Li et al. 2017, arXiv:1707.09835, on MAML's settings (Finn et al. 2017)"
    param_defaults = {"step_size_init": "inner_lr"}

    def paper_settings(self, n_way: int) -> dict[str, Any]:
        return maml_settings(n_way)


@hookimpl
def register_algorithms(register):
    register(MetaSGD)
    register(MetaSGDMAMLSettings)

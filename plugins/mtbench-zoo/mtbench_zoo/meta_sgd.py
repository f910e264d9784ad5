"""Meta-SGD (Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning",
2017, arXiv:1707.09835): MAML whose inner step size is a learned tensor per parameter, meta-learned
together with the initialisation (one inner step, as in the paper).
"""
from __future__ import annotations

import torch

from mtbench import FitData, RunContext, hookimpl

from .functional import Params
from .maml import MAML


class MetaSGD(MAML):
    name = "meta-sgd"
    citation = "Li et al. 2017, arXiv:1707.09835"

    def init_fitted(self, data: FitData, ctx: RunContext, features: torch.nn.Module | None = None) -> None:
        super().init_fitted(data, ctx, features)
        init = self.settings_["inner_lr"]
        self.step_sizes_ = {n: torch.full_like(p, init).requires_grad_() for n, p in self.model_.named_parameters()}

    def lr_parameters(self) -> Params:
        return self.step_sizes_


@hookimpl
def register_algorithms(register):
    register(MetaSGD)

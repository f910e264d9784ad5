"""ANIL, "Almost No Inner Loop" (Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse?",
ICLR 2020, arXiv:1909.09157): MAML whose inner loop adapts only the linear head; the features are
meta-learned in the outer loop but never changed per task. Same hyperparameters as MAML.
"""
from __future__ import annotations

from mtbench import hookimpl

from .functional import Params
from .maml import MAML


class ANIL(MAML):
    name = "anil"
    citation = "Raghu et al. 2020, arXiv:1909.09157"

    def adapted_names(self, params: Params) -> tuple[str, ...]:
        return tuple(n for n in params if n.startswith("head."))


@hookimpl
def register_algorithms(register):
    register(ANIL)

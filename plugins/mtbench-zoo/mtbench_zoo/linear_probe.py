"""Linear probe: logistic regression on frozen, L2-normalised pretrained features.

Tian, Wang, Krishnan, Tenenbaum & Isola, "Rethinking Few-Shot Image Classification: a Good Embedding
Is All You Need?", ECCV 2020, arXiv:2003.11539 (their RFS-simple; scikit-learn LogisticRegression).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from mtbench import Algorithm, FitData, RunContext, Support, Target, hookimpl

from ._common import FrozenEmbedding, HeadPredictor
from .pretraining import PRETRAIN_BUDGETS, fresh_networks, pretrained_encoder


class LinearProbe(FrozenEmbedding, Algorithm):
    name = "linear-probe"
    kind = "transfer"
    citation = "Tian et al. 2020, arXiv:2003.11539"
    budgets = PRETRAIN_BUDGETS
    adapt_params = frozenset({"C", "normalize", "max_iter"})
    constraints = {"pretrain_steps": ">= 0", "batch_size": ">= 1", "lr": "> 0", "C": "> 0", "max_iter": ">= 1"}

    def __init__(self, backbone: str = "conv4", pretrain_steps: int = 10_000, batch_size: int = 128,
                 lr: float = 1e-3, C: float = 1.0, normalize: bool = True, max_iter: int = 1000) -> None:
        self.backbone = backbone
        self.pretrain_steps = pretrain_steps
        self.batch_size = batch_size
        self.lr = lr
        self.C = C
        self.normalize = normalize
        self.max_iter = max_iter

    def fit_key(self, target: Target) -> dict:
        return {}

    def init_fitted(self, data: FitData, ctx: RunContext) -> None:
        self.encoder_ = fresh_networks(data, ctx, self.backbone)[0].eval()

    def fit(self, data: FitData, ctx: RunContext) -> "LinearProbe":
        self.init_fitted(data, ctx)
        self.encoder_, info = pretrained_encoder(data, ctx, self.backbone, self.pretrain_steps, self.batch_size,
                                                 self.lr)
        info.pop("head", None)
        self.fit_info_ = {**info, "batchnorm": "running statistics (frozen)"}
        return self

    def _features(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) if self.normalize else z

    def adapt_embedded(self, support: Support, ctx: RunContext) -> HeadPredictor:
        z = self._features(support.x).cpu().double().numpy()
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(z, support.y.cpu().numpy())
        if list(clf.classes_) != list(range(support.n_way)):
            raise ValueError(f"support set must hold every label 0..{support.n_way - 1}")

        def head(features: torch.Tensor) -> torch.Tensor:
            proba = clf.predict_proba(self._features(features).cpu().double().numpy())
            return torch.from_numpy(proba).float().to(features.device)
        return HeadPredictor(head, returns_logits=False)


@hookimpl
def register_algorithms(register):
    register(LinearProbe)

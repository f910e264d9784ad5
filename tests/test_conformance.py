"""Every built-in and the example third-party algorithm pass the conformance kit."""
from __future__ import annotations

import sys
from pathlib import Path

from mtbench.testing import parametrize_with_checks
from mtbench_zoo.finetune import Finetune
from mtbench_zoo.linear_probe import LinearProbe
from mtbench_zoo.anil import ANIL
from mtbench_zoo.maml import MAML, FirstOrderMAML, MAMLL2SP
from mtbench_zoo.meta_sgd import MetaSGD
from mtbench_zoo.protonet import ProtoNet
from mtbench_zoo.reptile import Reptile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "mtbench-example"))
from mtbench_example import PixelKnn  # noqa: E402

ALGORITHMS = [
    ProtoNet(backbone="mlp", episodes=30, train_way=5, validate_every=0),
    Finetune(backbone="mlp", pretrain_steps=30, batch_size=20, head_steps=20),
    Finetune(backbone="mlp", pretrain_steps=30, batch_size=20, head_steps=5, finetune_backbone=True, l2sp=0.1),
    LinearProbe(backbone="mlp", pretrain_steps=30, batch_size=20),
    PixelKnn(),
    MAML(meta_iterations=10, meta_batch=4, validate_every=0),
    MAML(meta_iterations=10, meta_batch=4, validate_every=0, bn="support"),  # non-transductive mode
    FirstOrderMAML(meta_iterations=10, meta_batch=4, validate_every=0),
    MAMLL2SP(meta_iterations=10, meta_batch=4, validate_every=0, pretrain_steps=10, inner_l2sp=0.01),
    ANIL(meta_iterations=10, meta_batch=4, validate_every=0),
    MetaSGD(meta_iterations=10, meta_batch=4, validate_every=0),
    Reptile(meta_iterations=10, meta_batch=2, validate_every=0),
]


@parametrize_with_checks(ALGORITHMS)
def test_conformance(algorithm, check):
    check(algorithm)

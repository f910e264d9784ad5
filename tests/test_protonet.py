"""ProtoNet's budgets follow Snell et al. where they can, and every departure is recorded on the row."""
from __future__ import annotations

from mtbench import Target
from mtbench.testing import _context, _fit_data
from mtbench_zoo.protonet import ProtoNet


def test_standard_budget_trains_sixty_way_with_the_test_shot():
    alg = ProtoNet().set_params(**ProtoNet.budgets["standard"])
    assert alg.train_way == 60 and alg.train_shot is None
    assert alg.fit_key(Target(5, 1, 15)) != alg.fit_key(Target(5, 5, 15))  # one fit per test shot
    quick = ProtoNet().set_params(**ProtoNet.budgets["quick"])
    assert quick.fit_key(Target(5, 1, 15)) == quick.fit_key(Target(20, 5, 15))  # one fit for every cell


def test_quick_profile_records_its_deviations():
    alg = ProtoNet(backbone="mlp", episodes=5, train_way=10, train_shot=1, validate_every=0)
    deviations = alg.fit(_fit_data(alg, 5, 5), _context()).fit_info()["deviations"]
    assert "trained 10-way (paper: 60-way)" in deviations
    assert any("one 1-shot fit for every test shot" in d for d in deviations)
    paper_like = ProtoNet(backbone="mlp", episodes=5, train_way=60, validate_every=0)
    deviations = paper_like.fit(_fit_data(paper_like, 5, 5), _context()).fit_info()["deviations"]
    assert not any("shot" in d for d in deviations)

"""The shared base of gradient-based meta-learners: variants by defaults, not copies; init_fitted builds the
fitted state without training."""
from __future__ import annotations

import typing

import torch

from mtbench import RunContext
from mtbench.plugins import load_plugins
from mtbench_zoo.maml import MAML, FirstOrderMAML, MAMLL2SP
from mtbench_zoo.meta_learner import GradientMetaLearner
from mtbench_zoo.reptile import Reptile
from test_maml import synthetic_fit_data


def test_variants_change_defaults_without_repeating_the_init():
    assert FirstOrderMAML.param_names() == MAML.param_names() == MAMLL2SP.param_names()[:-1]
    assert FirstOrderMAML().first_order is True and MAML().first_order is False
    assert (MAMLL2SP().pretrain_steps, MAMLL2SP().l2sp, MAMLL2SP().select_l2sp) == (10_000, 1e-3, True)
    assert typing.get_type_hints(MAMLL2SP.__init__)["select_l2sp"] is bool  # an added parameter, typed
    assert FirstOrderMAML(first_order=False, meta_iterations=7).get_params()["meta_iterations"] == 7
    hints = typing.get_type_hints(FirstOrderMAML.__init__)
    assert hints["first_order"] is bool and hints["meta_iterations"] is int
    assert "__init__" not in FirstOrderMAML.__dict__ or FirstOrderMAML.__init__.__wrapped__ is MAML.__init__
    assert issubclass(Reptile, GradientMetaLearner) and not issubclass(Reptile, MAML)


def test_init_fitted_builds_fresh_state_that_fit_then_trains():
    plugins = load_plugins()
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = synthetic_fit_data()
    for name in ("maml", "maml-fo", "maml-l2sp", "anil", "meta-sgd", "reptile"):
        alg = plugins.algorithms.get(name)(meta_iterations=2, meta_batch=2, validate_every=0)
        if name == "reptile":
            alg.set_params(train_shot=4)
        if name == "maml-l2sp":
            alg.set_params(pretrain_steps=2)
        torch.manual_seed(0)
        alg.init_fitted(data, ctx)
        fresh = {n: p.detach().clone() for n, p in alg.model_.named_parameters()}
        assert alg.settings_["meta_batch"] == 2 and not hasattr(alg, "fit_info_"), name
        torch.manual_seed(0)
        alg.fit(data, ctx)
        assert any(not torch.equal(fresh[n], p) for n, p in alg.model_.named_parameters()), name


def test_meta_sgd_follows_the_paper_and_the_earlier_setting_is_a_named_variant():
    """Li et al. 2017: one adaptation step, step sizes drawn uniformly in [0.005, 0.1]; ``meta-sgd-maml`` keeps
    MAML's 0.4 and 3 test steps, and says so in fit_info."""
    plugins = load_plugins()
    ctx = RunContext(torch.device("cpu"), plugins=plugins)
    data = synthetic_fit_data(n_way=3)
    infos = {}
    for name in ("meta-sgd", "meta-sgd-maml"):
        alg = plugins.algorithms.get(name)(meta_iterations=1, meta_batch=2, validate_every=0)
        alg.init_fitted(data, ctx)
        sizes = torch.cat([s.flatten() for s in alg.step_sizes_.values()])
        if name == "meta-sgd":
            assert 0.005 <= float(sizes.min()) < float(sizes.max()) <= 0.1
            assert (alg.settings_["inner_steps"], alg.settings_["test_inner_steps"]) == (1, 1)
        else:
            assert torch.all(sizes == 0.4) and alg.settings_["test_inner_steps"] == 3
        infos[name] = alg.fit(data, ctx).fit_info_
    assert infos["meta-sgd"]["deviations"] == [] and "uniform" in infos["meta-sgd"]["step_size_init"]
    assert len(infos["meta-sgd-maml"]["deviations"]) == 2


def test_grouped_chunk_is_sized_from_the_measured_graph_of_one_task():
    ctx = RunContext(torch.device("cpu"), plugins=load_plugins())
    alg = MAML(meta_iterations=2, meta_batch=6, validate_every=0, strategy="grouped", max_memory_mb=2.5)
    detail = alg.fit(synthetic_fit_data(), ctx).fit_info_["strategy_detail"]
    assert detail["task_mb"] > 0 and detail["chunk_size"] == max(1, int(2.5 // detail["task_mb"]))
    assert "max_memory_mb=2.5" in detail["reason"]

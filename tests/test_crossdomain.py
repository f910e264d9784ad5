"""The crossdomain suite: Omniglot base classes, digits test episodes; DANN's rows say what they saw."""
from __future__ import annotations

import json

from mtbench.runner import plan_cells
from mtbench.suites import parse_suite
from mtbench_zoo.dann import describe_images
from mtbench_zoo.digits import Digits

from runner_helpers import make_runner


def test_suite_trains_on_omniglot_and_tests_on_digits(plugins):
    suite = plugins.suites.get("crossdomain")
    (entry,) = suite.datasets
    assert (entry.name, entry.split, entry.base.name, entry.base.params) == ("digits", "test", "omniglot",
                                                                            {"split": "vinyals"})
    assert entry.identity()["train"]["dataset"] == "omniglot"  # never the identity of a within-domain cell
    assert set(suite.protocols) == {(5, 1), (5, 5)}
    ablation = suite.entry("dann-no-adversary")
    assert ablation.name == "dann" and ablation.params == {"adversary_weight": 0.0}
    cells = plan_cells(suite, plugins, budget="quick")
    labels = {c.algorithm for c in cells}
    assert {"dann", "dann-no-adversary", "baseline-pp", "meta-baseline", "mtl", "finetune", "protonet"} <= labels
    assert len({c.run_id for c in cells}) == len(cells)


def test_dann_cross_domain_row_records_the_unlabeled_target(tmp_path, plugins):
    suite = parse_suite({
        "name": "cross", "algorithms": ["dann", {"name": "dann", "label": "dann-no-adversary",
                                                 "params": {"adversary_weight": 0.0}}],
        "episodes": 4, "queries": 3,
        "datasets": [{"name": "digits", "train": {"name": "synthetic", "params": {"image_size": 28}}}],
        "protocols": [{"ways": 5, "shots": 1}],
        "params": {"dann": {"backbone": "mlp", "steps": 4, "batch_size": 8, "validate_every": 0, "head_steps": 5}}},
        "test")
    done = make_runner(plugins, tmp_path).run(plan_cells(suite, plugins)).done
    runs = {json.loads(p.read_text())["spec"]["algorithm"]: json.loads(p.read_text()) for p in done}
    digits = Digits().load(None, None).split("test")
    for label, run in runs.items():
        seen = run["fit_info"]["unlabeled_target"]
        assert run["algorithm"]["tags"]["uses_unlabeled_target"] is True
        assert seen["used"] and seen["count"] == len(digits.images) == 1797
        assert seen["sha256"] == describe_images(digits.images)["sha256"]
        assert run["spec"]["train_dataset"] == "synthetic" and run["spec"]["dataset"] == "digits"
    assert runs["dann-no-adversary"]["fit_info"]["adversary_weight"] == 0.0
    assert runs["dann"]["fit_info"]["adversary_weight"] == 1.0

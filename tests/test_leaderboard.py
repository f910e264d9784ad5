"""The leaderboard's numbers on hand-made result files: identity, seeds, direction, significance, cost.

Each test names the defect of issue 7 it guards against; all of them failed on the old aggregation
(one GROUP of dataset name, algorithm, budget and parameters; seeds pooled as episodes; direction ignored).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mtbench import leaderboard as lb
from mtbench.metrics import Metric
from mtbench.suites import Reference, Suite, DatasetEntry

ACCURACY = Metric("accuracy", fn=None, scale=100.0)
MSE = Metric("mse", fn=None, task="regression", higher_is_better=False)


def make_run(algorithm: str, values, *, n_way: int = 5, k_shot: int = 1, seed: int = 0, params: dict | None = None,
             dataset: str = "d", dataset_params: dict | None = None, train_dataset: str | None = None,
             train_params: dict | None = None, digest: str | None = None, metric: str = "accuracy",
             plugin: str | None = None, kind: str = "meta", transductive: bool = False, batchnorm: str | None = None,
             fit_info: dict | None = None, budget: str = "quick", suite: str = "s", version: str = "v1") -> dict:
    """A result payload as the runner writes it (only the fields the leaderboard reads)."""
    dataset_params = dataset_params or {}
    spec = {"suite": suite, "algorithm": algorithm, "plugin": plugin or algorithm, "params": params or {},
            "dataset": dataset, "dataset_params": dataset_params, "split": "test",
            "train_dataset": train_dataset or dataset,
            "train_dataset_params": dataset_params if train_params is None else train_params,
            "n_way": n_way, "k_shot": k_shot, "n_query": 15, "n_episodes": len(values), "seed": seed,
            "metrics": [metric], "budget": budget, "kind": kind, "device": "cpu"}
    info = dict(fit_info or {})
    if batchnorm:
        info["batchnorm"] = batchnorm
    rows = [[i, metric, float(v), 2.0] for i, v in enumerate(values)]
    digest = digest or f"dg-{dataset}-{n_way}-{k_shot}-{seed}-{len(values)}"
    return {"api_version": 1, "run_id": f"{algorithm}-{dataset}-{n_way}w{k_shot}s-seed{seed}-{abs(hash(str(spec)))}",
            "spec": spec, "algorithm": {"name": plugin or algorithm, "kind": kind, "version": version,
                                        "tags": {"transductive": transductive}},
            "timings": {"fit_s": 2.0, "train_steps": 10, "train_s": 1.5, "adapt_ms_mean": 2.0},
            "episodes": {"digest": digest, "count": len(values)}, "fit_info": info,
            "environment": {"git_commit": "abc", "device": "cpu", "mtbench": "0.1.0", "torch": "2"},
            "columns": ["episode", "metric", "value", "adapt_ms"], "rows": rows}


def board(runs, metric=ACCURACY, **kw) -> lb.Leaderboard:
    return lb.build_leaderboard(runs, suite=kw.pop("suite", None), metric=metric, **kw)


def test_mean_and_episode_ci_match_a_hand_computation():
    values = [0.6, 0.8, 1.0, 0.8]  # mean 0.8; sample std = sqrt(0.08 / 3)
    row = board([make_run("a", values)]).cells.iloc[0]
    assert row["mean"] == pytest.approx(0.8)
    assert row["ci95"] == pytest.approx(1.96 * math.sqrt(0.08 / 3) / 2)
    assert row["n_episodes"] == 4 and row["n_seeds"] == 1 and row["ci_kind"] == "episodes"


def test_defect1_two_entries_of_one_dataset_plugin_are_two_rows():
    """Within-domain and cross-domain cells of one plugin, and two parameter sets: never pooled."""
    rng = np.random.default_rng(0)
    within = make_run("protonet", rng.uniform(0.9, 1.0, 600), dataset="digits")
    cross = make_run("protonet", rng.uniform(0.8, 1.0, 600), dataset="digits", train_dataset="omniglot",
                     train_params={"split": "vinyals"})
    other = make_run("protonet", rng.uniform(0.5, 1.0, 600), dataset="digits", dataset_params={"size": 14})
    cells = board([within, cross, other]).cells
    assert len(cells) == 3 and set(cells["n_episodes"]) == {600}
    assert set(cells["dataset_label"]) == {"omniglot→digits", "digits (size=default)", "digits (size=14)"}
    assert cells["experiment"].tolist() == ["protonet"] * 3  # one method, three datasets


def test_dataset_label_recorded_by_the_suite_wins():
    run = make_run("a", [1.0, 0.0])
    run["spec"]["dataset_label"] = "my-digits"
    assert board([run]).cells.iloc[0]["dataset_label"] == "my-digits"


def test_defect2_seeds_are_a_level_not_more_episodes():
    runs = [make_run("a", [1.0, 0.0, 1.0, 1.0], seed=0), make_run("a", [1.0, 1.0, 0.0, 1.0], seed=1),
            make_run("a", [0.5, 0.5, 0.5, 0.5], seed=2)]
    row = board(runs).cells.iloc[0]
    seed_means = np.array([0.75, 0.75, 0.5])
    assert row["n_seeds"] == 3 and row["n_episodes"] == 4 and row["ci_kind"] == "seeds"
    assert row["mean"] == pytest.approx(seed_means.mean())
    assert row["seed_std"] == pytest.approx(seed_means.std(ddof=1))
    assert row["ci95"] == pytest.approx(sps.t.ppf(0.975, 2) * seed_means.std(ddof=1) / math.sqrt(3))
    text = board(runs).wide.iloc[0]["5-way 1-shot"]
    assert "(3 seeds)" in text
    assert any("several seeds" in n for n in board(runs).notes)


def test_several_seeds_pair_on_each_episodes_mean_over_the_shared_seeds():
    rng = np.random.default_rng(5)
    a = [rng.uniform(0.6, 1.0, 50) for _ in range(3)]
    b = [x - rng.uniform(0.0, 0.05, 50) for x in a]  # same episodes per seed (same digests), a bit worse
    runs = [make_run(name, v, seed=s) for name, vs in (("a", a), ("b", b)) for s, v in enumerate(vs)]
    runs.append(make_run("b", rng.uniform(0, 1, 50), seed=7))  # a seed "a" does not have: left out of the pairing
    row = board(runs).cells.set_index("experiment").loc["b"]
    x, y = np.mean(b, axis=0), np.mean(a, axis=0)
    assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(np.round(x - y, 6)).pvalue)
    assert row["p_ttest"] == pytest.approx(sps.ttest_rel(x, y).pvalue)
    assert row["diff_mean"] == pytest.approx(np.mean(x - y)) and "shared seeds [0, 1, 2]" in row["paired_note"]
    assert row["n_seeds"] == 4


def test_defect3_direction_decides_best_and_order():
    rng = np.random.default_rng(1)
    good = make_run("good", rng.uniform(0.0, 0.2, 50), metric="mse", n_way=1, k_shot=5)
    bad = make_run("bad", rng.uniform(1.0, 2.0, 50), metric="mse", n_way=1, k_shot=5)
    b = board([bad, good], metric=MSE)
    assert b.wide["experiment"].tolist() == ["good", "bad"]
    best = b.cells.set_index("experiment")
    assert best.loc["good", "best"] and not best.loc["bad", "best"] and best.loc["bad", "significant"]
    assert best.loc["bad", "diff_mean"] > 0 and best.loc["good", "rank"] == 1 and best.loc["bad", "rank"] == 2
    assert b.higher_is_better is False


@pytest.mark.parametrize("text,tag,expected", [
    ("batch statistics of the batch the learner sees: the support set at every update, the query set together at "
     "prediction; no running averages, in training and at test (transductive)", False, True),
    ("batch statistics in the meta stage; running statistics at test", True, False),
    ("running statistics (frozen) during adaptation and test", True, False),
    ("batch statistics of each minibatch", False, True),
    (None, True, True), (None, False, False)])
def test_transductive_mode_reads_the_recorded_batchnorm_text_before_the_tag(text, tag, expected):
    from mtbench.frame import transductive_mode

    assert transductive_mode(make_run("a", [1.0], transductive=tag, batchnorm=text)) is expected


def test_defect7_rows_of_one_algorithm_show_the_settings_that_differ():
    runs = [make_run("meta-sgd", [0.9, 0.8], params={"meta_iterations": 1500, "lr": 0.1}),
            make_run("meta-sgd", [0.7, 0.8], params={"meta_iterations": 3000, "lr": 0.1}),
            make_run("reptile", [0.5, 0.6], params={"steps": 2}, budget="quick"),
            make_run("reptile", [0.5, 0.7], params={"steps": 9}, budget="standard"),
            make_run("protonet", [0.5, 0.5], params={"lr": 0.1})]
    names = set(board(runs).wide["experiment"])
    assert names == {"meta-sgd (meta_iterations=1500)", "meta-sgd (meta_iterations=3000)",
                     "reptile (budget=quick, steps=2)", "reptile (budget=standard, steps=9)", "protonet"}


def test_defect9_transductive_flag_backbone_and_cost_on_every_row():
    runs = [make_run("maml", [0.9, 0.8], params={"backbone": "conv4-maml", "bn": "transductive"}, transductive=True,
                     batchnorm="batch statistics, queries normalised together (transductive, as in the paper)",
                     fit_info={"peak_memory_mb": 700.0}),
            make_run("maml-s", [0.9, 0.8], params={"backbone": "conv4-maml", "bn": "support"}, transductive=True,
                     batchnorm="batch statistics of the support set (non-transductive)"),
            make_run("protonet", [0.9, 0.8], params={"backbone": "conv4"},
                     batchnorm="running statistics at test (non-transductive)")]
    b = board(runs)
    cells = b.cells.set_index("experiment")
    assert cells["transductive"].to_dict() == {"maml": True, "maml-s": False, "protonet": False}
    assert cells.loc["maml", "backbone"] == "conv4-maml" and cells.loc["protonet", "backbone"] == "conv4"
    assert cells.loc["maml", "peak_mb"] == 700.0 and pd.isna(cells.loc["protonet", "peak_mb"])
    assert cells.loc["maml", "train_s"] == 1.5 and cells.loc["maml", "adapt_ms"] == 2.0
    wide = b.wide.set_index("experiment")
    assert wide.loc["maml", "transductive"] == "yes" and wide.loc["protonet", "transductive"] == "no"
    assert wide.loc["maml", "peak MB"] == "700" and wide.loc["protonet", "peak MB"] == "–"


def test_the_allocator_column_appears_only_when_rows_ran_under_different_ones():
    """Training times under the system allocator and with freed memory kept (mtbench/allocator.py) differ for
    the same numbers: a table that mixes them says which row is which, and one that does not stays as it was."""
    def run(algorithm: str, malloc: str | None) -> dict:
        payload = make_run(algorithm, [0.9, 0.8])
        if malloc is not None:
            payload["environment"]["worker"] = {"torch_threads": 2, "malloc": malloc}
        return payload
    keep = "keep freed memory (mmap threshold 32 MB, trim threshold 1024 MB)"
    mixed = board([run("a", keep), run("b", None), run("c", "system")])
    assert mixed.wide.set_index("experiment")["allocator"].to_dict() == {"a": "keep", "b": "system", "c": "system"}
    assert any(note.startswith("allocator: keep = trained with freed memory kept") for note in mixed.notes)
    from mtbench.renderers import html_report, markdown, terminal
    assert "| device | allocator |" in markdown.render(mixed) and "(keep allocator)" in terminal.render(mixed)
    assert ">allocator</th>" in html_report.render(mixed)
    same = board([run("a", keep), run("b", keep)])
    assert "allocator" not in same.wide and not any(note.startswith("allocator") for note in same.notes)
    seeds = board([run("a", keep), {**run("a", None), "spec": {**run("a", None)["spec"], "seed": 1}}, run("b", keep)])
    assert seeds.wide.set_index("experiment").loc["a", "allocator"] == "keep, system"


def test_defect10_paired_tie_and_paired_difference():
    """Overlapping intervals can still differ (paired), and a ranked gap can be a tie."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 1.0, 400)
    shift = base + 0.01 + rng.normal(0, 0.003, 400)  # always a little better: overlapping CIs, real difference
    error = rng.normal(0, 0.05, 400)
    noise = shift + error - error.mean() - 0.0005  # a little worse on average, but noisy: a tie
    b = board([make_run("base", base), make_run("shift", shift), make_run("noise", noise)])
    cells = b.cells.set_index("experiment")
    assert cells.loc["shift", "best"]
    assert cells.loc["base", "significant"] and cells.loc["base", "rank"] == 3  # 1, 1, 3
    assert abs(cells.loc["shift", "mean"] - cells.loc["base", "mean"]) < cells.loc["base", "ci95"]
    expected = sps.wilcoxon(np.round(noise - shift, 6)).pvalue  # differences rounded (float32 scores)
    assert cells.loc["noise", "p_wilcoxon"] == pytest.approx(expected)
    assert cells.loc["noise", "p_ttest"] == pytest.approx(sps.ttest_rel(noise, shift).pvalue)
    assert cells.loc["noise", "diff_mean"] == pytest.approx(np.mean(noise - shift))
    assert cells.loc["noise", "p_holm"] == pytest.approx(min(1, expected))  # largest p: Holm factor 1
    assert not cells.loc["noise", "significant"] and cells.loc["noise", "rank"] == 1
    wide = b.wide.set_index("experiment")
    assert wide.loc["shift", "5-way 1-shot"].endswith("*") and wide.loc["noise", "5-way 1-shot"].endswith("=")


def test_pairing_is_refused_when_episodes_differ_and_welch_decides():
    a, b, c = [1.0, 0.9, 0.8, 0.95], [0.1, 0.2, 0.3, 0.15], [0.9, 1.0, 0.85, 0.8]
    board_ = board([make_run("a", a, digest="x"), make_run("b", b, digest="y"), make_run("c", c, digest="z")])
    cells = board_.cells.set_index("experiment")
    assert "episode digests differ" in cells.loc["b", "paired_note"] and "Welch" in cells.loc["b", "paired_note"]
    assert math.isnan(cells.loc["b", "p_wilcoxon"]) and not cells.loc["b", "paired"]
    assert cells.loc["b", "p_ttest"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
    assert cells.loc["b", "significant"] and cells.loc["b", "rank"] == 3
    assert not cells.loc["c", "significant"] and cells.loc["c", "rank"] == 1
    marks = board_.wide.set_index("experiment")["5-way 1-shot"]
    assert marks["a"].endswith("*") and marks["b"].endswith(") ?") and marks["c"].endswith(" =?")


def test_paper_figures_and_friedman_over_cells():
    rng = np.random.default_rng(4)
    runs = []
    for k in (1, 5, 10):
        base = rng.uniform(0.5, 0.9, 100)
        for i, alg in enumerate(("a", "b", "c")):
            runs.append(make_run(alg, base + 0.05 * (2 - i), k_shot=k))
    suite = Suite("s", (), (DatasetEntry("d"),), ((5, 1),), references=(Reference("a", "d", 5, 1, 98.7, "paper"),))
    b = board(runs, suite=suite)
    assert b.friedman["average_ranks"] == {"a": 1.0, "b": 2.0, "c": 3.0} and b.friedman["n_cells"] == 3
    assert b.friedman["p"] == pytest.approx(sps.friedmanchisquare([1, 1, 1], [2, 2, 2], [3, 3, 3]).pvalue)
    assert b.wide.set_index("experiment").loc["a", "5-way 1-shot paper"] == "98.7"
    assert b.cells.set_index(["experiment", "k_shot"]).loc[("a", 1), "paper_source"] == "paper"


def test_curves_and_stale_and_provenance():
    info = {"history": {"validation": [{"step": 10, "val_accuracy": 0.5}, {"step": 20, "val_accuracy": 0.95}]}}
    b = board([make_run("a", [0.5, 0.6], fit_info=info, version="old")], code_versions={"a": "new"})
    assert b.curves[["step", "value"]].values.tolist() == [[10, 0.5], [20, 0.95]]
    assert b.cells.iloc[0]["steps_to_val90"] == 20 and b.cells.iloc[0]["stale"]
    assert b.provenance["result_files"] == 1 and b.provenance["git_commits"] == ["abc"]


def test_a_later_run_of_the_same_seed_supersedes_the_stale_one():
    old = make_run("a", [0.0, 0.0], version="old")
    new = make_run("a", [1.0, 1.0], version="new")
    b = board([new, old], code_versions={"a": "new"})
    assert len(b.cells) == 1 and b.cells.iloc[0]["mean"] == 1.0 and not b.cells.iloc[0]["stale"]
    assert any("superseded" in n for n in b.notes)


def test_ci_of_a_single_episode_is_undefined():
    assert math.isnan(board([make_run("a", [1.0])]).cells.iloc[0]["ci95"])


def test_suite_dataset_entries_take_a_label_and_derive_a_distinct_one():
    from mtbench.suites import parse_suite

    suite = parse_suite({"name": "s", "algorithms": ["protonet"], "protocols": [{"ways": 5, "shots": 1}],
                         "datasets": [{"name": "digits"}, {"name": "digits", "label": "digits-small",
                                                           "params": {"size": 8}},
                                      {"name": "digits", "train": {"name": "omniglot"}}]}, "test")
    assert [d.display_label for d in suite.datasets] == ["digits", "digits-small", "omniglot→digits"]


def test_episodes_frame_is_tidy_with_the_identity_columns():
    from mtbench.frame import episodes_frame, runs_table

    tidy = episodes_frame(runs_table([make_run("a", [0.5, 1.0]), make_run("b", [0.25], dataset="e")]))
    assert tidy[["algorithm", "dataset_label", "episode", "value"]].values.tolist() == [
        ["a", "d", 0, 0.5], ["a", "d", 1, 1.0], ["b", "e", 0, 0.25]]
    assert {"experiment_key", "digest", "seed", "transductive"} <= set(tidy.columns)

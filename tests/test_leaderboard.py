"""Leaderboard numbers on a hand-computed example, and the renderers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from mtbench import leaderboard as lb
from mtbench.results import runs_to_frame
from mtbench.suites import Reference


def run(algorithm: str, values: list[float], n_way: int = 5, k_shot: int = 1, seed: int = 0,
        params: dict | None = None) -> dict:
    spec = {"suite": "s", "dataset": "d", "split": "test", "algorithm": algorithm, "kind": "meta", "n_way": n_way,
            "k_shot": k_shot, "n_query": 15, "seed": seed, "budget": "quick", "device": "cpu", "params": params or {}}
    rows = [[i, "accuracy", v, 1.0] for i, v in enumerate(values)]
    return {"run_id": f"{algorithm}-{n_way}-{k_shot}-{seed}", "spec": spec, "columns": ["episode", "metric", "value", "adapt_ms"],
            "rows": rows, "timings": {"fit_s": 2.0, "train_steps": 10}, "algorithm": {"version": "x"}}


def test_mean_and_ci_match_a_hand_computation():
    values = [0.6, 0.8, 1.0, 0.8]  # mean 0.8; sample std = sqrt(0.08 / 3) = 0.163299...
    table = lb.aggregate(runs_to_frame([run("a", values)]))
    row = table.iloc[0]
    assert row["mean"] == pytest.approx(0.8)
    assert row["ci95"] == pytest.approx(1.96 * math.sqrt(0.08 / 3) / 2)  # 0.160033
    assert row["n"] == 4 and row["seeds"] == 1


def test_seeds_pool_their_episodes():
    table = lb.aggregate(runs_to_frame([run("a", [1.0, 0.0]), run("a", [1.0, 1.0], seed=1)]))
    assert len(table) == 1
    assert table.iloc[0]["n"] == 4 and table.iloc[0]["seeds"] == 2
    assert table.iloc[0]["mean"] == pytest.approx(0.75)


def test_different_hyperparameters_never_share_a_row():
    frame = runs_to_frame([run("a", [1.0, 1.0], params={"steps": 1}), run("a", [0.0, 0.0], params={"steps": 9})])
    table = lb.aggregate(frame)
    assert sorted(table["mean"]) == [0.0, 1.0] and list(table["n"]) == [2, 2]


def test_pivot_and_markdown():
    frame = runs_to_frame([run("a", [0.6, 0.8, 1.0, 0.8]), run("b", [0.5, 0.5]), run("a", [1.0, 1.0], k_shot=5)])
    wide = lb.pivot(lb.aggregate(frame), references=[Reference("a", "d", 5, 1, 98.7, "paper", ci95=0.4)])
    a = wide[wide["algorithm"] == "a"].iloc[0]
    assert a["5-way 1-shot"] == "80.0 ± 16.0 (4)"
    assert a["5-way 1-shot paper"] == "98.7 ± 0.4"
    assert a["5-way 5-shot"] == "100.0 ± 0.0 (2)"
    b = wide[wide["algorithm"] == "b"].iloc[0]
    assert b["5-way 5-shot"] == "–" and b["5-way 1-shot paper"] == "–"
    assert list(wide["algorithm"]) == ["a", "b"]  # best first
    text = lb.render_markdown(wide, "title")
    assert "| d | a | meta | quick | 80.0 ± 16.0 (4) |" in text
    assert text.startswith("# title")


def test_csv_html_latex_render_the_same_numbers():
    frame = runs_to_frame([run("a", [0.6, 0.8, 1.0, 0.8])])
    table = lb.aggregate(frame)
    csv = lb.render_csv(table)
    parsed = pd.read_csv(__import__("io").StringIO(csv))
    assert parsed.loc[0, "mean"] == pytest.approx(0.8) and parsed.loc[0, "n"] == 4
    wide = lb.pivot(table)
    assert "80.0 ± 16.0 (4)" in lb.render_html(wide)
    assert r"80.0 $\pm$ 16.0 (4)" in lb.render_latex(wide)


def test_ci_of_a_single_episode_is_undefined():
    assert math.isnan(lb.ci95([1.0]))

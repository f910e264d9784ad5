"""The leaderboard command end to end: real (tiny) runs, suite metric defaults, empty results, seeds."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from mtbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

TWO_ENTRIES = """
name = "two-entries"
algorithms = ["protonet"]
metrics = ["accuracy"]
episodes = 12
queries = 3
seeds = [0, 1]

[[datasets]]
name = "synthetic"
params = { classes = [24, 8, 12], per_class = 8, image_size = 6, noise = 0.5 }

[[datasets]]
name = "synthetic"
label = "noisy"
params = { classes = [24, 8, 12], per_class = 8, image_size = 6, noise = 3.0 }

[[protocols]]
ways = 3
shots = 1

[params.protonet]
backbone = "mlp"
episodes = 4
train_way = 3
validate_every = 0
"""


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_defect1_and_2_two_entries_of_one_plugin_and_two_seeds_end_to_end(tmp_path):
    suite = tmp_path / "two.toml"
    suite.write_text(TWO_ENTRIES)
    results = tmp_path / "results"
    ran = invoke("run", "--suite", str(suite), "--results-dir", str(results), "--quiet")
    assert ran.exit_code == 0, ran.output
    csv = invoke("leaderboard", "--results-dir", str(results), "--suite", str(suite), "--format", "csv")
    assert csv.exit_code == 0, csv.output
    cells = pd.read_csv(io.StringIO(csv.stdout))
    assert len(cells) == 2  # one row per dataset entry, not one pooled row
    assert sorted(cells["dataset_label"]) == ["noisy", "synthetic"]  # the suite's label, recorded with the results
    assert set(cells["n_episodes"]) == {12} and set(cells["n_seeds"]) == {2} and set(cells["ci_kind"]) == {"seeds"}


def test_defect4_the_suite_metric_is_the_default_and_no_results_exit_1(tmp_path):
    regression = ROOT / "leaderboards" / "regression" / "results"
    board = invoke("leaderboard", "--results-dir", str(regression), "--suite", "regression", "--format", "csv")
    assert board.exit_code == 0, board.output
    cells = pd.read_csv(io.StringIO(board.stdout))
    assert len(cells) >= 18  # 9 experiments x 2 protocols (at least), in MSE (the suite's metric)
    for _, rows in cells.groupby("protocol"):  # the best is the lowest MSE, not the highest
        assert rows[rows["best"]]["mean"].item() == rows["mean"].min()
        assert rows.sort_values("mean")["rank"].is_monotonic_increasing
    for args, message in [((str(tmp_path / "missing"),), "does not exist"),
                          ((str(tmp_path),), "no results in"),
                          ((str(regression), "--metric", "accuracy"), "no 'accuracy' results")]:
        result = invoke("leaderboard", "--results-dir", *args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0] and result.stdout == ""

"""`mtbench compare`: two experiments of the committed results, and a before/after gate on a planted regression."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mtbench.cli import app
from mtbench.compare import compare_dirs, compare_experiments
from mtbench.errors import MtbenchError
from mtbench.leaderboard import experiment_cells
from mtbench.metrics import Metric
from mtbench.results import ResultStore

ROOT = Path(__file__).resolve().parents[1]
FEWSHOT = ROOT / "tests" / "data" / "results_snapshot" / "fewshot"  # frozen: new leaderboard rows change nothing here
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_committed_maml_vs_anil_is_a_tie_and_meta_sgd_vs_maml_is_not():
    """Issue 7: maml - anil = +0.05 ± 0.39 points (p = 0.79), meta-sgd - maml = +0.70 ± 0.25."""
    tie = invoke("compare", "-r", str(FEWSHOT), "maml", "anil (meta_iterations=3000)", "--suite", "fewshot",
                 "--format", "json")
    assert tie.exit_code == 0, tie.output
    row = json.loads(tie.stdout)["rows"][0]
    assert row["protocol"] == "5w1s" and row["paired"]
    assert row["diff_mean"] * 100 == pytest.approx(0.05, abs=0.005)
    assert row["diff_ci95"] * 100 == pytest.approx(0.39, abs=0.005)
    assert row["p_ttest"] == pytest.approx(0.79, abs=0.005) and not row["significant"]
    real = invoke("compare", "-r", str(FEWSHOT), "meta-sgd (meta_iterations=3000)", "maml", "--suite", "fewshot",
                  "--format", "json")
    row = json.loads(real.stdout)["rows"][0]
    assert row["diff_mean"] * 100 == pytest.approx(0.70, abs=0.005)
    assert row["diff_ci95"] * 100 == pytest.approx(0.25, abs=0.005)
    assert row["p_ttest"] < 1e-7 and row["significant"]


def test_an_algorithm_with_several_settings_is_compared_experiment_by_experiment():
    out = invoke("compare", "-r", str(FEWSHOT), "maml", "anil", "--suite", "fewshot")
    assert out.exit_code == 0, out.output
    assert "anil (meta_iterations=3000)" in out.stdout and "anil (meta_iterations=1500)" in out.stdout
    assert "compared one by one" in out.stdout


def _copy(src: Path, dst: Path, pattern: str) -> None:
    (dst / "fewshot").mkdir(parents=True)
    for path in (src / "fewshot").glob(pattern):
        shutil.copy(path, dst / "fewshot" / path.name)


def test_fail_if_worse_gates_a_planted_regression(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    _copy(FEWSHOT, before, "protonet__*")
    _copy(FEWSHOT, after, "protonet__*")
    same = invoke("compare", str(before), str(after), "--fail-if-worse", "accuracy:0.5")
    assert same.exit_code == 0, same.output
    path = next((after / "fewshot").glob("protonet__omniglot__5w1s*.json"))
    run = json.loads(path.read_text())
    lowered = 0
    for row in run["rows"]:  # one more wrong query (of 75) in every second episode: -0.67 points on average
        if row[0] % 2 == 0 and row[2] >= 1 / 75:
            row[2] -= 1 / 75
            lowered += 1
    assert lowered > 250
    path.write_text(json.dumps(run))
    worse = invoke("compare", str(before), str(after), "--fail-if-worse", "accuracy:0.5")
    assert worse.exit_code == 1
    assert "worse: omniglot 5w1s protonet" in worse.stderr
    assert invoke("compare", str(before), str(after), "--fail-if-worse", "accuracy:1.0").exit_code == 0
    report = json.loads(invoke("compare", str(before), str(after), "--format", "json").stdout)
    rows = {r["protocol"]: r for r in report["rows"]}
    assert rows["5w1s"]["significant"] and rows["5w1s"]["worse"] and rows["5w1s"]["paired"]
    assert not rows["5w5s"]["significant"] and rows["5w5s"]["ratio"] == 1.0


def test_before_after_falls_back_to_welch_when_episodes_differ():
    rng = np.random.default_rng(0)
    metric = Metric("accuracy", fn=None, scale=100.0)

    def run(values, digest):
        spec = {"suite": "s", "algorithm": "a", "params": {}, "dataset": "d", "dataset_params": {}, "split": "test",
                "n_way": 5, "k_shot": 1, "n_query": 15, "seed": 0, "budget": "quick"}
        return {"run_id": digest, "spec": spec, "episodes": {"digest": digest}, "columns": ["episode", "metric", "value"],
                "rows": [[i, "accuracy", v] for i, v in enumerate(values)]}
    before = experiment_cells([run(rng.uniform(0.5, 1, 200), "x")], metric=metric)
    after = experiment_cells([run(rng.uniform(0.3, 0.8, 200), "y")], metric=metric)
    row = compare_dirs(before, after, metric).rows.iloc[0]
    assert not row["paired"] and "digests differ" in row["note"] and row["significant"] and row["worse"]


@pytest.mark.parametrize("args,expected", [
    (["compare", "/no/such/dir", "/tmp"], "does not exist"),
    (["compare", "-r", str(FEWSHOT), "maml", "no-such-alg"], "no experiment or algorithm 'no-such-alg'"),
    (["compare", "-r", str(FEWSHOT), "maml", "anil", "--fail-if-worse", "accuracy"], "METRIC:THRESHOLD"),
    (["compare", "-r", str(FEWSHOT), "maml", "anil", "--format", "xml"], "unknown format 'xml'"),
    (["compare", "-r", str(FEWSHOT), "maml", "anil", "--metric", "acuracy"], "unknown metric 'acuracy'"),
])
def test_bad_input_is_one_line_and_exit_2(args, expected):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0]


def test_compare_experiments_needs_a_shared_cell():
    metric = Metric("accuracy", fn=None, scale=100.0)
    cells = experiment_cells(ResultStore(FEWSHOT).load("fewshot"), metric=metric)
    frame = cells.frame
    cells.frame = frame[~((frame["algorithm"] == "protonet") & (frame["protocol"] == "5w1s"))]  # maml: 5w1s only
    with pytest.raises(MtbenchError, match="share no cell"):
        compare_experiments(cells, "maml", "protonet", metric)


def test_before_after_matches_a_run_whose_code_gained_a_parameter_and_says_so():
    """A change that adds a parameter (e.g. a memory budget) must not hide the before/after comparison; a run
    whose shared parameters differ is not matched."""
    rng = np.random.default_rng(1)
    metric = Metric("accuracy", fn=None, scale=100.0)

    def run(params, values):
        spec = {"suite": "s", "algorithm": "a", "params": params, "dataset": "d", "dataset_params": {}, "split": "test",
                "n_way": 5, "k_shot": 1, "n_query": 15, "seed": 0, "budget": "quick"}
        return {"run_id": json.dumps(params), "spec": spec, "episodes": {"digest": "same"},
                "columns": ["episode", "metric", "value"], "rows": [[i, "accuracy", v] for i, v in enumerate(values)]}
    values = rng.uniform(0.5, 1, 200)
    before = experiment_cells([run({"lr": 0.1}, values), run({"lr": 0.2}, values - 0.1)], metric=metric)
    after = experiment_cells([run({"lr": 0.1, "chunk_size": None}, values + 0.01)], metric=metric)
    comparison = compare_dirs(before, after, metric)
    (row,) = comparison.rows.to_dict("records")
    assert row["paired"] and row["diff_mean"] == pytest.approx(0.01) and row["mean_a"] == pytest.approx(values.mean())
    assert any("recorded on one side only: chunk_size" in n for n in comparison.notes)
    changed = experiment_cells([run({"lr": 0.3, "chunk_size": None}, values)], metric=metric)
    with pytest.raises(MtbenchError, match="share no experiment"):
        compare_dirs(before, changed, metric)

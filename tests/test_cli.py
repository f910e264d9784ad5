"""The command line: a run end to end, and every bad input as one clear line with exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtbench.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_smoke_run_then_leaderboard(tmp_path):
    results = tmp_path / "results"
    ran = invoke("run", "--suite", "smoke", "--results-dir", str(results), "--episodes", "10")
    assert ran.exit_code == 0, ran.output
    assert "smoke: 6 cells run, 0 already done" in ran.stderr
    assert "protonet" in ran.stdout and "5-way 1-shot" in ran.stdout
    again = invoke("run", "--suite", "smoke", "--results-dir", str(results), "--episodes", "10", "--quiet")
    assert "0 cells run, 6 already done" in again.stderr
    md = tmp_path / "board.md"
    board = invoke("leaderboard", "--results-dir", str(results), "--suite", "smoke", "--format", "markdown",
                   "--output", str(md))
    assert board.exit_code == 0
    text = md.read_text()
    assert "| synthetic | protonet | meta |" in text and "(10)" in text
    csv = invoke("leaderboard", "--results-dir", str(results), "--format", "csv")
    assert csv.stdout.splitlines()[0].startswith("experiment,algorithm")
    assert len(csv.stdout.strip().splitlines()) == 1 + 6  # 6 cells of the first metric (accuracy)


def test_set_overrides_a_hyperparameter(tmp_path):
    ran = invoke("run", "--suite", "smoke", "-a", "protonet", "--set", "protonet.episodes=7", "--episodes", "3",
                 "--results-dir", str(tmp_path), "--quiet")
    assert ran.exit_code == 0, ran.output
    run = json.loads(next((tmp_path / "smoke").glob("protonet*5w1s*.json")).read_text())
    assert run["spec"]["params"]["episodes"] == 7 and run["fit_info"]["history"]["steps"] == 7


@pytest.mark.parametrize("args,expected", [
    (["run", "--suite", "fewshoot"], "unknown suite 'fewshoot'; did you mean fewshot?"),
    (["run", "--suite", "smoke", "-a", "protonett"], "unknown algorithm 'protonett'; did you mean protonet"),
    (["run", "--suite", "smoke", "--budget", "huge"], "unknown budget 'huge'"),
    (["run", "--suite", "smoke", "--set", "protonet.epsiodes=3"], "has no parameter 'epsiodes'; did you mean episodes"),
    (["run", "--suite", "smoke", "--set", "protonet"], "must look like ALGORITHM.PARAM=VALUE"),
    (["leaderboard", "--format", "pdf"], "unknown format 'pdf'"),
    (["run", "--suite", "smoke", "--protocol", "20w1s"], "--protocol 20w1s is not in suite 'smoke' (5w1s, 5w5s)"),
    (["run", "--suite", "smoke", "--protocol", "five"], "--protocol 'five' must look like 5w1s"),
])
def test_bad_names(tmp_path, args, expected):
    line = one_line_error(invoke(*args, "--results-dir", str(tmp_path)) if args[0] == "run" else invoke(*args))
    assert expected in line


SUITE = """
name = "custom"
algorithms = ["protonet"]
metrics = ["accuracy"]
episodes = 5
queries = {queries}
[[datasets]]
name = "{dataset}"
params = {{ classes = [20, 5, 8], per_class = 10, image_size = 4 }}
[[protocols]]
ways = {ways}
shots = {shots}
[params.protonet]
backbone = "mlp"
episodes = 3
"""


def write_suite(tmp_path: Path, dataset="synthetic", ways=5, shots=1, queries=5, metric=None) -> Path:
    text = SUITE.format(dataset=dataset, ways=ways, shots=shots, queries=queries)
    if metric:
        text = text.replace('metrics = ["accuracy"]', f'metrics = ["{metric}"]')
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return path


def run_suite_file(tmp_path: Path, path: Path):
    return invoke("run", "--suite", str(path), "--results-dir", str(tmp_path / "results"), "--quiet")


def test_custom_suite_file_runs(tmp_path):
    result = run_suite_file(tmp_path, write_suite(tmp_path))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "results" / "custom").glob("*.json"))) == 1


def test_unknown_dataset(tmp_path):
    assert "unknown dataset 'synthetik'; did you mean synthetic?" in one_line_error(
        run_suite_file(tmp_path, write_suite(tmp_path, dataset="synthetik")))


def test_unknown_metric(tmp_path):
    assert "unknown metric 'acuracy'; did you mean accuracy?" in one_line_error(
        run_suite_file(tmp_path, write_suite(tmp_path, metric="acuracy")))


def test_metric_for_the_wrong_task(tmp_path):
    assert "metric 'mse' is for regression" in one_line_error(
        run_suite_file(tmp_path, write_suite(tmp_path, metric="mse")))


def test_ways_larger_than_the_classes(tmp_path):
    line = one_line_error(run_suite_file(tmp_path, write_suite(tmp_path, ways=9)))
    assert "9-way episodes need 9 classes but synthetic split 'test' has 8" in line


def test_shots_plus_queries_larger_than_the_examples(tmp_path):
    line = one_line_error(run_suite_file(tmp_path, write_suite(tmp_path, shots=5, queries=6)))
    assert "5-shot + 6-query needs 11 examples per class" in line and "has 10" in line


@pytest.mark.parametrize("replace,expected", [
    (("episodes = 5", 'episodes = "many"'), "key 'episodes' must be an integer, got 'many' (str)"),
    (("ways = 5", "ways = 5.5"), "key 'protocols[0].ways' must be an integer, got 5.5 (float)"),
    (('algorithms = ["protonet"]', 'algorithms = "protonet"'), "key 'algorithms' must be a list"),
    (("episodes = 5", "episodes = 5\nepisdoes = 3"), "unknown key 'episdoes'"),
    (("[[protocols]]", "[[protocols"), "is not valid TOML"),
])
def test_malformed_suite_file(tmp_path, replace, expected):
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace(*replace))
    assert expected in one_line_error(run_suite_file(tmp_path, path))


def test_missing_data_says_where_it_looked(tmp_path):
    result = invoke("run", "--suite", "fewshot", "--data-dir", str(tmp_path / "nowhere"),
                    "--results-dir", str(tmp_path / "r"))
    line = one_line_error(result)
    assert "Omniglot not found" in line and str(tmp_path / "nowhere") in line


def test_corrupt_archive_from_the_cli(tiny_omniglot, tmp_path):
    archive = tiny_omniglot / "omniglot" / "raw" / "images_background.zip"
    archive.write_bytes(b"PK\x03\x04 this is not a zip")
    result = invoke("run", "--suite", "fewshot", "--data-dir", str(tiny_omniglot), "--results-dir", str(tmp_path / "r"))
    assert "corrupt archive" in one_line_error(result)


def test_bad_input_never_loses_results(tmp_path):
    results = tmp_path / "results"
    invoke("run", "--suite", "smoke", "-a", "protonet", "--episodes", "3", "--results-dir", str(results), "--quiet")
    before = {p: p.read_bytes() for p in results.rglob("*.json")}
    assert before
    one_line_error(invoke("run", "--suite", "smoke", "-a", "protonet", "-a", "nope", "--results-dir", str(results)))
    one_line_error(run_suite_file(tmp_path, write_suite(tmp_path, ways=50)))
    assert {p: p.read_bytes() for p in results.rglob("*.json")} == before


def test_device_cuda_falls_back_to_cpu_with_a_message(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the fallback applies only without it")
    with pytest.warns(RuntimeWarning, match="sees no GPU; running on the CPU instead"):
        result = invoke("run", "--suite", "smoke", "-a", "protonet", "--episodes", "2", "--device", "cuda",
                        "--results-dir", str(tmp_path), "--quiet")
    assert result.exit_code == 0
    run = json.loads(next((tmp_path / "smoke").glob("*.json")).read_text())
    assert run["spec"]["device"] == "cpu"

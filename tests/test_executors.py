"""Execution as a seam (issue 10 A): executors are plugins, worker processes give the local results, a
failing or killed cell loses only itself, two runs over one folder never train a cell twice, --retrain."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtbench import hookimpl
from mtbench.executors import Executor, split_threads
from test_cli import invoke

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--suite", "smoke", "--episodes", "3", "--quiet", "--set", "protonet.episodes=5")
PROBE = ("-a", "linear-probe", "--set", "linear-probe.pretrain_steps=5")


def rows_by_cell(results: Path) -> dict[str, list]:
    """Episode rows (without timings) of every stored cell, keyed by the run id less its hash (code may differ)."""
    out = {}
    for path in (results / "smoke").glob("*.json"):
        run = json.loads(path.read_text())
        out[path.name.rsplit("__", 1)[0]] = [row[:3] for row in run["rows"]]
    return out


def test_processes_give_results_identical_to_local(tmp_path):
    local = invoke("run", *TINY, "-a", "protonet", *PROBE, "--results-dir", str(tmp_path / "local"))
    assert local.exit_code == 0, local.output
    jobs = invoke("run", *TINY, "-a", "protonet", *PROBE, "--executor", "processes", "--jobs", "2",
                  "--results-dir", str(tmp_path / "jobs"))
    assert jobs.exit_code == 0, jobs.output
    expected = rows_by_cell(tmp_path / "local")
    assert len(expected) == 4 and rows_by_cell(tmp_path / "jobs") == expected
    run = json.loads(next((tmp_path / "jobs" / "smoke").glob("*.json")).read_text())
    assert run["environment"]["executor"] == "processes" and run["environment"]["worker"]["torch_threads"] >= 1


def test_threads_are_split_between_workers():
    assert split_threads(8, 2) == 4 and split_threads(2, 2) == 1 and split_threads(1, 4) == 1


PLUGIN_HEAD = '''
import os
import time
import torch
from mtbench import Algorithm, hookimpl


class Predictor:
    def __init__(self, n_way):
        self.n_way = n_way

    def predict_proba(self, x):
        return torch.full((len(x), self.n_way), 1.0 / self.n_way)
'''
PLUGIN = PLUGIN_HEAD + '''
LOG = {log!r}


class Scripted(Algorithm):
    """Fits in {sleep} s, logging each fit; {before}"""
    name = {name!r}
    kind = "baseline"

    def fit(self, data, ctx):
        {before}
        with open(LOG, "a") as fh:
            fh.write(f"{{data.target.n_way}}w{{data.target.k_shot}}s {{os.getpid()}}\\n")
        time.sleep({sleep})
        return self

    def adapt(self, support, ctx):
        return Predictor(support.n_way)


@hookimpl
def register_algorithms(register):
    register(Scripted)
'''


def faulty_plugin(tmp_path: Path, monkeypatch, action: str) -> tuple[Path, str]:
    marker = tmp_path / "marker"
    marker.write_text("on")
    module = f"faulty_{abs(hash(action)) % 10_000}"
    before = f"if data.target.k_shot == 5 and os.path.exists({str(marker)!r}): {action}"
    (tmp_path / f"{module}.py").write_text(PLUGIN.format(log=f"{marker}.fits", name="faulty", before=before, sleep=0))
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker, module


def test_a_failing_cell_is_one_line_and_the_others_go_on(tmp_path, monkeypatch):
    marker, module = faulty_plugin(tmp_path, monkeypatch, "raise RuntimeError('boom in fit')")
    results = tmp_path / "results"
    args = ("run", *TINY, "-a", "faulty", "-a", "protonet", "--plugin", module, "--results-dir", str(results))
    ran = invoke(*args)
    assert ran.exit_code == 1
    failed = [line for line in ran.stderr.splitlines() if line.startswith("failed faulty__synthetic__5w5s")]
    assert len(failed) == 1 and "RuntimeError: boom in fit" in failed[0]
    assert "1 failed" in ran.stderr and "faulty__synthetic__5w5s5q" in ran.stderr.splitlines()[-1]
    assert len(rows_by_cell(results)) == 3  # the other cells are stored
    trace = next((results / "smoke").glob("faulty__synthetic__5w5s*.failed.txt")).read_text()
    assert "Traceback" in trace and "boom in fit" in trace
    marker.unlink()
    again = invoke(*args)
    assert again.exit_code == 0 and "1 cells run, 3 already done" in again.stderr
    assert not list((results / "smoke").glob("*.failed.txt"))


def test_a_worker_killed_mid_cell_loses_only_that_cell(tmp_path, monkeypatch):
    marker, module = faulty_plugin(tmp_path, monkeypatch, "os.kill(os.getpid(), 9)")
    results = tmp_path / "results"
    args = ("run", *TINY, "-a", "faulty", "-a", "protonet", "--plugin", module, "--executor", "processes",
            "--jobs", "2", "--results-dir", str(results))
    ran = invoke(*args)
    assert ran.exit_code == 1, ran.output
    assert "died while running this cell (exit code -9)" in ran.stderr
    assert sorted(rows_by_cell(results)) == ["faulty__synthetic__5w1s5q__seed0", "protonet__synthetic__5w1s5q__seed0",
                                             "protonet__synthetic__5w5s5q__seed0"]
    marker.unlink()
    again = invoke(*args[:-6], "--results-dir", str(results))  # the next run (in process) redoes the lost cell
    assert again.exit_code == 0 and "1 cells run, 3 already done" in again.stderr, again.output


def mtbench_process(tmp_path: Path, results: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mtbench.cli", "run", "--suite", "smoke", "-a", "slow",
                             "--episodes", "2", "--quiet", "--plugin", "slow_plugin", "--results-dir", str(results),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_over_one_folder_never_train_a_cell_twice(tmp_path):
    log = tmp_path / "fits.log"
    (tmp_path / "slow_plugin.py").write_text(PLUGIN.format(log=str(log), name="slow", before="pass", sleep=1.5))
    results = tmp_path / "results"
    runs = [mtbench_process(tmp_path, results) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    fits = log.read_text().split()[::2]
    assert sorted(fits) == ["5w1s", "5w5s"], log.read_text()  # each cell trained once, by one of the runs
    assert len(list((results / "smoke").glob("*.json"))) == 2


def test_a_cell_lock_dies_with_its_holder(tmp_path):
    """kill -9 of a run holding a cell's lock frees it: the next run trains the cell instead of waiting."""
    log = tmp_path / "fits.log"
    (tmp_path / "slow_plugin.py").write_text(PLUGIN.format(log=str(log), name="slow", before="pass", sleep=1.5))
    results = tmp_path / "results"
    holder = mtbench_process(tmp_path, results, "--protocol", "5w1s")
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:  # it is inside the fit
        time.sleep(0.1)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    locks = list((results / ".locks" / "smoke").glob("*.lock"))
    assert len(locks) == 1 and not list((results / "smoke").glob("*.json"))
    start = time.monotonic()
    rerun = mtbench_process(tmp_path, results, "--protocol", "5w1s")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0 and "1 cells run" in err, err
    assert time.monotonic() - start < 60


def test_force_reuses_the_fit_and_retrain_fits_again(tmp_path):
    """Issue 7 defect 11: --force re-evaluates with the cached fit; --retrain ignores cached fits."""
    results = tmp_path / "results"
    args = ("run", *TINY, "-a", "protonet", "--protocol", "5w1s", "--results-dir", str(results))
    assert invoke(*args).exit_code == 0

    def reused() -> bool:
        return json.loads(next((results / "smoke").glob("*.json")).read_text())["timings"]["fit_reused"]
    assert not reused()
    assert invoke(*args, "--force").exit_code == 0 and reused()
    assert invoke(*args, "--retrain").exit_code == 0 and not reused()


class Echo(Executor):
    """Runs cells in process but records that it did: a third-party executor reached through the hook."""

    name = "echo"
    seen: list[str] = []

    def run(self, cells, environment, done, local):
        for cell in cells:
            Echo.seen.append(cell.run_id)
            done(cell, local.outcome(cell))


class EchoPlugin:
    @hookimpl
    def register_executors(self, register):
        register(Echo)


def test_register_executors_hook_reaches_the_cli(tmp_path, monkeypatch):
    module = tmp_path / "echo_executor.py"
    module.write_text("from test_executors import EchoPlugin\nregister_executors = EchoPlugin().register_executors\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    Echo.seen.clear()
    ran = invoke("run", *TINY, "-a", "protonet", "--plugin", "echo_executor", "--executor", "echo",
                 "--results-dir", str(tmp_path / "r"))
    assert ran.exit_code == 0, ran.output
    assert len(Echo.seen) == 2
    assert json.loads(next((tmp_path / "r" / "smoke").glob("*.json")).read_text())["environment"]["executor"] == "echo"


def test_unknown_executor_is_one_line(tmp_path):
    ran = invoke("run", *TINY, "--executor", "slurm", "--results-dir", str(tmp_path))
    assert ran.exit_code == 2 and "unknown executor 'slurm'" in ran.stderr


def test_execute_is_pure(tmp_path, plugins):
    """execute(cell, environment) returns the payload and writes nothing into the results folder."""
    from mtbench.execute import CellRunner, Environment, execute
    from mtbench.runner import plan_cells

    env = Environment("cpu", None, tmp_path / "cache", tmp_path / "data-cache")
    cell = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["protonet"], n_episodes=2,
                      overrides={"protonet": {"episodes": 3}})[0]
    cell = CellRunner(plugins, env).stamp(cell)
    payload = execute(cell, env)
    assert len(payload["rows"]) == 2 * 2 and payload["spec"]["code_versions"]["core"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the fit cache only


def test_a_full_disk_while_storing_fails_the_cell_not_the_run(tmp_path, monkeypatch):
    from mtbench.results import ResultStore

    original = ResultStore.save

    def full(self, suite, run_id, payload):
        if "5w5s" in run_id:
            raise OSError(28, "No space left on device")
        return original(self, suite, run_id, payload)
    monkeypatch.setattr(ResultStore, "save", full)
    ran = invoke("run", *TINY, "-a", "protonet", "--results-dir", str(tmp_path))
    assert ran.exit_code == 1 and "No space left on device" in ran.stderr
    assert len(rows_by_cell(tmp_path)) == 1


def test_retrain_fits_once_per_run_even_across_workers(tmp_path, plugins):
    """--retrain replaces fits stored before the run; a fit stored during the run (another worker, a variant
    sharing it) is used, so variants of one fit are not retrained once each."""
    from mtbench.execute import CellRunner, Environment
    from mtbench.runner import plan_cells

    cell = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["protonet"], n_episodes=2,
                      overrides={"protonet": {"episodes": 3}})[0]

    def fit_reused(env):
        runner = CellRunner(plugins, env)
        return runner.execute(runner.stamp(cell))["timings"]["fit_reused"]
    folders = (None, tmp_path / "cache", tmp_path / "data-cache")
    assert not fit_reused(Environment("cpu", *folders))
    assert fit_reused(Environment("cpu", *folders))
    retrain = Environment("cpu", *folders, retrain=True)
    assert not fit_reused(retrain)  # the old fit is replaced...
    assert fit_reused(retrain)  # ...and the new one serves the rest of the run

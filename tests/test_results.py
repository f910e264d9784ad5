"""The results store: atomic writes, resume, interrupted runs keep finished cells."""
from __future__ import annotations

import json

import pytest

from mtbench.results import ResultStore, write_json_atomic


def test_atomic_write_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"ok": 1})

    def broken_dump(obj, fh, **kwargs):
        fh.write('{"half":')
        raise OSError("disk full")
    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError):
        write_json_atomic(path, {"ok": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_store_ignores_unreadable_files(tmp_path):
    store = ResultStore(tmp_path)
    store.save("s", "good", {"spec": {}, "columns": [], "rows": []})
    (tmp_path / "s" / "bad.json").write_text("{not json")
    assert store.has("s", "good") and not store.has("s", "bad")
    assert [r["run_id"] for r in store.load("s")] == ["good"]


def test_a_run_resumes_and_force_reruns(tmp_path, plugins):
    from mtbench.runner import plan_cells
    from runner_helpers import make_runner

    suite = plugins.suites.get("smoke")
    cells = plan_cells(suite, plugins, algorithms=["protonet"], n_episodes=5)
    runner = make_runner(plugins, tmp_path)
    first = runner.run(cells)
    assert len(first.done) == 2 and not first.skipped
    stamps = {p: p.stat().st_mtime_ns for p in first.done}
    second = make_runner(plugins, tmp_path).run(cells)
    assert not second.done and len(second.skipped) == 2
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    third = make_runner(plugins, tmp_path).run(cells, force=True)
    assert len(third.done) == 2


def test_interrupted_run_keeps_finished_cells_and_resumes(tmp_path, plugins, monkeypatch):
    from mtbench.execute import CellRunner
    from mtbench.runner import plan_cells
    from runner_helpers import make_runner

    cells = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["protonet", "linear-probe"], n_episodes=5)
    original = CellRunner.execute
    calls = {"n": 0}

    def interrupt_second(self, cell):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, cell)
    monkeypatch.setattr(CellRunner, "execute", interrupt_second)
    summary = make_runner(plugins, tmp_path).run(cells)
    assert summary.interrupted and len(summary.done) == 1
    kept = summary.done[0]
    saved = kept.read_text()
    monkeypatch.setattr(CellRunner, "execute", original)
    resumed = make_runner(plugins, tmp_path).run(cells)
    assert len(resumed.skipped) == 1 and len(resumed.done) == len(cells) - 1
    assert kept.read_text() == saved


def test_result_file_records_protocol_and_environment(tmp_path, plugins):
    from mtbench.runner import plan_cells
    from runner_helpers import make_runner

    cells = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["protonet"], n_episodes=4)[:1]
    path = make_runner(plugins, tmp_path).run(cells).done[0]
    run = json.loads(path.read_text())
    assert run["api_version"] == 1
    spec = run["spec"]
    for key in ("n_way", "k_shot", "n_query", "n_episodes", "seed", "split", "budget", "sampler", "ci_formula",
                "params", "dataset_params"):
        assert key in spec
    assert run["columns"] == ["episode", "metric", "value", "adapt_ms"]
    assert len(run["rows"]) == 4 * 2  # 4 episodes x (accuracy, nll)
    assert run["environment"]["torch"] and run["environment"]["plugins"]["protonet"] == "0.1.0"
    assert run["timings"]["fit_s"] > 0 and run["timings"]["adapt_ms_mean"] > 0
    assert run["fit_info"]["history"]["steps"] == 60
    assert run["dataset_info"]["test_classes"] == 24
    assert run["algorithm"]["provider"].startswith("plugin 'protonet' (mtbench-zoo 0.1.0)")


def test_code_version_changes_with_any_module_of_the_algorithms_package(tmp_path, monkeypatch):
    """A change in a shared helper (not the algorithm's own module) must not reuse cached fits."""
    import importlib

    package = tmp_path / "versioned_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("STEP = 0.1\n")
    (package / "algo.py").write_text(
        "from mtbench import Algorithm\nfrom .helpers import STEP\n\n"
        "class Versioned(Algorithm):\n    name = 'versioned'\n    kind = 'baseline'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = importlib.import_module("versioned_plugin.algo").Versioned
    before = cls.code_version()
    assert cls.code_version() == before
    (package / "helpers.py").write_text("STEP = 0.2\n")
    assert cls.code_version() != before

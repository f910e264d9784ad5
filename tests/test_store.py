"""A results store that keeps data (issue 10 E): untrustworthy files are reported and moved aside, never
skipped silently or overwritten; dot-folders are not results; files follow the umask."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mtbench.results import QUARANTINE, ResultStore, write_json_atomic
from test_cli import invoke

GOOD = {"spec": {"suite": "s", "algorithm": "a"}, "columns": ["episode", "metric", "value", "adapt_ms"],
        "rows": [[0, "accuracy", 0.5, 1.0]]}


def quarantined(root: Path) -> list[Path]:
    return sorted((root / QUARANTINE).rglob("*.json")) if (root / QUARANTINE).exists() else []


@pytest.mark.parametrize("content,why", [
    ('{"api_version": 1, "run_id": "x", "spec": {', "is not valid JSON"),  # truncated by a power loss
    (json.dumps({"api_version": 2, "run_id": "x", **GOOD}), "has format version 2"),
    (json.dumps({"api_version": 1, "run_id": "x", **GOOD}).replace("0.5", "NaN"), "holds NaN"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"api_version": 1, "run_id": "x", "spec": {}}), "lacks its spec, run_id, columns or rows"),
    (json.dumps({"api_version": 1, "run_id": "x", **GOOD, "rows": [[0, "accuracy"]]}), "do not match its 4 columns"),
])
def test_untrustworthy_files_are_reported_and_moved_aside(tmp_path, content, why):
    reports: list[str] = []
    store = ResultStore(tmp_path, report=reports.append)
    store.save("s", "good", GOOD)
    bad = tmp_path / "s" / "bad.json"
    bad.write_text(content)
    assert [r["run_id"] for r in store.load("s")] == ["good"]
    assert len(reports) == 1 and why in reports[0] and str(bad) in reports[0]
    assert not bad.exists()
    assert [p.read_text() for p in quarantined(tmp_path)] == [content]


def test_a_truncated_result_is_not_overwritten_by_the_next_run(tmp_path, capsys):
    """It used to be skipped as "not done" and then replaced; now the next run redoes it beside the copy."""
    results = tmp_path / "results"
    args = ("run", "--suite", "smoke", "-a", "protonet", "--protocol", "5w1s", "--episodes", "2", "--quiet",
            "--set", "protonet.episodes=2", "--results-dir", str(results))
    assert invoke(*args).exit_code == 0
    path = next((results / "smoke").glob("*.json"))
    truncated = path.read_text()[:200]
    path.write_text(truncated)
    again = invoke(*args)
    assert again.exit_code == 0
    assert "is not valid JSON" in again.stderr and "moved to" in again.stderr
    assert "1 cells run" in again.stderr
    assert json.loads(path.read_text())["api_version"] == 1
    assert [p.read_text() for p in quarantined(results)] == [truncated]


def test_malformed_json_does_not_crash_the_leaderboard(tmp_path):
    results = tmp_path / "results"
    assert invoke("run", "--suite", "smoke", "-a", "protonet", "--protocol", "5w1s", "--episodes", "2", "--quiet",
                  "--set", "protonet.episodes=2", "--results-dir", str(results)).exit_code == 0
    (results / "smoke" / "broken.json").write_text('{"api_version": 1, "spec": ')
    (results / "smoke" / "list.json").write_text("[]")
    board = invoke("leaderboard", "--results-dir", str(results), "--suite", "smoke", "--format", "csv")
    assert board.exit_code == 0, board.output
    assert "protonet" in board.stdout
    assert board.stderr.count("moved to") == 2


def test_files_under_dot_folders_are_not_results(tmp_path):
    store = ResultStore(tmp_path)
    path = store.save("s", "good", GOOD)
    for folder in (".ipynb_checkpoints", ".cache/fits", "s/.backup"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / path.name).write_text(path.read_text())
    assert [r["run_id"] for r in store.load()] == ["good"]
    assert len(store.frame()) == 1


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "r.json", {"ok": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode


def test_strict_json_on_disk(tmp_path):
    path = ResultStore(tmp_path).save("s", "good", GOOD)
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON {name}"))
    with pytest.raises(ValueError):
        ResultStore(tmp_path).save("s", "inf", {**GOOD, "rows": [[0, "accuracy", float("inf"), 1.0]]})
    assert not (tmp_path / "s" / "inf.json").exists()


def test_committed_results_still_load(tmp_path):
    """api_version 1 files written before the store was hardened stay readable (copied, so nothing moves)."""
    import shutil

    root = Path(__file__).resolve().parents[1] / "leaderboards"
    for suite in ("fewshot", "regression"):
        shutil.copytree(root / suite / "results", tmp_path / suite)
        reports: list[str] = []
        runs = ResultStore(tmp_path / suite, report=reports.append).load()
        assert runs and not reports

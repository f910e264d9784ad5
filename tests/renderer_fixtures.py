"""Leaderboards for renderer, report and plot tests: real fewshot results, plus hostile labels.

The results are a frozen snapshot of leaderboards/*/results (as committed at 4368092) kept under
tests/data, so that new leaderboard rows do not change what these tests expect.

A hostile copy is a real result file of the committed protonet 5-way 1-shot run under another algorithm
label, with a few episodes made worse (so it is paired with, and compared to, the real row).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "results_snapshot"
COMMITTED = SNAPSHOT / "fewshot"
REGRESSION = SNAPSHOT / "regression"
HOSTILE = "<script>alert(1)</script>"
ODD = "odd %_&#$^~{}\\<>|\" ± → é 中"


def board_from(results: Path, suite: str = "fewshot"):
    """The Leaderboard the CLI would render for ``results`` (default metric of the suite)."""
    from mtbench.cli import build_board
    from mtbench.plugins import load_plugins
    from mtbench.results import ResultStore

    plugins = load_plugins()
    return build_board(ResultStore(results), plugins.suites.get(suite), None, plugins)


def write_hostile_results(target: Path, labels: dict[str, int] | None = None) -> Path:
    """Copy the committed results to ``target`` and add one result per label.

    ``labels`` maps a label to how many of its episodes lose one query (1/75 accuracy): a handful keeps
    it statistically tied with protonet, many make it significantly worse.
    """
    labels = labels if labels is not None else {HOSTILE: 3, ODD: 120}
    shutil.copytree(COMMITTED, target)
    source = next((target / "fewshot").glob("protonet__omniglot__5w1s15q__*.json"))
    payload = json.loads(source.read_text())
    for i, (label, worse) in enumerate(labels.items()):
        run = json.loads(json.dumps(payload))
        run["spec"]["algorithm"] = label
        run["run_id"] = f"hostile{i}__omniglot__5w1s15q__seed0"
        value = run["columns"].index("value")
        for row in run["rows"][:worse]:
            row[value] = max(0.0, row[value] - 1 / 75)
        (target / "fewshot" / f"{run['run_id']}.json").write_text(json.dumps(run))
    return target


def write_two_datasets(target: Path, label: str = "omniglot-again") -> Path:
    """The committed results twice, the copy under another dataset label (a second dataset, same names)."""
    shutil.copytree(COMMITTED, target)
    for path in sorted((target / "fewshot").glob("*.json")):
        run = json.loads(path.read_text())
        run["spec"]["dataset_label"] = label
        for key in ("dataset_params", "train_dataset_params"):
            run["spec"][key] = {**(run["spec"].get(key) or {}), "copy": True}  # another dataset identity
        run["run_id"] = f"again__{run['run_id']}"
        (path.parent / f"{run['run_id']}.json").write_text(json.dumps(run))
    return target

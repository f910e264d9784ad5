"""Caches that cannot run code: fitted state and shared artifacts are tensors + JSON, never pickles.

A planted pickle, a truncated file or a file written for another key under a cache file's name runs
nothing, is reported in one line and recomputed (and overwritten); stored fits round-trip exactly.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mtbench import Algorithm, hookimpl
from mtbench.context import RunContext
from mtbench.fitstate import (SUFFIX, StateError, cached_tree, default_fitted_state, default_load_fitted_state,
                              load_state, save_state)
from mtbench.runner import plan_cells
from mtbench.testing import check_fitted_state_roundtrip

from runner_helpers import make_runner

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["protonet", "finetune", "linear-probe"]


class MarkerWriter:
    """Unpickling this opens (creates) the marker file: code chosen by whoever wrote the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def malicious_payloads(marker: Path) -> dict[str, bytes]:
    """A raw pickle and a torch.save zip of the same object; both run code under torch.load(weights_only=False)."""
    raw = pickle.dumps(MarkerWriter(marker))
    zipped = marker.parent / "zipped.pt"
    torch.save({"algorithm": MarkerWriter(marker)}, zipped)
    return {"pickle": raw, "torch.save": zipped.read_bytes()}


def smoke_run(plugins, results: Path, n_episodes: int = 6):
    cells = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=SMOKE, n_episodes=n_episodes,
                       protocols=[(5, 1)])
    summary = make_runner(plugins, results).run(cells, force=True)
    return {p.name.split("__")[0]: json.loads(p.read_text()) for p in summary.done}


def cache_files(results: Path) -> list[Path]:
    files = sorted((results / ".cache").rglob(f"*{SUFFIX}"))
    assert {f.parent.name for f in files} == {"fits", "artifacts"}, files
    return files


def metric_rows(payloads: dict) -> dict:
    """(episode, metric, value) of every row: all but the adaptation time."""
    return {name: [row[:3] for row in payload["rows"]] for name, payload in payloads.items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    from mtbench.plugins import load_plugins
    plugins = load_plugins()
    results = tmp_path_factory.mktemp("fitstate") / "results"
    return plugins, results, smoke_run(plugins, results)


def test_a_second_run_loads_every_fit_from_tensors_with_identical_rows(first_run, tmp_path):
    plugins, results, first = first_run
    assert all(not p["timings"]["fit_reused"] for p in first.values())
    second = smoke_run(plugins, results)
    assert all(p["timings"]["fit_reused"] for p in second.values()), {k: p["timings"] for k, p in second.items()}
    assert metric_rows(second) == metric_rows(first)
    assert [p["fit_info"] for p in second.values()] == [p["fit_info"] for p in first.values()]
    for path in cache_files(results):
        assert path.read_bytes()[8:9] == b"{", f"{path} is not a safetensors file"


@pytest.mark.parametrize("variant", ["pickle", "torch.save"])
def test_planted_pickles_in_fits_and_artifacts_run_nothing_and_are_recomputed(first_run, tmp_path, capfd, variant):
    plugins, results, first = first_run
    marker = tmp_path / "pwned"
    payload = malicious_payloads(marker)[variant]
    pickle.loads(pickle.dumps(MarkerWriter(marker)))  # the planted object does run code when unpickled
    assert marker.exists()
    marker.unlink()
    planted = cache_files(results)
    for path in planted:
        path.write_bytes(payload)
        path.with_suffix(".pt").write_bytes(payload)  # the old cache's names are never read either
    capfd.readouterr()
    again = smoke_run(plugins, results)
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("mtbench: warning:")]
    assert not marker.exists(), "a planted cache file ran code"
    assert metric_rows(again) == metric_rows(first)
    assert len(warnings) == len(planted), warnings  # one line per planted file
    assert all(re.search(r"ignoring cache|ignoring cached fit", w) for w in warnings)
    for path in planted:  # recomputed and overwritten with tensors
        assert path.read_bytes() != payload
        assert path.read_bytes()[8:9] == b"{"
        path.with_suffix(".pt").unlink()


def test_truncated_and_foreign_cache_files_are_recomputed(first_run, capfd):
    plugins, results, first = first_run
    files = cache_files(results)
    fits = [f for f in files if f.parent.name == "fits"]
    fits[0].write_bytes(fits[1].read_bytes())  # a valid file written for another key
    for path in [f for f in files if f != fits[0]]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # what a power loss can leave
    capfd.readouterr()
    again = smoke_run(plugins, results)
    err = capfd.readouterr().err
    assert metric_rows(again) == metric_rows(first)
    assert "written for another cache key" in err
    assert err.count("mtbench: warning:") == len(files)
    assert all(not p["timings"]["fit_reused"] for p in again.values())
    assert all(p["timings"]["fit_reused"] for p in smoke_run(plugins, results).values())  # overwritten, usable


def test_a_stored_fit_that_does_not_match_the_architecture_is_refitted(first_run, capfd):
    from safetensors import safe_open
    plugins, results, first = first_run
    fits = [f for f in cache_files(results) if f.parent.name == "fits"]
    for path in fits:  # right key and format, tensors of the wrong shapes (e.g. a backbone changed in place)
        with safe_open(str(path), "pt") as f:
            header = json.loads(f.metadata()["mtbench"])
            names = list(f.keys())
        save_state(path, json.loads(header["key"]), {name: torch.zeros(3) for name in names}, header["meta"])
    capfd.readouterr()
    again = smoke_run(plugins, results)
    err = capfd.readouterr().err
    assert metric_rows(again) == metric_rows(first)
    assert err.count("ignoring cached fit") == len(fits), err
    assert all(not p["timings"]["fit_reused"] for p in again.values())


@pytest.mark.parametrize("name", SMOKE)
def test_round_trip_of_the_built_in_fits(plugins, name):
    suite = plugins.suites.get("smoke")
    params = suite.overrides(suite.entry(name), "quick")
    check_fitted_state_roundtrip(plugins.algorithms.get(name)().set_params(**params))


def test_cached_tree_stores_tensors_and_json_and_refuses_modules(tmp_path):
    tree = {"w": torch.randn(3, 2), "steps": [1, 2.5, None, True, "x"], "pair": (torch.arange(3), {"b": 1}),
            "bools": torch.tensor([True, False]), "empty": {}}
    calls = []
    value, cached = cached_tree(tmp_path, {"kind": "demo", "k": 1}, lambda: calls.append(1) or tree)
    again, cached_again = cached_tree(tmp_path, {"kind": "demo", "k": 1}, lambda: calls.append(1) or tree)
    assert (cached, cached_again, len(calls)) == (False, True, 1)
    assert torch.equal(again["w"], tree["w"]) and torch.equal(again["pair"][0], tree["pair"][0])
    assert again["steps"] == tree["steps"] and again["pair"][1] == {"b": 1} and again["empty"] == {}
    assert again["bools"].dtype == torch.bool
    with pytest.raises(TypeError, match="Linear cannot be stored without pickling"):
        cached_tree(tmp_path, {"kind": "demo", "k": 2}, lambda: {"net": nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="cannot be stored"):
        RunContext(torch.device("cpu")).cached({"kind": "x"}, lambda: object())  # no cache dir: same contract


def test_load_state_checks_format_and_key(tmp_path):
    path = tmp_path / f"x{SUFFIX}"
    save_state(path, {"a": 1}, {"t": torch.ones(2)}, {"m": [1]})
    tensors, meta = load_state(path, {"a": 1})
    assert torch.equal(tensors["t"], torch.ones(2)) and meta == {"m": [1]}
    with pytest.raises(StateError, match="another cache key"):
        load_state(path, {"a": 2})
    from safetensors.torch import save_file
    save_file({"t": torch.ones(2)}, str(path))  # a safetensors file, not one of ours
    with pytest.raises(StateError, match="not an mtbench-state"):
        load_state(path, {"a": 1})
    assert not list(tmp_path.glob("*.tmp")), "a temporary file was left behind"


class TwoModes(Algorithm):
    name = "two-modes"
    kind = "baseline"

    def __init__(self) -> None:
        pass

    def init_fitted(self, data, ctx) -> None:
        self.net_ = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_default_state_restores_modules_modes_tensors_and_json():
    alg = TwoModes()
    alg.init_fitted(None, None)
    alg.net_[1].eval()  # one submodule in eval mode, the rest training
    alg.net_[1].running_mean += 3
    alg.table_ = {"a": torch.randn(4), "b": [torch.zeros(1), 2]}
    alg.info_ = {"steps": 3, "curve": (0.5, 0.25)}
    alg._private_ = object()  # names starting with "_" are not fitted state
    tensors, meta = default_fitted_state(alg)
    json.dumps(meta)
    fresh = TwoModes()
    fresh.init_fitted(None, None)
    default_load_fitted_state(fresh, {k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(meta)))
    assert torch.equal(fresh.net_[1].running_mean, alg.net_[1].running_mean)
    assert [m.training for m in fresh.net_.modules()] == [m.training for m in alg.net_.modules()]
    assert torch.equal(fresh.table_["a"], alg.table_["a"]) and fresh.table_["b"][1] == 2
    assert fresh.info_ == {"steps": 3, "curve": [0.5, 0.25]}
    alg.model_ = object()
    with pytest.raises(TypeError, match="model_"):
        default_fitted_state(alg)


class NoInit(Algorithm):
    """Follows the old contract only: it runs, but is refitted every time."""

    name = "no-init"
    kind = "baseline"

    def __init__(self) -> None:
        pass

    def fit(self, data, ctx):
        self.fitted_ = True
        return self

    def adapt(self, support, ctx):
        return Uniform(support.n_way)


class Uniform:
    def __init__(self, n_way: int) -> None:
        self.n_way = n_way

    def predict_proba(self, x):
        return torch.full((len(x), self.n_way), 1.0 / self.n_way)


class NoInitPlugin:
    @hookimpl
    def register_algorithms(self, register):
        register(NoInit)


def test_an_algorithm_without_init_fitted_runs_uncached(tmp_path):
    from mtbench.plugins import load_plugins
    plugins = load_plugins(objects=[("no-init", NoInitPlugin())])
    cells = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["no-init"], n_episodes=3, protocols=[(5, 1)])
    for _ in range(2):
        (done,) = make_runner(plugins, tmp_path).run(cells, force=True).done
        assert json.loads(done.read_text())["timings"]["fit_reused"] is False
    assert not list((tmp_path / ".cache").rglob(f"*{SUFFIX}"))


def test_nothing_in_the_code_unpickles():
    def unsafe(line: str) -> bool:  # torch.load unpickles by default before torch 2.6
        return bool(re.search(r"weights_only\s*=\s*False|pickle\.loads?\b", line)) or \
            ("torch.load(" in line and "weights_only=True" not in line)
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("mtbench", "plugins")
             for path in (ROOT / folder).rglob("*.py") if ".venv" not in path.parts
             for n, line in enumerate(path.read_text().splitlines(), 1) if unsafe(line)]
    assert not found, f"code that can unpickle: {found}"

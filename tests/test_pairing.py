"""Episodes are paired: every algorithm sees identical episodes, whatever order the cells run in."""
from __future__ import annotations

import hashlib
import json

import torch

from mtbench import Algorithm, hookimpl
from mtbench.plugins import load_plugins
from mtbench.runner import plan_cells

from runner_helpers import make_runner

SEEN: dict[str, list[str]] = {}


def fingerprint(x: torch.Tensor) -> str:
    return hashlib.sha256(x.cpu().numpy().tobytes()).hexdigest()[:16]


class Recorder:
    def __init__(self, name: str, n_way: int) -> None:
        self.name, self.n_way = name, n_way

    def predict_proba(self, x):
        SEEN[self.name][-1] += "/" + fingerprint(x)
        return torch.full((len(x), self.n_way), 1.0 / self.n_way)


def spy(spy_name: str) -> type[Algorithm]:
    class Spy(Algorithm):
        name = spy_name
        kind = "baseline"

        def __init__(self) -> None:
            pass

        def fit(self, data, ctx):
            return self

        def adapt(self, support, ctx):
            SEEN.setdefault(spy_name, []).append(fingerprint(support.x) + fingerprint(support.y))
            return Recorder(spy_name, support.n_way)
    return Spy


class SpyPlugin:
    @hookimpl
    def register_algorithms(self, register):
        register(spy("spy-a"))
        register(spy("spy-b"))


def test_algorithms_in_different_orders_see_identical_episodes(tmp_path):
    plugins = load_plugins(objects=[("spies", SpyPlugin())])
    suite = plugins.suites.get("smoke")
    SEEN.clear()
    forward = plan_cells(suite, plugins, algorithms=["spy-a", "spy-b"], n_episodes=15)
    make_runner(plugins, tmp_path / "ab").run(forward)
    first = dict(SEEN)
    SEEN.clear()
    backward = plan_cells(suite, plugins, algorithms=["spy-b", "spy-a"], n_episodes=15)
    make_runner(plugins, tmp_path / "ba").run(list(reversed(backward)))
    second = dict(SEEN)
    assert len(first["spy-a"]) == 2 * 15  # two protocols of the smoke suite
    assert first["spy-a"] == first["spy-b"] and second["spy-a"] == second["spy-b"]
    assert sorted(first["spy-a"]) == sorted(second["spy-b"])  # the second run went through protocols backwards
    assert len(set(first["spy-a"])) == 30  # and the episodes differ from each other

    digests = {}
    for folder in ("ab", "ba"):
        for path in (tmp_path / folder / "smoke").glob("*.json"):
            run = json.loads(path.read_text())
            digests.setdefault((run["spec"]["n_way"], run["spec"]["k_shot"]), set()).add(run["episodes"]["digest"])
    assert all(len(d) == 1 for d in digests.values()), "result files must record the same episode digest"

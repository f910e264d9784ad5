"""Plugin loading: entry points, test-module plugins, block list, duplicates, unknown names, broken plugins."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mtbench import hookimpl
from mtbench.errors import DuplicateNameError, PluginLoadError, UnknownNameError
from mtbench.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]


class DuplicateProtoNet:
    """A test-module plugin registering a name the zoo already uses."""

    @hookimpl
    def register_algorithms(self, register):
        from mtbench_zoo.protonet import ProtoNet

        class Clash(ProtoNet):
            name = "protonet"
        register(Clash)


def test_builtins_load_through_entry_points(plugins):
    infos = {i.name: i for i in plugins.describe()}
    assert infos["protonet"].distribution == "mtbench-zoo" and infos["protonet"].version == "0.1.0"
    assert infos["protonet"].registered == {"algorithm": ["protonet"]}
    assert {"protonet", "finetune", "linear-probe"} <= set(plugins.algorithms)
    assert {"omniglot", "image-folder", "synthetic", "digits"} <= set(plugins.datasets)
    assert {"fewshot", "smoke"} <= set(plugins.suites)
    assert {"conv4", "mlp"} <= set(plugins.backbones)


def test_hook_register_algorithms(plugins):
    assert plugins.algorithms.get("protonet").kind == "meta"


def test_hook_register_datasets(plugins):
    assert plugins.datasets.get("omniglot").task == "classification"


def test_hook_register_metrics(plugins):
    assert plugins.metrics.get("accuracy").scale == 100.0


def test_hook_register_suites(plugins):
    assert plugins.suites.get("fewshot").n_episodes == 600


def test_hook_register_backbones(plugins):
    import torch
    net = plugins.backbones.get("conv4")((1, 28, 28))
    assert net.out_dim == 64 and net(torch.zeros(2, 1, 28, 28)).shape == (2, 64)


def test_hook_register_renderers():
    from mtbench.renderers import Renderer

    class Tsv:
        @hookimpl
        def register_renderers(self, register):
            register(Renderer("tsv", ".tsv", lambda lb: lb.cells.to_csv(sep="\t", index=False)))
    renderers = load_plugins(objects=[("tsv", Tsv())]).renderers
    assert {"terminal", "markdown", "csv", "json", "latex", "html", "tsv"} <= set(renderers)
    assert renderers.providers["html"] == "plugin 'mtbench.renderers.html_report' (mtbench 0.1.0)"


def test_hook_register_executors():
    from mtbench.executors import Executor

    class Inline(Executor):
        name = "inline"

    class AddsInline:
        @hookimpl
        def register_executors(self, register):
            register(Inline)
    executors = load_plugins(objects=[("inline", AddsInline())]).executors
    assert {"local", "processes", "ray", "inline"} <= set(executors)
    assert executors.providers["local"] == "plugin 'mtbench.executors.builtin' (mtbench 0.1.0)"


def test_hook_update_environment_info():
    class AddsJob:
        @hookimpl
        def update_environment_info(self, info):
            info["job"] = "42"
    from mtbench.environment import environment_info
    import torch
    info = environment_info(torch.device("cpu"), load_plugins(objects=[("job", AddsJob())]))
    assert info["job"] == "42" and info["torch"]


def test_every_hookspec_has_a_test():
    from mtbench import hookspecs
    hooks = [n for n in dir(hookspecs) if n.startswith(("register_", "update_"))]
    source = Path(__file__).read_text()
    assert all(f"def test_hook_{h}(" in source for h in hooks), hooks


def test_duplicate_names_name_both_providers():
    plugins = load_plugins(objects=[("my-clash", DuplicateProtoNet())])
    with pytest.raises(DuplicateNameError, match=r"algorithm 'protonet' is registered twice: by plugin 'protonet' "
                                                  r"\(mtbench-zoo 0.1.0\) and by plugin 'my-clash'"):
        plugins.algorithms


def test_block_list_removes_a_plugin(monkeypatch):
    monkeypatch.setenv("MTBENCH_DISABLE_PLUGINS", "protonet")
    plugins = load_plugins(objects=[("my-clash", DuplicateProtoNet())])
    assert plugins.algorithms.providers["protonet"] == "plugin 'my-clash'"


def test_unknown_name_lists_close_matches(plugins):
    with pytest.raises(UnknownNameError, match=r"unknown algorithm 'protonett'; did you mean protonet\b"):
        plugins.algorithms.get("protonett")


def test_plugin_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match=r"plugin module 'broken_plugin' .* failed to import: RuntimeError: boom"):
        load_plugins(modules=["broken_plugin"])


def test_hookimpl_that_breaks_the_spec(tmp_path, monkeypatch):
    (tmp_path / "wrong_args.py").write_text(textwrap.dedent("""
        from mtbench import hookimpl
        @hookimpl
        def register_algorithms(register, extra):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match="does not follow the mtbench hook specs"):
        load_plugins(modules=["wrong_args"])


def fake_distribution(site: Path, dist: str, entry: str, module: str, code: str) -> None:
    """An installed distribution as importlib.metadata sees it: a dist-info folder plus the module."""
    info = site / f"{dist.replace('-', '_')}-9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 9.9\n")
    (info / "entry_points.txt").write_text(f"[mtbench]\n{entry} = {module}\n")
    (site / f"{module}.py").write_text(code)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mtbench.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=300)


def test_broken_installed_plugin_names_its_distribution(tmp_path):
    fake_distribution(tmp_path, "mtbench-broken", "broken", "mtbench_broken", "import does_not_exist\n")
    result = run_cli("plugins", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "plugin 'broken' of distribution mtbench-broken 9.9 failed to import" in lines[0]
    assert "MTBENCH_DISABLE_PLUGINS=broken" in lines[0]
    ok = run_cli("plugins", env={"PYTHONPATH": str(tmp_path), "MTBENCH_DISABLE_PLUGINS": "broken"})
    assert ok.returncode == 0, ok.stderr


TEST_MODULE_PLUGIN = '''
import torch
from mtbench import Algorithm, hookimpl

class AlwaysZero:
    def __init__(self, n_way):
        self.n_way = n_way
    def predict_proba(self, x):
        proba = torch.zeros(len(x), self.n_way)
        proba[:, 0] = 1.0
        return proba

class ConstantGuess(Algorithm):
    name = "constant-guess"
    kind = "baseline"
    def __init__(self):
        pass
    def fit(self, data, ctx):
        return self
    def adapt(self, support, ctx):
        return AlwaysZero(support.n_way)

@hookimpl
def register_algorithms(register):
    register(ConstantGuess)
'''


def test_test_module_plugin_and_installed_package_reach_the_leaderboard(tmp_path):
    """One plugin from a module (--plugin), one installed by pip through the entry point."""
    site, source = tmp_path / "site", tmp_path / "mtbench-example"
    shutil.copytree(ROOT / "plugins" / "mtbench-example", source)  # pip builds in place: keep the checkout clean
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    (tmp_path / "my_test_plugin.py").write_text(TEST_MODULE_PLUGIN)
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(tmp_path)])}

    listed = run_cli("plugins", "--json", "--plugin", "my_test_plugin", env=env)
    assert listed.returncode == 0, listed.stderr
    infos = {p["name"]: p for p in json.loads(listed.stdout)}
    assert infos["pixel-knn"]["distribution"] == "mtbench-example" and infos["pixel-knn"]["version"] == "0.1.0"
    assert infos["pixel-knn"]["registered"] == {"algorithm": ["pixel-knn"]}
    assert infos["my_test_plugin"]["registered"] == {"algorithm": ["constant-guess"]}

    results = tmp_path / "results"
    ran = run_cli("run", "--suite", "smoke", "--plugin", "my_test_plugin", "-a", "pixel-knn", "-a", "constant-guess",
                  "--episodes", "20", "--results-dir", str(results), "--quiet", env=env)
    assert ran.returncode == 0, ran.stderr
    board = run_cli("leaderboard", "--results-dir", str(results), "--format", "markdown", "--plugin",
                    "my_test_plugin", env=env)
    assert board.returncode == 0, board.stderr
    scores = board.stdout.split("## Cost")[0]  # the scores table (a cost table follows)
    rows = {line.split("|")[2].strip(): line for line in scores.splitlines() if line.startswith("| synthetic")}
    assert set(rows) == {"pixel-knn", "constant-guess"}
    assert "20.0 ± 0.0 (20)" in rows["constant-guess"]  # always class 0 of 5: exactly chance

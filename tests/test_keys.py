"""Keys that notice change (issue 10 C): a code edit, a replaced image, another backbone or another device
give a new result key and a new fit key, so nothing stale is reused; results record the code versions."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from test_cli import invoke

ALGO = '''
import torch
from mtbench import Algorithm, hookimpl
from .helpers import SCALE


class Predictor:
    def __init__(self, n_way):
        self.n_way = n_way

    def predict_proba(self, x):
        return torch.full((len(x), self.n_way), SCALE / self.n_way)


class Versioned(Algorithm):
    name = "versioned"
    kind = "baseline"

    def init_fitted(self, data, ctx):
        self.weight_ = torch.zeros(1)

    def fit(self, data, ctx):
        self.init_fitted(data, ctx)
        return self

    def adapt(self, support, ctx):
        return Predictor(support.n_way)


@hookimpl
def register_algorithms(register):
    register(Versioned)
'''


def stored(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "smoke").glob("*.json"))]


def test_a_code_edit_retrains(tmp_path, monkeypatch):
    """The run id used to have no code version: after a plugin's code changed, cells showed as done."""
    package = tmp_path / "versioned_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(ALGO)
    (package / "helpers.py").write_text("SCALE = 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    results = tmp_path / "results"
    args = ("run", "--suite", "smoke", "-a", "versioned", "--protocol", "5w1s", "--episodes", "2", "--quiet",
            "--plugin", "versioned_pkg", "--results-dir", str(results))
    assert "1 cells run, 0 already done" in invoke(*args).stderr
    assert "0 cells run, 1 already done" in invoke(*args).stderr
    (package / "helpers.py").write_text("SCALE = 1.0  # edited: a helper of the algorithm's package\n")
    again = invoke(*args)
    assert "1 cells run, 0 already done" in again.stderr, again.output
    first, second = stored(results)
    assert first["spec"]["code_versions"]["algorithm"] != second["spec"]["code_versions"]["algorithm"]
    assert not second["timings"]["fit_reused"]


def write_images(root: Path, classes: int = 8, per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")


SUITE = """
name = "smoke"
algorithms = ["protonet"]
episodes = 2
queries = 2
[[datasets]]
name = "image-folder"
params = {{ root = "{root}", image_size = 8, fractions = [0.5, 0.0, 0.5] }}
[[protocols]]
ways = 3
shots = 1
[params.protonet]
backbone = "mlp"
episodes = 3
train_way = 3
"""


def test_replacing_an_image_in_place_retrains_even_with_force(tmp_path):
    """The fit key had the dataset's name and params, not its content: replaced images reused the old fit."""
    root = tmp_path / "images"
    write_images(root)
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE.format(root=root))
    results = tmp_path / "results"
    args = ("run", "--suite", str(suite), "--quiet", "--results-dir", str(results))
    assert invoke(*args).exit_code == 0
    assert invoke(*args, "--force").exit_code == 0
    assert stored(results)[0]["timings"]["fit_reused"]  # --force alone re-evaluates with the cached fit
    target = root / "class0" / "0.png"
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(target)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    again = invoke(*args, "--force")
    assert again.exit_code == 0, again.output
    runs = stored(results)
    assert len(runs) == 2  # a new key: the result for the old images is kept beside it
    assert sorted(r["timings"]["fit_reused"] for r in runs) == [False, True]  # the new images were fitted on
    assert len({r["spec"]["data_fingerprint"]["test"] for r in runs}) == 2


def test_the_fingerprint_ignores_where_the_folder_lives(tmp_path):
    from mtbench_zoo.image_folder import ImageFolder

    write_images(tmp_path / "a")
    before = ImageFolder(root=str(tmp_path / "a")).fingerprint(None)
    (tmp_path / "a").rename(tmp_path / "b")
    assert ImageFolder(root=str(tmp_path / "b")).fingerprint(None) == before
    (tmp_path / "b" / "class1" / "5.png").unlink()
    assert ImageFolder(root=str(tmp_path / "b")).fingerprint(None) != before


def test_the_device_kind_is_part_of_the_run_id(plugins):
    """A --device cuda run after a CPU run of the same cell used to be skipped as done."""
    from mtbench.runner import plan_cells

    cell = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["protonet"])[0]
    cpu, cuda = replace(cell, device="cpu"), replace(cell, device="cuda")
    assert cpu.run_id != cuda.run_id and cpu.spec()["device_kind"] == "cpu"


def test_a_backbone_edit_changes_the_keys_of_fits_and_pretrained_artifacts(tmp_path, monkeypatch):
    """A change in a backbone used to reuse a cached pretrained encoder of the old architecture."""
    from mtbench.execute import CellRunner, Environment
    from mtbench.plugins import load_plugins
    from mtbench.runner import plan_cells

    package = tmp_path / "my_backbones"
    package.mkdir()
    source = ("import torch\nfrom mtbench import hookimpl\n\ndef tiny(in_shape, width=4):\n"
              "    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(width))\n"
              "    net.out_dim = width\n    return net\n\n@hookimpl\ndef register_backbones(register):\n"
              "    register('tiny-net', tiny)\n")
    (package / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = load_plugins(modules=["my_backbones"])
    cell = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["finetune"],
                      overrides={"finetune": {"backbone": "tiny-net"}})[0]
    runner = CellRunner(plugins, Environment("cpu", None, tmp_path / "cache", tmp_path / "data"))
    before = runner.stamp(cell)
    (package / "__init__.py").write_text(source.replace("width=4", "width=8"))
    after = runner.stamp(cell)
    assert before.code_versions["backbone"] != after.code_versions["backbone"]
    assert before.code_versions["algorithm"] == after.code_versions["algorithm"]
    assert before.run_id != after.run_id


def test_results_record_what_produced_them(tmp_path):
    results = tmp_path / "results"
    assert invoke("run", "--suite", "smoke", "-a", "protonet", "--protocol", "5w1s", "--episodes", "2", "--quiet",
                  "--set", "protonet.episodes=2", "--results-dir", str(results)).exit_code == 0
    spec = stored(results)[0]["spec"]
    assert set(spec["code_versions"]) >= {"core", "algorithm", "dataset", "backbone"}
    assert spec["device_kind"] == "cpu" and spec["data_fingerprint"] == {"test": ""}  # synthetic: no files


def test_results_written_before_code_versions_still_count_as_done(tmp_path, plugins):
    """api_version 1 files without code versions (the committed leaderboards) are kept, not retrained."""
    from mtbench.runner import plan_cells

    results = tmp_path / "results"
    args = ("run", "--suite", "smoke", "-a", "protonet", "--protocol", "5w1s", "--episodes", "2", "--quiet",
            "--set", "protonet.episodes=2", "--results-dir", str(results))
    assert invoke(*args).exit_code == 0
    path = next((results / "smoke").glob("*.json"))
    run = json.loads(path.read_text())
    for key in ("code_versions", "device_kind", "data_fingerprint"):
        del run["spec"][key]
    cell = plan_cells(plugins.suites.get("smoke"), plugins, algorithms=["protonet"], n_episodes=2,
                      overrides={"protonet": {"episodes": 2}}, protocols=[(5, 1)])[0]
    path.unlink()
    (results / "smoke" / f"{cell.legacy_run_id}.json").write_text(json.dumps({**run, "run_id": cell.legacy_run_id}))
    assert "0 cells run, 1 already done" in invoke(*args).stderr
    assert "1 cells run, 0 already done" in invoke(*args, "--force").stderr


def test_an_edit_of_a_sibling_module_leaves_an_algorithm_version_alone(tmp_path, monkeypatch):
    """Versions follow imports: a plugin package's other algorithms do not make this one's rows stale."""
    from mtbench.versions import package_version, source_closure

    package = tmp_path / "sibling_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("STEP = 1\n")
    (package / "first.py").write_text("from .base import STEP\n\ndef first():\n    from . import lazy\n")
    (package / "lazy.py").write_text("X = 1\n")
    (package / "second.py").write_text("import sibling_pkg.base\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [p.name for p in source_closure("sibling_pkg.first")] == ["base.py", "first.py", "lazy.py"]
    before = package_version("sibling_pkg.first"), package_version("sibling_pkg.second")
    (package / "second.py").write_text("import sibling_pkg.base  # edited\n")
    assert package_version("sibling_pkg.first") == before[0] != package_version("sibling_pkg.second")
    (package / "lazy.py").write_text("X = 2\n")  # imported inside a function: still part of `first`
    assert package_version("sibling_pkg.first") != before[0]
    (package / "base.py").write_text("STEP = 2\n")
    assert package_version("sibling_pkg.second") != before[1]

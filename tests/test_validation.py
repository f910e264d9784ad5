"""Validation before work: every parameter typed and range-checked, safe names, a writable results folder,
divergence stopped, and each bad input one line on stderr with exit code 2 (issue 10 D)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Literal, Optional

import pytest

from mtbench import Algorithm
from mtbench.params import ParameterError, coerce
from test_cli import invoke, one_line_error

SMOKE = ("run", "--suite", "smoke", "-a", "protonet", "--quiet")
TINY = ("--set", "protonet.episodes=3", "--episodes", "2")


def result_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.json") if ".cache" not in p.parts) if folder.exists() else []


@pytest.mark.parametrize("args,expected", [
    (("--seed", "-1"), "--seed must be an integer >= 0, got -1"),
    (("--episodes", "0"), "--episodes must be an integer >= 1, got 0"),
    (("--episodes", "-5"), "--episodes must be an integer >= 1, got -5"),
    (("--set", "protonet.episodes=abc"), "parameter episodes='abc' must be an integer"),
    (("--set", "protonet.episodes=-5"), "parameter episodes=-5 must be >= 1"),
    (("--set", "protonet.lr=-1"), "parameter lr=-1.0 must be > 0"),
    (("--set", "protonet.lr=NaN"), "parameter lr=nan must be a finite number"),
    (("--set", "protonet.train_way=true"), "parameter train_way=True must be an integer"),
    (("--set", "protonet.backbone=3"), "parameter backbone=3 must be a string"),
])
def test_bad_values_from_the_command_line(tmp_path, args, expected):
    line = one_line_error(invoke(*SMOKE, *args, "--results-dir", str(tmp_path)))
    assert expected in line
    assert not result_files(tmp_path)


def test_batch_size_zero_is_refused_before_any_data_is_loaded(tmp_path, monkeypatch):
    from mtbench_zoo.synthetic import Synthetic

    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the parameters were checked")
    monkeypatch.setattr(Synthetic, "load", no_loading)
    line = one_line_error(invoke("run", "--suite", "smoke", "-a", "finetune", "--set", "finetune.batch_size=0",
                                 "--results-dir", str(tmp_path)))
    assert "finetune" in line and "batch_size=0 must be >= 1" in line


@pytest.mark.parametrize("raw,expected", [("False", False), ("false", False), ("True", True), ("true", True)])
def test_booleans_parse_strictly(tmp_path, raw, expected):
    """finetune_backbone=False used to be stored as the string "False", which is true."""
    ran = invoke("run", "--suite", "smoke", "-a", "finetune", "--protocol", "5w1s", "--episodes", "2", "--quiet",
                 "--set", "finetune.pretrain_steps=2", "--set", f"finetune.finetune_backbone={raw}",
                 "--results-dir", str(tmp_path))
    assert ran.exit_code == 0, ran.output
    run = json.loads(result_files(tmp_path)[0].read_text())
    assert run["spec"]["params"]["finetune_backbone"] is expected


def test_a_boolean_that_is_not_one_is_refused(tmp_path):
    line = one_line_error(invoke("run", "--suite", "smoke", "-a", "finetune",
                                 "--set", "finetune.finetune_backbone=no", "--results-dir", str(tmp_path)))
    assert "finetune_backbone='no' must be true or false" in line


SUITE = """
name = "{name}"
algorithms = [{{ name = "protonet", label = "{label}" }}]
episodes = {episodes}
queries = {queries}
seeds = [{seed}]
[[datasets]]
name = "synthetic"
params = {{ classes = [20, 5, 8], per_class = 10, image_size = 4 }}
[[protocols]]
ways = 5
shots = 1
[params.protonet]
backbone = "mlp"
episodes = {train_episodes}
"""


def write_suite(tmp_path: Path, name="custom", label="protonet", episodes=2, queries=3, seed=0,
                train_episodes="3") -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(name=name, label=label, episodes=episodes, queries=queries, seed=seed,
                                 train_episodes=train_episodes))
    return path


def run_file(tmp_path: Path, path: Path, results: Path | None = None):
    return invoke("run", "--suite", str(path), "--results-dir", str(results or tmp_path / "results"), "--quiet")


@pytest.mark.parametrize("kwargs,expected", [
    ({"queries": 0}, "queries must be an integer >= 1, got 0"),
    ({"episodes": 0}, "episodes must be an integer >= 1, got 0"),
    ({"seed": -3}, "seeds must be an integer >= 0, got -3"),
    ({"train_episodes": '"abc"'}, "parameter episodes='abc' must be an integer"),
    ({"train_episodes": "-5"}, "parameter episodes=-5 must be >= 1"),
])
def test_bad_values_from_a_suite_file(tmp_path, kwargs, expected):
    line = one_line_error(run_file(tmp_path, write_suite(tmp_path, **kwargs)))
    assert expected in line
    assert not result_files(tmp_path)


@pytest.mark.parametrize("where,value", [("name", "../../escaped"), ("name", ""), ("name", "/tmp/abs"),
                                         ("label", "../../escaped"), ("label", "a/b"), ("label", "..")])
def test_names_that_would_escape_the_results_folder_write_nothing_outside(tmp_path, where, value):
    results = tmp_path / "deep" / "results"
    line = one_line_error(run_file(tmp_path, write_suite(tmp_path, **{where: value}), results))
    assert "is not a safe name" in line
    assert not list(tmp_path.rglob("*.json"))


def test_the_result_store_refuses_a_path_outside_its_folder(tmp_path):
    from mtbench.results import ResultsDirError, ResultStore

    with pytest.raises(ResultsDirError):
        ResultStore(tmp_path / "r").save("..", "x", {})
    assert not list(tmp_path.rglob("*.json"))


def test_results_folder_that_is_a_file(tmp_path, monkeypatch):
    from mtbench_zoo.synthetic import Synthetic

    target = tmp_path / "results"
    target.write_text("not a folder")
    monkeypatch.setattr(Synthetic, "load", lambda *a, **k: pytest.fail("data loaded before the check"))
    line = one_line_error(invoke(*SMOKE, *TINY, "--results-dir", str(target)))
    assert "is a file" in line


def test_unwritable_results_folder_fails_before_training(tmp_path, monkeypatch):
    import os

    from mtbench_zoo.protonet import ProtoNet

    monkeypatch.setattr(ProtoNet, "fit", lambda *a, **k: pytest.fail("trained before the check"))
    if os.geteuid() == 0:  # root writes anywhere it has permission bits for; /proc refuses everyone
        target = Path("/proc/self/mtbench-results")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    line = one_line_error(invoke(*SMOKE, *TINY, "--results-dir", str(target)))
    assert "not writable" in line


def test_a_diverging_learning_rate_is_a_clear_error_and_no_row(tmp_path):
    results = tmp_path / "results"
    ran = invoke(*SMOKE, "--protocol", "5w1s", "--set", "protonet.lr=1e30", "--set", "protonet.episodes=20",
                 "--episodes", "2", "--results-dir", str(results))
    assert ran.exit_code != 0
    assert "diverged" in ran.stderr and "lower the learning rate" in ran.stderr
    assert not result_files(results)


def test_fit_loop_stops_on_an_exploding_loss():
    import torch

    from mtbench import RunContext, fit_loop
    from mtbench.errors import DivergedError

    w = torch.nn.Parameter(torch.ones(1))
    losses = iter([1.0, 2.0, 1e7])
    batches = iter(range(10))
    with pytest.raises(DivergedError, match="diverged to 1e\\+07 at step 3"):
        fit_loop(lambda b: (w * next(losses)).sum(), batches, [w], steps=5, ctx=RunContext(torch.device("cpu")),
                 lr=1e-9, progress=False)


def test_nan_metrics_are_never_stored(tmp_path, plugins):
    """A model that predicts NaN fails its cell; strict JSON refuses NaN even if something slipped through."""
    from mtbench.results import write_json_atomic

    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"value": float("nan")})
    assert not (tmp_path / "x.json").exists()


def test_a_raising_environment_hook_is_one_line(tmp_path, monkeypatch):
    module = tmp_path / "bad_env_plugin.py"
    module.write_text("from mtbench import hookimpl\n\n@hookimpl\ndef update_environment_info(info):\n"
                      "    raise RuntimeError('no cluster here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = one_line_error(invoke(*SMOKE, *TINY, "--plugin", "bad_env_plugin", "--results-dir", str(tmp_path / "r")))
    assert "failed in update_environment_info: RuntimeError: no cluster here" in line


def test_a_corrupt_deflate_stream_in_an_omniglot_zip_is_one_line(tiny_omniglot, tmp_path):
    archive = tiny_omniglot / "omniglot" / "raw" / "images_background.zip"
    with zipfile.ZipFile(archive) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[0]
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start:start + 16] = b"\xff" * 16  # an invalid deflate block, the CRC never gets checked
    archive.write_bytes(bytes(data))
    result = invoke("run", "--suite", "fewshot", "--data-dir", str(tiny_omniglot), "--results-dir", str(tmp_path / "r"))
    assert "corrupt archive" in one_line_error(result)


def test_a_split_file_with_a_class_in_two_splits_is_refused(tmp_path):
    from mtbench.errors import DataError
    from mtbench_zoo.image_folder import ImageFolder

    for name in ("a", "b", "c"):
        (tmp_path / "data" / name).mkdir(parents=True)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a", "b"], "val": [], "test": ["b", "c"]}))
    with pytest.raises(DataError, match="puts class 'b' in both 'train' and 'test'"):
        ImageFolder(root=str(tmp_path / "data"), split_file=str(split)).assign(["a", "b", "c"])


def test_omniglot_split_files_with_a_character_in_two_splits_are_refused(tiny_omniglot):
    from mtbench.errors import DataError
    from mtbench_zoo.omniglot import read_split_file

    folder = tiny_omniglot / "omniglot" / "splits" / "vinyals"
    first = (folder / "train.txt").read_text().split()[0]
    (folder / "test.txt").write_text((folder / "test.txt").read_text() + first + "\n")
    with pytest.raises(DataError, match="in both 'train' and 'test'"):
        read_split_file(tiny_omniglot)


class Typed(Algorithm):
    name = "typed"
    kind = "baseline"
    constraints = {"rate": "> 0, <= 1", "mode": ("a", "b")}

    def __init__(self, steps: int = 1, rate: float = 0.5, flag: bool = False, mode: str = "a",
                 shape: tuple[int, int] = (1, 2), maybe: Optional[int] = None,
                 kind_: Literal["x", "y"] = "x") -> None:
        self.steps, self.rate, self.flag, self.mode = steps, rate, flag, mode
        self.shape, self.maybe, self.kind_ = shape, maybe, kind_


def test_check_params_types_every_annotation():
    ok = Typed.check_params({"steps": 3.0, "rate": 1, "flag": "FALSE", "shape": [3, 4], "maybe": None,
                             "kind_": "y"}, "test")
    assert ok == {"steps": 3, "rate": 1.0, "flag": False, "shape": (3, 4), "maybe": None, "kind_": "y"}
    assert type(ok["rate"]) is float and type(ok["steps"]) is int
    for bad, message in [({"rate": 1.5}, "must be > 0, <= 1"), ({"mode": "c"}, "must be one of 'a', 'b'"),
                         ({"shape": [1]}, "must be a list of 2 values"), ({"kind_": "z"}, "one of 'x', 'y'"),
                         ({"maybe": "x"}, "must be an integer or null"), ({"flag": 1}, "must be true or false"),
                         ({"steps": 1.5}, "must be an integer"), ({"stepz": 1}, "did you mean steps")]:
        with pytest.raises(ParameterError, match=message):
            Typed.check_params(bad, "test")


def test_coerce_is_strict_about_booleans_and_integers():
    assert coerce(True, bool) is True and coerce("false", bool) is False
    for value, tp in [(True, int), ("1", int), ("yes", bool), (0, bool), (float("inf"), float)]:
        with pytest.raises(ValueError):
            coerce(value, tp)


NAN_PLUGIN = '''
import torch
from mtbench import Algorithm, hookimpl


class NanPredictor:
    def __init__(self, n_way):
        self.n_way = n_way

    def predict_proba(self, x):
        return torch.full((len(x), self.n_way), float("nan"))


class Nan(Algorithm):
    name = "nan-alg"
    kind = "baseline"

    def fit(self, data, ctx):
        return self

    def adapt(self, support, ctx):
        return NanPredictor(support.n_way)


@hookimpl
def register_algorithms(register):
    register(Nan)
'''


def test_a_model_predicting_nan_stores_no_row(tmp_path, monkeypatch):
    (tmp_path / "nan_plugin.py").write_text(NAN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    results = tmp_path / "results"
    ran = invoke("run", "--suite", "smoke", "-a", "nan-alg", "--protocol", "5w1s", "--episodes", "2", "--quiet",
                 "--plugin", "nan_plugin", "--results-dir", str(results))
    assert ran.exit_code != 0
    assert "accuracy is nan on episode 0" in ran.stderr or "nll is nan on episode 0" in ran.stderr
    assert not result_files(results)

"""image-folder (a user's own data), digits (cross-domain target) and synthetic datasets."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtbench import DataError
from mtbench.runner import plan_cells
from mtbench.suites import parse_suite
from mtbench_zoo.digits import Digits
from mtbench_zoo.image_folder import ImageFolder
from mtbench_zoo.synthetic import Synthetic

from runner_helpers import make_runner


def write_folder(root, n_classes=10, per_class=6):
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = (20 + 7 * i, 30 + 3 * c)  # any size
            pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(folder / f"img{i}{suffix}")
    (root / f"class{n_classes - 1:02d}" / "notes.txt").write_text("ignored")


def test_image_folder_with_seeded_fractions(tmp_path):
    write_folder(tmp_path / "data")
    splits = ImageFolder(root=str(tmp_path / "data"), image_size=16, channels=3, fractions=(0.6, 0.2, 0.2)).load(
        None, tmp_path / "cache")
    sizes = {s: splits.split(s).n_classes for s in ("train", "val", "test")}
    assert sizes == {"train": 6, "val": 2, "test": 2}
    assert splits.split("train").images.shape[1:] == (3, 16, 16)
    names = [set(splits.split(s).class_names) for s in sizes]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    again = ImageFolder(root=str(tmp_path / "data"), image_size=16, channels=3).load(None, tmp_path / "cache")
    assert again.split("test").class_names == splits.split("test").class_names


def test_image_folder_with_a_split_file_and_grey_images(tmp_path):
    write_folder(tmp_path / "data")
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [f"class{i:02d}" for i in range(5)], "val": [],
                                      "test": ["class07", "class08", "class09"]}))
    splits = ImageFolder(root=str(tmp_path / "data"), split_file=str(split_file)).load(None, tmp_path / "cache")
    assert splits.split("test").class_names == ("class07", "class08", "class09")
    assert splits.split("train").images.shape[1:] == (1, 28, 28) and splits.splits["val"] is None


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        ImageFolder(root=str(tmp_path / "missing")).load(None, tmp_path)
    write_folder(tmp_path / "data", n_classes=3)
    (tmp_path / "data" / "class00" / "img0.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"corrupt image 'class00/img0.jpg'"):
        ImageFolder(root=str(tmp_path / "data")).load(None, tmp_path / "cache")


def test_digits_is_a_ten_class_test_set():
    splits = Digits().load(None, None)
    test = splits.split("test")
    assert test.n_classes == 10 and test.images.shape[1:] == (1, 28, 28)
    assert splits.splits["train"] is None
    with pytest.raises(DataError, match="has no 'train' split"):
        splits.split("train", "digits")


def test_cross_domain_cell_trains_on_one_dataset_and_tests_on_digits(tmp_path, plugins):
    suite = parse_suite({
        "name": "cross", "algorithms": ["protonet"], "episodes": 5, "queries": 5,
        "datasets": [{"name": "digits", "train": {"name": "synthetic", "params": {"image_size": 28}}}],
        "protocols": [{"ways": 5, "shots": 1}],
        "params": {"protonet": {"backbone": "mlp", "episodes": 3, "train_way": 5, "validate_every": 0}}}, "test")
    path = make_runner(plugins, tmp_path).run(plan_cells(suite, plugins)).done[0]
    run = json.loads(path.read_text())
    assert run["spec"]["dataset"] == "digits" and run["spec"]["train_dataset"] == "synthetic"
    assert run["dataset_info"]["test_classes"] == 10 and run["train_dataset_info"]["train_classes"] == 64


def test_synthetic_is_deterministic():
    a = Synthetic(seed=3).load(None, None).split("test")
    b = Synthetic(seed=3).load(None, None).split("test")
    assert (a.images == b.images).all() and a.n_classes == 32

"""miniImageNet, CIFAR-FS, FC100, CUB and tieredImageNet from archives built here in their official layouts,
`mtbench prepare`, the memory-mapped cache (peak RSS), the 84-pixel Conv-4 and ResNet-12, and a real tiny run."""
from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtbench import DataError
from mtbench.cli import app
from mtbench.episode import EpisodeSampler
from mtbench_zoo.backbones import BACKBONES, ResNet12
from mtbench_zoo.cifar_fs import FC100, CifarFS, shipped_rows
from mtbench_zoo.cub import CUB, chen_split
from mtbench_zoo.miniimagenet import MiniImageNet
from mtbench_zoo.tiered_imagenet import TieredImageNet

from standard_archives import (cifar100, cifar_binary_files, cifar_python_files, cub_files, miniimagenet_files,
                               tiered_npz_files, write_large_tiered_npz, write_tree)

HERE = Path(__file__).resolve().parent
CUB_NAMES = sorted(chen_split())[:8]  # classes 001-008: train 1,3,5,7; val 2,6; test 4,8


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether the tensor's memory is a mapping of ``path`` (per /proc/self/maps), i.e. not a copy in RAM."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        start, end = (int(x, 16) for x in span.split("-"))
        if rest and rest[-1] == str(path.resolve()) and start <= address < end:
            return True
    return False


@pytest.fixture
def mini(tmp_path):
    files, pixels = miniimagenet_files({"train": 5, "val": 2, "test": 3})
    return files, pixels


# --- miniImageNet ------------------------------------------------------------------------------------

def test_miniimagenet_prepared_cache_holds_the_exact_pixels_memory_mapped(mini, tmp_path):
    files, pixels = mini
    source = write_tree(tmp_path / "mini", files)
    folder = MiniImageNet().prepare(source, tmp_path / "cache")
    splits = MiniImageNet().load(None, tmp_path / "cache")
    train = splits.split("train")
    assert (train.n_classes, splits.split("val").n_classes, splits.split("test").n_classes) == (5, 2, 3)
    assert train.images.shape[1:] == (3, 84, 84) and train.images.dtype == torch.uint8
    # every row is the PNG it came from (lossless), in class order
    with (source / "mini-imagenet" / "train.csv").open() as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (r["label"], r["filename"]))
    for i in (0, 7, len(rows) - 1):
        assert train.class_names[int(train.labels[i])] == rows[i]["label"]
        assert np.array_equal(train.images[i].numpy(), pixels[rows[i]["filename"]].transpose(2, 0, 1))
    # memory-mapped from the cache, not copied into RAM
    assert mapped_from(train.images, folder / "train_images.npy")
    meta = json.loads((folder / "meta.json").read_text())
    info = splits.describe()
    assert info["split"] == meta["split"] == "ravi-larochelle"
    assert info["content_fingerprint"] == meta["content_fingerprint"] and not info["standard_64_16_20"]
    # an RGB 84x84 episode through the ordinary sampler
    episode = EpisodeSampler(splits.split("test"), 3, 1, 2, seed=0)[0]
    assert episode.support_x.shape == (3, 3, 84, 84) and float(episode.support_x.max()) <= 1.0


def test_load_prepares_from_the_data_dir_once_and_fingerprints_the_content(mini, tmp_path):
    files, _ = mini
    write_tree(tmp_path / "data" / "mini-imagenet", files, ".zip")  # $MTBENCH_DATA/mini-imagenet.zip
    assert MiniImageNet().fingerprint(tmp_path / "data", tmp_path / "cache") == ""
    splits = MiniImageNet().load(tmp_path / "data", tmp_path / "cache")
    assert splits.info["source"] == str(tmp_path / "data" / "mini-imagenet.zip")
    first = MiniImageNet().fingerprint(tmp_path / "data", tmp_path / "cache")
    assert first == splits.info["content_fingerprint"]
    files[next(n for n in files if n.endswith(".png"))] = files[next(n for n in reversed(files) if n.endswith(".png"))]
    MiniImageNet().prepare(write_tree(tmp_path / "other", files), tmp_path / "cache")  # one image differs
    assert MiniImageNet().fingerprint(None, tmp_path / "cache") not in ("", first)


def test_miniimagenet_zip_and_tar_give_the_same_content(mini, tmp_path):
    files, _ = mini
    prints = set()
    for i, archive in enumerate((".zip", ".tar.gz", "")):
        source = write_tree(tmp_path / f"src{i}" / "mini-imagenet", files, archive)
        MiniImageNet().prepare(source, tmp_path / f"cache{i}")
        prints.add(MiniImageNet().load(None, tmp_path / f"cache{i}").info["content_fingerprint"])
    assert len(prints) == 1


def test_miniimagenet_missing_split_file(mini, tmp_path):
    files, _ = mini
    del files["mini-imagenet/val.csv"]
    source = write_tree(tmp_path / "mini", files, ".zip")
    with pytest.raises(DataError, match=r"mini-imagenet/ has no val.csv \(train.csv, val.csv and test.csv"):
        MiniImageNet().prepare(source, tmp_path / "cache")
    assert not (tmp_path / "cache" / "prepared" / "miniimagenet-84px").exists()


def test_miniimagenet_missing_image_and_corrupt_image(mini, tmp_path):
    files, _ = mini
    lost = next(n for n in files if n.endswith(".png"))
    broken = dict(files)
    del broken[lost]
    with pytest.raises(DataError, match=r"1 image\(s\) listed in .* are missing from .*, e.g. " + lost):
        MiniImageNet().prepare(write_tree(tmp_path / "a", broken), tmp_path / "cache")
    garbled = dict(files)
    garbled[lost] = b"\x89PNG not really"
    with pytest.raises(DataError, match="corrupt image 'mini-imagenet/images/"):
        MiniImageNet().prepare(write_tree(tmp_path / "b", garbled), tmp_path / "cache")
    assert not list((tmp_path / "cache" / "prepared").iterdir())  # no half cache left behind


def test_too_little_disk_space_is_reported_before_any_work(mini, tmp_path, monkeypatch):
    import shutil
    files, _ = mini
    source = write_tree(tmp_path / "mini", files)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 1000, 1000))
    with pytest.raises(DataError, match=r"preparing miniimagenet needs 0.0 GB in .*, which has 0.0 GB free"):
        MiniImageNet().prepare(source, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "prepared").iterdir())


def test_corrupt_archive_and_unprepared_load(mini, tmp_path):
    files, _ = mini
    for archive in (".zip", ".tar.gz"):
        source = write_tree(tmp_path / f"m{archive[1:4]}", files, archive)
        source.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 2])
        with pytest.raises(DataError, match=f"corrupt archive .*{archive}"):
            MiniImageNet().prepare(source, tmp_path / "cache")
    with pytest.raises(DataError, match=r"not prepared at 84px in .*: run `mtbench prepare miniimagenet"):
        MiniImageNet().load(None, tmp_path / "cache")


def test_cli_prepare_then_a_real_tiny_run_with_conv4_84(mini, tmp_path, monkeypatch):
    files, _ = mini
    cache = tmp_path / "cache"
    monkeypatch.setenv("MTBENCH_CACHE", str(cache))
    no_val = dict(files)
    del no_val["mini-imagenet/val.csv"]
    line = one_line_error(invoke("prepare", "miniimagenet", "--from", str(write_tree(tmp_path / "bad", no_val))))
    assert "has no val.csv" in line
    assert "no parameter 'size'" in one_line_error(invoke("prepare", "miniimagenet", "--from", str(tmp_path),
                                                          "--param", "size=84"))
    done = invoke("prepare", "miniimagenet", "--from", str(write_tree(tmp_path / "mini", files, ".zip")))
    assert done.exit_code == 0, done.output
    assert "miniimagenet-84px" in done.stderr
    suite = tmp_path / "mini.toml"
    suite.write_text(textwrap.dedent("""
        name = "mini-tiny"
        algorithms = ["protonet"]
        episodes = 4
        queries = 3
        seeds = [0]
        [[datasets]]
        name = "miniimagenet"
        [[protocols]]
        ways = 3
        shots = 1
        [params.protonet]
        backbone = "conv4-84"
        episodes = 2
        train_way = 3
        validate_every = 0
        """))
    ran = invoke("run", "--suite", str(suite), "--results-dir", str(tmp_path / "results"), "--quiet",
                 "--device", "cpu")
    assert ran.exit_code == 0, ran.output
    result = json.loads(next((tmp_path / "results").rglob("protonet__miniimagenet__*.json")).read_text())
    assert result["dataset_info"]["split"] == "ravi-larochelle"
    assert result["dataset_info"]["content_fingerprint"]
    assert result["spec"]["params"]["backbone"] == "conv4-84" and result["fit_info"]["history"]["steps"] == 2
    assert len(result["rows"]) == 4


# --- CIFAR-FS and FC100 ----------------------------------------------------------------------------------

def test_shipped_cifar_splits_are_the_published_sizes():
    fs = shipped_rows("cifar_fs_split.csv")
    assert [sum(r["split"] == s for r in fs) for s in ("train", "val", "test")] == [64, 16, 20]
    assert len({r["class"] for r in fs}) == 100 and len({r["superclass"] for r in fs}) == 20
    fc = shipped_rows("fc100_split.csv")
    assert [sum(r["split"] == s for r in fc) for s in ("train", "val", "test")] == [12, 4, 4]
    assert sorted(int(r["coarse_label"]) for r in fc if r["split"] == "test") == [0, 7, 12, 14]


def test_cifar_fs_and_fc100_from_the_binary_archive(tmp_path):
    data = cifar100(per_class=(4, 2))
    source = write_tree(tmp_path / "cifar-100-binary", cifar_binary_files(data), ".tar.gz")
    CifarFS().prepare(source, tmp_path / "cache")
    FC100().prepare(source, tmp_path / "cache")
    fs, fc = CifarFS().load(None, tmp_path / "cache"), FC100().load(None, tmp_path / "cache")
    assert [fs.split(s).n_classes for s in ("train", "val", "test")] == [64, 16, 20]
    assert [fc.split(s).n_classes for s in ("train", "val", "test")] == [60, 20, 20]
    assert fs.info["split"] == "bertinetto" and fc.info["split"] == "oreshkin-superclass"
    # every class keeps its train and test images (6 here, 600 in the real archive), at 32x32
    assert fs.split("test").class_counts.tolist() == [6] * 20 and fs.split("test").images.shape[1:] == (3, 32, 32)
    # the pixels of 'whale' are the archive's records of that class, in archive order
    test = fs.split("test")
    whale = data["fine_names"].index("whale")
    expected = np.concatenate([data[p]["data"][data[p]["fine"] == whale] for p in ("train", "test")])
    got = test.images[test.class_rows[test.class_names.index("whale")]].numpy().reshape(6, -1)
    assert np.array_equal(got, expected)
    # FC100: no test class shares a superclass with a training class
    coarse = {r["class"]: r["superclass"] for r in shipped_rows("cifar_fs_split.csv")}
    assert not {coarse[c] for c in fc.split("train").class_names} & {coarse[c] for c in fc.split("test").class_names}


def test_cifar_python_version_gives_the_same_cache_as_the_binary_one(tmp_path):
    data = cifar100(per_class=(2, 1))
    CifarFS().prepare(write_tree(tmp_path / "bin", cifar_binary_files(data)), tmp_path / "c1")
    CifarFS().prepare(write_tree(tmp_path / "py", cifar_python_files(data), ".tar.gz"), tmp_path / "c2")
    a, b = CifarFS().load(None, tmp_path / "c1"), CifarFS().load(None, tmp_path / "c2")
    assert a.info["content_fingerprint"] == b.info["content_fingerprint"]
    assert b.info["cifar_layout"].startswith("cifar-100-python")
    CifarFS(image_size=84).prepare(tmp_path / "bin", tmp_path / "c1")  # a second size beside the first
    big = CifarFS(image_size=84).load(None, tmp_path / "c1")
    assert big.split("val").images.shape[1:] == (3, 84, 84) and big.info["resize"] == "PIL LANCZOS"
    assert CifarFS().load(None, tmp_path / "c1").split("val").images.shape[1:] == (3, 32, 32)


class _Planted:
    """A pickle that, loaded with the plain loader, creates a folder (a stand-in for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_a_planted_pickle_never_runs(tmp_path):
    data = cifar100(per_class=(1, 1))
    files = cifar_python_files(data)
    marker = tmp_path / "pwned"
    files["cifar-100-python/train"] = pickle.dumps({b"data": _Planted(marker)}, protocol=4)
    pickle.loads(files["cifar-100-python/train"])  # control: the plain loader runs it
    assert marker.is_dir()
    marker.rmdir()
    source = write_tree(tmp_path / "py", files)
    with pytest.raises(DataError, match=r"cifar-100-python/train: refused to load (posix|os|nt)\.mkdir"):
        CifarFS().prepare(source, tmp_path / "cache")
    assert not marker.exists()
    line = one_line_error(invoke("prepare", "cifar-fs", "--from", str(source)))
    assert "refused to load" in line and not marker.exists()


def test_restricted_unpickler_reads_numpy_1_arrays_and_nothing_callable():
    from mtbench_zoo._sources import restricted_unpickle
    old = pickle.dumps({b"data": np.arange(6, dtype=np.uint8)}, protocol=3).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray")  # as numpy 1.x (and the CIFAR archive) wrote it
    assert b"numpy.core.multiarray" in old
    assert restricted_unpickle(old, "x")["data"].tolist() == [0, 1, 2, 3, 4, 5]
    for payload in (print, os.system, np.load):
        with pytest.raises(DataError, match="refused to load"):
            restricted_unpickle(pickle.dumps({"f": payload}), "x")


def test_cifar_archive_that_does_not_match_cifar100(tmp_path):
    data = cifar100(per_class=(1, 1))
    files = cifar_binary_files(data)
    files["cifar-100-binary/test.bin"] = files["cifar-100-binary/test.bin"][:-5]
    with pytest.raises(DataError, match=r"corrupt CIFAR-100 file .*test.bin: .* not a whole number"):
        CifarFS().prepare(write_tree(tmp_path / "a", files), tmp_path / "cache")
    data["train"]["coarse"] = (data["train"]["coarse"] + 1) % 20  # superclasses shuffled
    with pytest.raises(DataError, match="puts class .* in superclass"):
        FC100().prepare(write_tree(tmp_path / "b", cifar_binary_files(data)), tmp_path / "cache")


# --- CUB -----------------------------------------------------------------------------------------------

def test_shipped_cub_split_follows_chen_et_al_modulo_rule():
    split = chen_split()
    names = sorted(split)
    assert len(names) == 200 and [int(n[:3]) for n in names] == list(range(1, 201))
    rule = {i: "train" if i % 2 == 0 else "val" if i % 4 == 1 else "test" for i in range(200)}
    assert all(split[n] == rule[i] for i, n in enumerate(names))
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [100, 50, 50]


def test_cub_official_archive(tmp_path):
    source = write_tree(tmp_path / "CUB_200_2011", cub_files(CUB_NAMES), ".tgz")
    CUB().prepare(source, tmp_path / "cache")
    splits = CUB().load(None, tmp_path / "cache")
    assert splits.split("val").class_names == ("002.Laysan_Albatross", "006.Least_Auklet")
    assert splits.split("test").class_names == ("004.Groove_billed_Ani", "008.Rhinoceros_Auklet")
    assert splits.split("train").n_classes == 4 and splits.split("train").images.shape[1:] == (3, 84, 84)
    assert splits.info["split"] == "chen2019"


def test_cub_missing_metadata_corrupt_archive_and_foreign_classes(tmp_path):
    files = cub_files(CUB_NAMES)
    no_classes = {k: v for k, v in files.items() if not k.endswith("classes.txt") or "image_class" in k}
    with pytest.raises(DataError, match=r"CUB_200_2011/ has no classes.txt"):
        CUB().prepare(write_tree(tmp_path / "a", no_classes), tmp_path / "cache")
    tgz = write_tree(tmp_path / "CUB_200_2011", files, ".tgz")
    tgz.write_bytes(tgz.read_bytes()[:-300])
    with pytest.raises(DataError, match="corrupt archive .*CUB_200_2011.tgz"):
        CUB().prepare(tgz, tmp_path / "cache")
    files["CUB_200_2011/classes.txt"] += b"201 201.Dodo\n"
    with pytest.raises(DataError, match="'201.Dodo' .* is not one of the 200 official classes"):
        CUB().prepare(write_tree(tmp_path / "c", files), tmp_path / "cache")


# --- tieredImageNet -----------------------------------------------------------------------------------

def test_tiered_npz_layout_restricted_labels_and_bgr(tmp_path):
    files, rgb = tiered_npz_files({"train": 4, "val": 2, "test": 3})
    source = write_tree(tmp_path / "tiered", files, ".tar")
    TieredImageNet().prepare(source, tmp_path / "cache")
    splits = TieredImageNet().load(None, tmp_path / "cache")
    train = splits.split("train")
    assert np.array_equal(train.images.numpy(), rgb["train"].transpose(0, 3, 1, 2))  # BGR arrays stored as RGB
    assert np.array_equal(train.labels.numpy(), rgb["train_labels"])
    assert train.class_names == ("n00000000", "n00000001", "n00000002", "n00000003")
    files["tiered-imagenet/val_labels.pkl"] = pickle.dumps(_Planted(tmp_path / "pwned"))
    with pytest.raises(DataError, match="val_labels.pkl: refused to load"):
        TieredImageNet().prepare(write_tree(tmp_path / "evil", files), tmp_path / "cache")
    assert not (tmp_path / "pwned").exists()
    del files["tiered-imagenet/test_images.npz"]
    with pytest.raises(DataError, match="has no test_images.npz"):
        TieredImageNet().prepare(write_tree(tmp_path / "partial", files), tmp_path / "cache")


def test_tiered_folder_layout(mini, tmp_path):
    files, pixels = mini
    moved = {}
    for split in ("train", "val", "test"):
        for row in csv.DictReader(files[f"mini-imagenet/{split}.csv"].decode().splitlines()):
            moved[f"tiered/{split}/{row['label']}/{row['filename']}"] = files[f"mini-imagenet/images/{row['filename']}"]
    write_tree(tmp_path / "t_folder", moved)
    TieredImageNet().prepare(write_tree(tmp_path / "t", moved, ".zip"), tmp_path / "cache")
    splits = TieredImageNet().load(None, tmp_path / "cache")
    assert [splits.split(s).n_classes for s in ("train", "val", "test")] == [5, 2, 3]
    # a folder of symlinks (e.g. into an ImageNet copy) is read through the links
    linked = tmp_path / "linked"
    for split in ("train", "val", "test"):
        (linked / "tiered" / split).mkdir(parents=True)
        for wnid in (tmp_path / "t_folder" / "tiered" / split).iterdir():
            (linked / "tiered" / split / wnid.name).symlink_to(wnid)
    TieredImageNet().prepare(linked, tmp_path / "cache2")
    assert TieredImageNet().load(None, tmp_path / "cache2").info["content_fingerprint"] == \
        splits.info["content_fingerprint"]
    del_val = {k: v for k, v in moved.items() if "/val/" not in k}
    with pytest.raises(DataError, match="has no val/ folder"):
        TieredImageNet().prepare(write_tree(tmp_path / "u", del_val), tmp_path / "cache")


RSS_SCRIPT = """
import json, sys
import numpy as np
from mtbench.episode import EpisodeSampler
from mtbench_zoo.tiered_imagenet import TieredImageNet

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

def reset_peak():
    try:
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass

source, cache, step = sys.argv[1:]
if step == "load":  # warm-up: the first tensor operations load library code; do them before the baseline
    import torch
    from mtbench.data import LabeledImages
    warm = LabeledImages(torch.zeros(10, 3, 84, 84, dtype=torch.uint8), torch.arange(5).repeat(2),
                         tuple("abcde"))
    EpisodeSampler(warm, 5, 1, 1, seed=0)[0]
reset_peak()
base = status()
if step == "prepare":
    TieredImageNet().prepare(source, cache)
    print(json.dumps({"base": base, "peak": status()}))
    sys.exit()
train = TieredImageNet().load(None, cache).split("train")
sampler = EpisodeSampler(train, 5, 1, 5, seed=0)
ok = True
for i in range(4):
    classes, rows = sampler.indices(i)
    episode = sampler[i]
    r = int(rows[0, 0])  # the source pixel of (row, y, x, c) is (7 row + 3 (84 y + x) + c) % 251, stored BGR
    flat = (7 * r + np.arange(84 * 84 * 3)) % 251
    expected = flat.reshape(84, 84, 3)[..., ::-1].transpose(2, 0, 1) / 255.0
    ok &= bool(np.allclose(episode.support_x[0].numpy(), expected, atol=1e-6))
peak = status()
largest = int(train.images.max())  # control: reading every row does show up in RSS
print(json.dumps({"base": base, "peak": peak, "after_full_read": status(), "ok": ok}))
"""


def test_tiered_imagenet_is_memory_mapped_not_read_into_ram(tmp_path):
    """~200 MB of images: prepare streams it, loading and sampling episodes touches a few MB of it."""
    array_bytes = write_large_tiered_npz(tmp_path / "tiered", rows=9500)
    assert array_bytes > 190e6
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def measure(step: str) -> dict:
        done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "tiered"), str(tmp_path / "cache"),
                               step], capture_output=True, text=True, env=env, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    prepared = measure("prepare")
    assert prepared["peak"]["VmHWM"] - prepared["base"]["VmRSS"] < 0.25 * array_bytes
    loaded = measure("load")
    assert loaded["ok"]
    # 4 episodes gather 120 rows (2.5 MB); the kernel maps up to 64 KB around each touched page, and the
    # first tensor operations load library code: about 25 MB in all
    assert loaded["peak"]["VmHWM"] - loaded["base"]["VmRSS"] < 0.2 * array_bytes
    assert loaded["after_full_read"]["VmRSS"] - loaded["base"]["VmRSS"] > 0.8 * array_bytes


# --- backbones ----------------------------------------------------------------------------------------

def conv_bn_params(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0) + 2 * c_out


def test_conv4_84_and_resnet12_sizes():
    conv4 = BACKBONES["conv4-84"]((3, 84, 84))
    expected = conv_bn_params(3, 64, 3, True) + 3 * conv_bn_params(64, 64, 3, True)
    assert sum(p.numel() for p in conv4.parameters()) == expected == 113_088
    assert conv4(torch.rand(2, 3, 84, 84)).shape == (2, 1600) and conv4.out_dim == 1600
    resnet = BACKBONES["resnet12"]((3, 84, 84))
    widths = [3, 64, 160, 320, 640]
    expected = sum(conv_bn_params(a, b, 3, False) + 2 * conv_bn_params(b, b, 3, False) + conv_bn_params(a, b, 1, False)
                   for a, b in zip(widths, widths[1:]))
    assert sum(p.numel() for p in resnet.parameters()) == expected == 12_424_320
    assert resnet(torch.rand(2, 3, 84, 84)).shape == (2, 640)
    assert BACKBONES["resnet12-narrow"]((3, 84, 84)).out_dim == 512
    with pytest.raises(ValueError, match="conv4-84 needs"):
        BACKBONES["conv4-84"]((1, 8, 8))


def test_resnet12_block_is_residual():
    """With the residual branch's last BatchNorm scaled to zero, a block is shortcut -> LeakyReLU -> pool."""
    torch.manual_seed(0)
    net = ResNet12((3, 20, 20), widths=(8, 8, 8, 8))
    net(torch.randn(4, 3, 20, 20)).sum().backward()  # gradients reach the first convolution
    assert float(net.features[0].body[0].weight.grad.abs().sum()) > 0
    net.eval()
    block = net.features[0]
    x = torch.randn(2, 3, 20, 20)
    full = block(x)
    with torch.no_grad():
        block.body[-1].weight.zero_()
        block.body[-1].bias.zero_()
    expected = torch.nn.functional.max_pool2d(torch.nn.functional.leaky_relu(block.shortcut(x), 0.1), 2)
    assert torch.allclose(block(x), expected) and not torch.allclose(full, expected)

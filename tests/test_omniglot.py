"""The Omniglot reader on archives built here in the official layout, plus the real data."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from mtbench import DataError
from mtbench_zoo.omniglot import Omniglot

from omniglot_archive import LAYOUT, write_omniglot


def test_reads_zipped_archives_with_vinyals_split(tiny_omniglot, tmp_path):
    splits = Omniglot().load(tiny_omniglot, tmp_path / "cache")
    train, val, test = (splits.split(s) for s in ("train", "val", "test"))
    assert (train.n_classes, val.n_classes, test.n_classes) == (5 * 4, 2 * 4, 5 * 4)  # rotations as classes
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.class_counts.tolist() == [20] * 20
    assert train.class_names[:2] == ("Alpha/character01/rot000", "Alpha/character01/rot090")
    # ink = 1: strokes are bright on a dark page
    assert train.images.float().mean() < 60
    # the 90-degree class is the 0-degree class rotated counter-clockwise
    rows0, rows90 = train.class_rows[0], train.class_rows[1]
    assert torch.equal(torch.rot90(train.images[rows0], 1, dims=(-2, -1)), train.images[rows90])
    assert splits.info["split_source"] == "<data dir>/omniglot/splits/vinyals"  # no path of this machine in results


def test_extracted_folders_give_the_same_images(tiny_omniglot, tmp_path):
    zipped = Omniglot().load(tiny_omniglot, tmp_path / "c1").split("test")
    extracted_root = tmp_path / "extracted"
    write_omniglot(extracted_root, zipped=False)
    shutil.copytree(tiny_omniglot / "omniglot" / "splits", extracted_root / "omniglot" / "splits")
    extracted = Omniglot().load(extracted_root, tmp_path / "c2").split("test")
    assert torch.equal(zipped.images, extracted.images) and torch.equal(zipped.labels, extracted.labels)


def test_lake_split_uses_background_and_evaluation_sets(tiny_omniglot, tmp_path):
    splits = Omniglot(split="lake").load(tiny_omniglot, tmp_path / "cache")
    n_background = sum(LAYOUT["images_background"].values())
    n_evaluation = sum(LAYOUT["images_evaluation"].values())
    assert splits.split("train").n_classes == n_background  # no rotations by default
    assert splits.split("test").n_classes == n_evaluation
    assert splits.splits["val"] is None


def test_prepared_cache_makes_the_second_load_fast(tiny_omniglot, tmp_path):
    cache = tmp_path / "cache"
    Omniglot().load(tiny_omniglot, cache)
    assert len(list(cache.glob("omniglot-28px-*.npz"))) == 1
    start = time.perf_counter()
    Omniglot().load(tiny_omniglot, cache)
    assert time.perf_counter() - start < 1.0


def test_missing_archive_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"Omniglot not found: no images_background.zip or images_evaluation.zip.*"
                                        r"mtbench download omniglot"):
        Omniglot().load(tmp_path, tmp_path / "cache")


def test_corrupt_archive_is_a_clear_error(tiny_omniglot, tmp_path):
    archive = tiny_omniglot / "omniglot" / "raw" / "images_evaluation.zip"
    archive.write_bytes(archive.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"corrupt archive .*images_evaluation.zip.*mtbench download omniglot"):
        Omniglot().load(tiny_omniglot, tmp_path / "cache")


def test_characters_missing_from_the_split_file_are_reported(tiny_omniglot, tmp_path):
    split_dir = tiny_omniglot / "omniglot" / "splits" / "vinyals"
    (split_dir / "test.txt").write_text("")
    with pytest.raises(DataError, match="not in the Vinyals split"):
        Omniglot().load(tiny_omniglot, tmp_path / "cache")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tiny_omniglot):
    """Serves the test-built archives over HTTP on localhost (never the internet)."""
    handler = partial(_QuietHandler, directory=str(tiny_omniglot / "omniglot" / "raw"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tiny_omniglot / "omniglot" / "raw"
    server.shutdown()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_checksums(local_server, tmp_path):
    url, served = local_server
    sums = {name: md5(served / f"{name}.zip") for name in LAYOUT}
    paths = Omniglot().download(tmp_path / "data", mirror=url, md5=sums)
    assert [p.name for p in paths] == ["images_background.zip", "images_evaluation.zip"]
    assert all(md5(p) == sums[p.stem] for p in paths)
    splits = Omniglot(split="lake").load(tmp_path / "data", tmp_path / "cache")
    assert splits.split("test").n_classes == 5


def test_download_with_a_wrong_checksum_keeps_nothing(local_server, tmp_path):
    url, _ = local_server
    with pytest.raises(DataError, match="checksum mismatch"):
        Omniglot().download(tmp_path / "data", mirror=url, md5={"images_background": "0" * 32})
    assert not list((tmp_path / "data").rglob("*.zip")) and not list((tmp_path / "data").rglob("*.part"))


def test_download_from_an_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        Omniglot().download(tmp_path, mirror="http://127.0.0.1:9", md5={})


def test_real_omniglot_vinyals_split(data_root, tmp_path):
    splits = Omniglot().load(data_root, Path(tmp_path / "cache"))
    counts = {s: splits.split(s).n_classes for s in ("train", "val", "test")}
    assert counts == {"train": 4112, "val": 688, "test": 1692}
    assert all(int(splits.split(s).class_counts.min()) == 20 for s in counts)
    # pixel-exact against the dataset's own 28x28 LANCZOS arrays
    ref = np.load(data_root / "omniglot" / "omniglot28.npz")
    test = splits.split("test")
    name = test.class_names[0]
    assert name.endswith("/rot000")
    label = list(ref["char_paths"]).index(name.rsplit("/", 1)[0])
    expected = ref["images"][ref["labels"] == label]
    assert np.array_equal(test.images[test.class_rows[0], 0].numpy(), expected)

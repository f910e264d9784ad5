"""Omniglot (Lake et al. 2015) read from the official download layout.

Reads ``images_background.zip`` and ``images_evaluation.zip`` (zipped or extracted), resizes each 105x105
drawing to ``image_size`` with LANCZOS and stores ink as 1 (``255 - grey``), then caches the arrays so
later loads take well under a second.

Splits:

* ``vinyals`` (Vinyals et al. 2016; Snell et al. 2017): 1028 / 172 / 423 characters for train / val /
  test; with ``rotations`` each character's 0/90/180/270 degree rotations are separate classes
  (4112 / 688 / 1692 classes). Rotations are applied to the resized images (``torch.rot90``,
  counter-clockwise), as learn2learn does; rotate-then-resize differs by a few grey levels at 90/270.
* ``lake``: background set (964 characters) for training, evaluation set (659) for testing, no val.
"""
from __future__ import annotations

import csv
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from mtbench import DataError, Dataset, DatasetSplits, LabeledImages, hookimpl
from mtbench.download import fetch

from ._images import cached_arrays, decode, decode_error, files_fingerprint, fingerprint

ARCHIVES = ("images_background", "images_evaluation")
OFFICIAL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
OFFICIAL_MD5 = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
                "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
SHIPPED_SPLIT = Path(__file__).parent / "data" / "omniglot_vinyals_split.csv"
READER_VERSION = 1


def candidate_dirs(data_dir: Path) -> list[Path]:
    return [data_dir / "omniglot" / "raw", data_dir / "omniglot", data_dir]


def locate(data_dir: Path) -> dict[str, Path]:
    """Find each archive as ``NAME.zip`` or an extracted ``NAME/`` folder."""
    found: dict[str, Path] = {}
    for name in ARCHIVES:
        for folder in candidate_dirs(data_dir):
            for path in (folder / f"{name}.zip", folder / name):
                if path.exists() and name not in found:
                    found[name] = path
    missing = [n for n in ARCHIVES if n not in found]
    if missing:
        looked = ", ".join(str(d) for d in candidate_dirs(data_dir))
        raise DataError(f"Omniglot not found: no {' or '.join(m + '.zip' for m in missing)} (zipped or extracted) "
                        f"in {looked}; point MTBENCH_DATA or --data-dir at the folder holding omniglot/, or "
                        f"run `mtbench download omniglot`")
    return found


def _members(path: Path) -> list[tuple[str, bytes | Path]]:
    """(relative name, bytes or file path) of every PNG, in sorted order."""
    if path.is_dir():
        return [(str(p.relative_to(path.parent)), p) for p in sorted(path.rglob("*.png"))]
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith(".png"))
            return [(n, zf.read(n)) for n in names]
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DataError(f"corrupt archive {path} ({type(exc).__name__}: {exc}); delete it and run "
                        f"`mtbench download omniglot`, or copy the official zip there") from None


def read_archive(path: Path, set_index: int, size: int) -> dict[str, np.ndarray]:
    """All drawings of one archive: images [n, size, size] (ink = 255), character path, drawer, set."""
    images, chars, drawers = [], [], []
    for name, blob in _members(path):
        parts = name.replace("\\", "/").split("/")
        if len(parts) < 4:
            continue
        alphabet, character, filename = parts[-3], parts[-2], parts[-1]
        try:
            data = blob.read_bytes() if isinstance(blob, Path) else blob
            images.append(decode(data, size, channels=1, invert=True)[0])
            drawers.append(int(filename.rsplit("_", 1)[1].split(".")[0]))
        except Exception as exc:
            raise decode_error(path, name, exc, "delete the archive and download it again") from None
        chars.append(f"{alphabet}/{character}")
    if not images:
        raise DataError(f"archive {path} holds no Omniglot PNGs (expected {path.stem}/ALPHABET/characterNN/*.png)")
    return {"images": np.stack(images), "chars": np.array(chars), "drawers": np.array(drawers, dtype=np.int16),
            "sets": np.full(len(images), set_index, dtype=np.int8)}


def read_split_file(data_dir: Path) -> tuple[dict[str, str], str]:
    """Character -> split from the data dir's Vinyals files if present, else from the shipped copy."""
    folder = data_dir / "omniglot" / "splits" / "vinyals"
    mapping: dict[str, str] = {}
    if all((folder / f"{s}.txt").exists() for s in ("train", "val", "test")):
        for split in ("train", "val", "test"):
            for line in (folder / f"{split}.txt").read_text().split():
                character = line.rsplit("/", 1)[0]
                if mapping.setdefault(character, split) != split:
                    raise DataError(f"split files in {folder} put character {character!r} in both "
                                    f"{mapping[character]!r} and {split!r}; a class must be in one split only")
        # recorded relative to the data folder: a result names where the split came from, not this machine's paths
        return mapping, "<data dir>/omniglot/splits/vinyals"
    with SHIPPED_SPLIT.open() as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        mapping = {row["character"]: row["split"] for row in rows}
    return mapping, "mtbench-zoo shipped copy of the prototypical-networks Vinyals split"


def build_split(images: np.ndarray, chars: np.ndarray, drawers: np.ndarray, chosen: list[str],
                rotations: bool) -> LabeledImages:
    """The drawings of ``chosen`` characters; with rotations, 4 classes per character."""
    index = {c: i for i, c in enumerate(chosen)}
    keep = np.array([c in index for c in chars])
    order = np.lexsort((drawers[keep], [index[c] for c in chars[keep]]))
    imgs = torch.from_numpy(images[keep][order]).unsqueeze(1)
    labels = torch.tensor([index[c] for c in chars[keep][order]], dtype=torch.long)
    if not rotations:
        return LabeledImages(imgs, labels, tuple(chosen))
    rotated = torch.cat([torch.rot90(imgs, k, dims=(-2, -1)) for k in range(4)])
    rot_labels = torch.cat([labels * 4 + k for k in range(4)])
    names = tuple(f"{c}/rot{90 * k:03d}" for c in chosen for k in range(4))
    return LabeledImages(rotated.contiguous(), rot_labels, names)


class Omniglot(Dataset):
    """Omniglot characters; ``split`` is ``vinyals`` or ``lake``; rotations default on for vinyals."""

    name = "omniglot"
    task = "classification"

    def __init__(self, split: str = "vinyals", rotations: bool | None = None, image_size: int = 28) -> None:
        self.split = split
        self.rotations = rotations
        self.image_size = image_size

    def fingerprint(self, data_dir: Path | None) -> str:
        """Sizes and modification times of the archives (or of every extracted file) and the split files."""
        if data_dir is None:
            return ""
        found = locate(Path(data_dir))
        splits = Path(data_dir) / "omniglot" / "splits" / "vinyals"
        return files_fingerprint(Path(data_dir), [*found.values(), *([splits] if splits.is_dir() else [])])

    def arrays(self, data_dir: Path, cache_dir: Path) -> dict[str, np.ndarray]:
        found = locate(Path(data_dir))
        key = fingerprint(list(found.values()), size=self.image_size, version=READER_VERSION)
        path = Path(cache_dir) / f"omniglot-{self.image_size}px-{key}.npz"

        def build() -> dict[str, np.ndarray]:
            parts = [read_archive(found[name], i, self.image_size) for i, name in enumerate(ARCHIVES)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return cached_arrays(path, build)

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        if self.split not in ("vinyals", "lake"):
            raise DataError(f"omniglot split {self.split!r} is unknown; use 'vinyals' or 'lake'")
        if data_dir is None:
            raise DataError("no data directory: set MTBENCH_DATA or pass --data-dir")
        arr = self.arrays(Path(data_dir), cache_dir)
        chars, sets, drawers = arr["chars"], arr["sets"], arr["drawers"]
        all_chars = sorted(set(chars.tolist()))
        rotations = (self.split == "vinyals") if self.rotations is None else bool(self.rotations)
        if self.split == "vinyals":
            mapping, source = read_split_file(Path(data_dir))
            unknown = [c for c in all_chars if c not in mapping]
            if unknown:
                raise DataError(f"{len(unknown)} Omniglot characters (e.g. {unknown[0]!r}) are not in the Vinyals "
                                f"split ({source}); the archives do not match the official layout")
            groups = {s: [c for c in all_chars if mapping[c] == s] for s in ("train", "val", "test")}
        else:
            source = "Lake et al. background (train) / evaluation (test) sets"
            set_of = dict(zip(chars.tolist(), sets.tolist()))
            groups = {"train": [c for c in all_chars if set_of[c] == 0], "val": [],
                      "test": [c for c in all_chars if set_of[c] == 1]}
        splits = {s: build_split(arr["images"], chars, drawers, cs, rotations) if cs else None
                  for s, cs in groups.items()}
        info = {"split": self.split, "split_source": source, "rotations_as_classes": rotations,
                "image_size": self.image_size, "resize": "PIL LANCZOS, ink = 1",
                **{f"{s}_characters": len(cs) for s, cs in groups.items()}}
        return DatasetSplits(splits, info)

    def download(self, data_dir: Path, mirror: str = OFFICIAL,
                 md5: dict[str, str] | None = None) -> list[Path]:
        """Fetch the two official archives into ``data_dir/omniglot/raw`` (md5-verified)."""
        sums = OFFICIAL_MD5 if md5 is None else md5
        target = Path(data_dir) / "omniglot" / "raw"
        return [fetch(f"{mirror.rstrip('/')}/{name}.zip", target / f"{name}.zip", md5=sums.get(name))
                for name in ARCHIVES]


@hookimpl
def register_datasets(register):
    register(Omniglot)

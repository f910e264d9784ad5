"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018), both cut from CIFAR-100.

Both use all 600 images of each fine class (CIFAR-100's train and test sets together) and differ only in
the class split, shipped in ``data/``:

* ``cifar-fs``: 64 / 16 / 20 fine classes drawn across superclasses (``cifar_fs_split.csv``);
* ``fc100``: 12 / 4 / 4 whole superclasses, i.e. 60 / 20 / 20 fine classes (``fc100_split.csv``), so test
  classes share no superclass with training classes.

Accepted sources (folder, or the archive as downloaded):

* ``cifar-100-binary``: ``train.bin`` and ``test.bin`` (records of 1 coarse byte, 1 fine byte, 3072 pixel
  bytes) with ``fine_label_names.txt`` and ``coarse_label_names.txt``. Preferred: nothing to unpickle.
* ``cifar-100-python``: ``train``, ``test`` and ``meta`` are pickles. They are read with
  :func:`restricted_unpickle`, which admits only dicts, lists, strings, numbers and numpy arrays: a
  planted pickle that names any other callable is refused before it runs.

Images stay at CIFAR's native 32x32 by default (the size both papers use); ``image_size`` resizes with
LANCZOS.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from mtbench import DataError, hookimpl
from mtbench.progress import Reporter

from ._prepared import PreparedDataset, SplitLayout, read_text
from ._sources import Source, restricted_unpickle

DATA = Path(__file__).parent / "data"
BINARY_FILES = ("train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt")
PYTHON_FILES = ("train", "test", "meta")
RECORD = 1 + 1 + 3072


def shipped_rows(filename: str) -> list[dict[str, str]]:
    with (DATA / filename).open() as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def fine_to_coarse() -> dict[str, str]:
    """CIFAR-100 fine class -> superclass (the shipped CIFAR-FS file lists every class with its superclass)."""
    return {row["class"]: row["superclass"] for row in shipped_rows("cifar_fs_split.csv")}


class Cifar100:
    """All 60,000 CIFAR-100 images: pixels uint8 [n, 3, 32, 32], fine and coarse labels, label names."""

    def __init__(self, pixels: np.ndarray, fine: np.ndarray, coarse: np.ndarray, fine_names: list[str],
                 coarse_names: list[str]) -> None:
        self.pixels, self.fine, self.coarse = pixels, fine.astype(np.int64), coarse.astype(np.int64)
        self.fine_names, self.coarse_names = fine_names, coarse_names

    @classmethod
    def read(cls, src: Source) -> tuple["Cifar100", str]:
        """From the binary layout when the source holds ``*.bin`` files, else from the python layout."""
        if any(n.endswith((".bin",)) for n in src.names()):
            return cls.read_binary(src), "cifar-100-binary"
        return cls.read_python(src), "cifar-100-python (restricted unpickler)"

    @classmethod
    def read_binary(cls, src: Source) -> "Cifar100":
        root = src.root(list(BINARY_FILES), "cifar-100-binary: train.bin, test.bin and the label name files")
        blobs = src.read_many([root + f for f in BINARY_FILES])
        parts = []
        for split in ("train.bin", "test.bin"):
            blob = blobs[root + split]
            if not blob or len(blob) % RECORD:
                raise DataError(f"corrupt CIFAR-100 file {src.path}/{root}{split}: {len(blob)} bytes is not a "
                                f"whole number of {RECORD}-byte records")
            parts.append(np.frombuffer(blob, dtype=np.uint8).reshape(-1, RECORD))
        records = np.concatenate(parts)
        names = read_text(src, [root + "fine_label_names.txt", root + "coarse_label_names.txt"])
        fine_names, coarse_names = ([line.strip() for line in names[root + f].splitlines() if line.strip()]
                                    for f in ("fine_label_names.txt", "coarse_label_names.txt"))
        return cls._checked(src, records[:, 2:].reshape(-1, 3, 32, 32), records[:, 1], records[:, 0],
                            fine_names, coarse_names)

    @classmethod
    def read_python(cls, src: Source) -> "Cifar100":
        root = src.root(list(PYTHON_FILES), "cifar-100-python: train, test and meta (or use cifar-100-binary)")
        blobs = src.read_many([root + f for f in PYTHON_FILES])
        loaded = {f: restricted_unpickle(blobs[root + f], f"{src.path}/{root}{f}") for f in PYTHON_FILES}
        for f, value in loaded.items():
            need = ("fine_label_names", "coarse_label_names") if f == "meta" else ("data", "fine_labels",
                                                                                    "coarse_labels")
            if not isinstance(value, dict) or any(k not in value for k in need):
                raise DataError(f"{src.path}/{root}{f} is not a CIFAR-100 file (expected a dict with "
                                f"{', '.join(need)})")
        data = [np.asarray(loaded[f]["data"]) for f in ("train", "test")]
        if any(d.dtype != np.uint8 or d.ndim != 2 or d.shape[1] != 3072 for d in data):
            raise DataError(f"CIFAR-100 python files in {src.path}/{root} do not hold uint8 [n, 3072] pixel arrays")
        labels = {k: np.concatenate([np.asarray(loaded[f][k], dtype=np.int64) for f in ("train", "test")])
                  for k in ("fine_labels", "coarse_labels")}
        names = {k: [v.decode() if isinstance(v, bytes) else str(v) for v in loaded["meta"][k]]
                 for k in ("fine_label_names", "coarse_label_names")}
        return cls._checked(src, np.concatenate(data).reshape(-1, 3, 32, 32), labels["fine_labels"],
                            labels["coarse_labels"], names["fine_label_names"], names["coarse_label_names"])

    @classmethod
    def _checked(cls, src: Source, pixels: np.ndarray, fine: np.ndarray, coarse: np.ndarray,
                 fine_names: list[str], coarse_names: list[str]) -> "Cifar100":
        if len(fine_names) != 100 or len(coarse_names) != 20:
            raise DataError(f"CIFAR-100 in {src.path} names {len(fine_names)} fine and {len(coarse_names)} coarse "
                            f"classes; expected 100 and 20")
        if len(fine) != len(pixels) or len(coarse) != len(pixels) or fine.max(initial=0) >= 100 \
                or coarse.max(initial=0) >= 20:
            raise DataError(f"corrupt CIFAR-100 labels in {src.path} (labels out of range or not one per image)")
        expected = fine_to_coarse()
        for f, c in sorted(set(zip(fine.tolist(), coarse.tolist()))):
            if expected.get(fine_names[f]) != coarse_names[c]:
                raise DataError(f"CIFAR-100 in {src.path} puts class {fine_names[f]!r} in superclass "
                                f"{coarse_names[c]!r}; the official archive puts it in {expected.get(fine_names[f])!r}")
        return cls(pixels, fine, coarse, fine_names, coarse_names)


class CifarFS(PreparedDataset):
    """CIFAR-FS: Bertinetto et al. 2019's 64 / 16 / 20 classes of CIFAR-100."""

    name = "cifar-fs"
    title = "CIFAR-FS"
    hint = "the CIFAR-100 archive, binary (train.bin, test.bin) or python (train, test, meta) version"
    source_names = ("cifar-100-binary", "cifar-100-binary.tar.gz", "cifar-100-python", "cifar-100-python.tar.gz")
    split_name: ClassVar[str] = "bertinetto"
    split_file: ClassVar[str] = "cifar_fs_split.csv"

    def __init__(self, image_size: int = 32) -> None:
        super().__init__(image_size)

    def split_of_class(self) -> dict[str, str]:
        return {row["class"]: row["split"] for row in shipped_rows(self.split_file)}

    def convert(self, src: Source, cache_dir: Path, reporter: Reporter) -> Path:
        cifar, layout = Cifar100.read(src)
        split_of = self.split_of_class()
        missing = sorted(set(split_of) - set(cifar.fine_names))
        if missing:
            raise DataError(f"CIFAR-100 in {src.path} has no class {missing[0]!r} of the {self.title} split")
        layouts, rows = {}, {}
        for split in ("train", "val", "test"):
            classes = sorted(c for c, s in split_of.items() if s == split)
            per_class = [np.flatnonzero(cifar.fine == cifar.fine_names.index(c)) for c in classes]
            rows[split] = np.concatenate(per_class)  # class by class, archive order within a class
            layouts[split] = SplitLayout(classes, np.repeat(np.arange(len(classes)), [len(p) for p in per_class]))
        info = self.source_info(src, self.split_name, f"mtbench-zoo data/{self.split_file}",
                                notes={"cifar_layout": layout, "images": "CIFAR-100 train + test (600 per class)",
                                       "resize": "none (32x32)" if self.image_size == 32 else "PIL LANCZOS"})
        with self.writer(cache_dir, layouts) as out:
            with reporter.task(f"{self.title}: writing images", total=sum(len(r) for r in rows.values())) as advance:
                for split, picked in rows.items():
                    for row, index in enumerate(picked):
                        out.put(split, row, self.resized(cifar.pixels[index]))
                        advance()
            return out.commit(info)

    def resized(self, image: np.ndarray) -> np.ndarray:
        if self.image_size == 32:
            return image
        pil = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
        return np.asarray(pil.resize((self.image_size, self.image_size), Image.LANCZOS)).transpose(2, 0, 1)


class FC100(CifarFS):
    """FC100: Oreshkin et al. 2018's superclass split of CIFAR-100 (12 / 4 / 4 superclasses)."""

    name = "fc100"
    title = "FC100"
    split_name = "oreshkin-superclass"
    split_file = "fc100_split.csv"

    def split_of_class(self) -> dict[str, str]:
        by_super = {row["superclass"]: row["split"] for row in shipped_rows(self.split_file)}
        return {fine: by_super[coarse] for fine, coarse in fine_to_coarse().items()}


@hookimpl
def register_datasets(register):
    register(CifarFS)
    register(FC100)

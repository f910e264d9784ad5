"""Prepared caches: a dataset converted once into memory-mappable uint8 arrays, then opened without reading.

``mtbench prepare NAME --from PATH`` decodes the user's files once into
``$MTBENCH_CACHE/prepared/NAME-SIZEpx/``: per split, ``SPLIT_images.npy`` (uint8 [n, C, S, S], written
through a memory map, so even tieredImageNet's ~16 GB never sits in RAM) and ``SPLIT_labels.npy``, plus
``meta.json`` (class names, the split used and where it came from, a fingerprint of the source and of
the content). Loading opens the image arrays with ``np.load(mmap_mode="c")``: an episode reads only the
rows it gathers. The content fingerprint hashes one digest per image (computed while writing, so the
order in which an archive delivers images does not matter) with the labels and class names.

The conversion is written into a temporary folder and moved into place only when complete, so an
interrupted or failed prepare never leaves a half cache that a later load would trust.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import numpy as np
import torch

from mtbench import DataError, Dataset, DatasetSplits, LabeledImages
from mtbench.progress import Reporter

from ._images import decode, decode_error
from ._sources import Source

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def prepared_dir(cache_dir: Path, name: str, image_size: int) -> Path:
    return Path(cache_dir) / "prepared" / f"{name}-{image_size}px"


@dataclass
class SplitLayout:
    """The rows of one split: class names, and one label (index into ``classes``) per row."""

    classes: list[str]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)


@dataclass
class FilePlan:
    """Which member of the source becomes which row of which split (for datasets of image files)."""

    splits: dict[str, SplitLayout]
    rows: dict[str, tuple[str, int]] = field(default_factory=dict)  # member name -> (split, row)

    @classmethod
    def from_members(cls, members: dict[str, list[tuple[str, str]]]) -> "FilePlan":
        """``members[split]`` = [(member name, class name), ...]; classes sorted by name, rows by member."""
        splits, rows = {}, {}
        for split, pairs in members.items():
            pairs = sorted(pairs, key=lambda p: (p[1], p[0]))
            classes = sorted({c for _, c in pairs})
            index = {c: i for i, c in enumerate(classes)}
            splits[split] = SplitLayout(classes, np.array([index[c] for _, c in pairs]))
            rows.update({name: (split, row) for row, (name, _) in enumerate(pairs)})
        return cls(splits, rows)


def row_digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def content_fingerprint(splits: dict[str, SplitLayout], digests: dict[str, np.ndarray]) -> str:
    """sha256 over split names, class names, labels and per-image digests, in row order."""
    h = hashlib.sha256()
    for split in sorted(splits):
        h.update(split.encode())
        h.update(json.dumps(splits[split].classes).encode())
        h.update(splits[split].labels.tobytes())
        h.update(digests[split].tobytes())
    return h.hexdigest()[:16]


class PreparedWriter:
    """Writes the arrays of a prepared cache through memory maps into a temporary folder; ``commit`` moves
    it into place. Used as a context manager, a failure removes the temporary folder."""

    def __init__(self, cache_dir: Path, name: str, image_size: int, channels: int,
                 splits: dict[str, SplitLayout]) -> None:
        self.final = prepared_dir(cache_dir, name, image_size)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        need = sum(len(layout.labels) for layout in splits.values()) * channels * image_size ** 2
        free = shutil.disk_usage(self.final.parent).free
        if need > free:
            raise DataError(f"preparing {name} needs {need / 1e9:.1f} GB in {self.final.parent}, which has "
                            f"{free / 1e9:.1f} GB free; point MTBENCH_CACHE at a larger disk")
        self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}-"))
        self.splits, self.image_size, self.channels = splits, image_size, channels
        self.files: dict[str, tuple[int, int]] = {}  # split -> (file descriptor, offset of row 0)
        self.digests: dict[str, np.ndarray] = {}
        self.filled: dict[str, np.ndarray] = {}
        for split, layout in splits.items():
            n = len(layout.labels)
            shape = (n, channels, image_size, image_size)
            path = self.tmp / f"{split}_images.npy"
            if n == 0:  # a split without classes (no val): an empty array, which cannot be memory-mapped
                np.save(path, np.zeros(shape, dtype=np.uint8))
            else:  # header + sparse file; rows then go in with pwrite, so written pages never count as our RSS
                offset = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape).offset
                self.files[split] = (os.open(path, os.O_WRONLY), offset)
            np.save(self.tmp / f"{split}_labels.npy", layout.labels)
            self.digests[split] = np.zeros((n, 16), dtype=np.uint8)
            self.filled[split] = np.zeros(n, dtype=bool)

    def __enter__(self) -> "PreparedWriter":
        return self

    def close(self) -> None:
        for fd, _ in self.files.values():
            os.close(fd)
        self.files.clear()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.close()
        shutil.rmtree(self.tmp, ignore_errors=True)  # after a commit the folder has moved: nothing to remove

    def put(self, split: str, row: int, image: np.ndarray) -> None:
        """Store one uint8 [C, S, S] image."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        if image.shape != (self.channels, self.image_size, self.image_size):
            raise DataError(f"internal: image of shape {image.shape} for a {self.image_size}px cache")
        fd, offset = self.files[split]
        try:
            written = os.pwrite(fd, image.tobytes(), offset + row * image.nbytes)
        except OSError as exc:
            raise DataError(f"could not write the prepared cache in {self.tmp.parent} ({exc})") from None
        if written != image.nbytes:
            raise DataError(f"could not write the prepared cache in {self.tmp.parent} (short write: disk full?)")
        self.digests[split][row] = np.frombuffer(row_digest(image), dtype=np.uint8)
        self.filled[split][row] = True

    def commit(self, info: dict[str, Any]) -> Path:
        for split, filled in self.filled.items():
            if not filled.all():
                raise DataError(f"prepare did not fill row {int(np.argmin(filled))} of split {split!r}; the source "
                                f"lost files while it was read")
        self.close()
        meta = {"format": FORMAT_VERSION, "image_size": self.image_size, "channels": self.channels,
                "content_fingerprint": content_fingerprint(self.splits, self.digests),
                "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info,
                "splits": {s: {"classes": layout.classes, "examples": int(len(layout.labels))}
                           for s, layout in self.splits.items()}}
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}-old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def advise_random(array: np.memmap) -> None:
    """Episodes gather scattered rows: tell the kernel not to read ahead around each one, which from a
    cold disk would fetch ~128 KB per 21 KB image."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


def load_prepared(folder: Path, channels: int) -> tuple[dict[str, LabeledImages | None], dict[str, Any]]:
    """The splits of a prepared cache as memory-mapped LabeledImages, and its metadata."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"prepared cache {folder} has an unreadable meta.json ({exc}); run `mtbench prepare` "
                        f"again") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"prepared cache {folder} has format {meta.get('format')}, this mtbench reads "
                        f"{FORMAT_VERSION}; run `mtbench prepare` again")
    size = meta["image_size"]
    splits: dict[str, LabeledImages | None] = {s: None for s in SPLITS}
    for split, spec in meta["splits"].items():
        expected = (spec["examples"], channels, size, size)
        if not expected[0]:
            continue
        try:
            # copy-on-write map: a writable tensor view whose pages are read only when touched
            images = np.load(folder / f"{split}_images.npy", mmap_mode="c", allow_pickle=False)
            labels = np.load(folder / f"{split}_labels.npy", allow_pickle=False)
            advise_random(images)
        except (OSError, ValueError) as exc:
            raise DataError(f"prepared cache {folder} is damaged ({split}: {exc}); run `mtbench prepare` "
                            f"again") from None
        if images.shape != expected or images.dtype != np.uint8 or labels.shape != (expected[0],):
            raise DataError(f"prepared cache {folder} is damaged ({split}_images.npy is {images.shape} "
                            f"{images.dtype}, meta.json says {expected} uint8); run `mtbench prepare` again")
        splits[split] = LabeledImages(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)),
                                      tuple(spec["classes"]))
    return splits, meta


class PreparedDataset(Dataset):
    """A dataset read from its prepared cache; :meth:`prepare` converts the user's files into it.

    Subclasses set ``name``, ``title``, ``hint`` (the layout, for error messages), ``source_names``
    (folders or archives under ``MTBENCH_DATA`` that ``load`` prepares from when no cache exists) and
    implement :meth:`convert`.
    """

    title: ClassVar[str] = ""
    hint: ClassVar[str] = ""
    source_names: ClassVar[tuple[str, ...]] = ()
    channels: ClassVar[int] = 3
    constraints = {"image_size": ">= 8"}

    def __init__(self, image_size: int = 84) -> None:
        self.image_size = image_size

    def convert(self, source: Source, cache_dir: Path, reporter: Reporter) -> Path:
        raise NotImplementedError

    def prepare(self, source: Path | str, cache_dir: Path, reporter: Reporter | None = None) -> Path:
        """Convert the user's files at ``source`` into the prepared cache; returns the cache folder."""
        src = Source(source, self.title)
        return self.convert(src, Path(cache_dir), reporter or Reporter(enabled=False))

    def writer(self, cache_dir: Path, splits: dict[str, SplitLayout]) -> PreparedWriter:
        return PreparedWriter(cache_dir, self.name, self.image_size, self.channels, splits)

    def write_files(self, src: Source, plan: "FilePlan", listed_in: str, info: dict[str, Any], cache_dir: Path,
                    reporter: Reporter) -> Path:
        """Check that every planned image exists, then decode them all into a new cache."""
        check_present(src, plan, listed_in)
        with self.writer(cache_dir, plan.splits) as out:
            fill_from_files(src, plan, out, reporter, self.image_size, self.channels)
            return out.commit(info)

    def source_info(self, src: Source, split: str, split_source: str, **extra: Any) -> dict[str, Any]:
        return {"dataset": self.name, "split": split, "split_source": split_source, "source": str(src.path),
                "source_fingerprint": src.fingerprint(), **extra}

    def find_source(self, data_dir: Path | None) -> Path | None:
        for name in self.source_names if data_dir is not None else ():
            if (Path(data_dir) / name).exists():
                return Path(data_dir) / name
        return None

    def fingerprint(self, data_dir: Path | None, cache_dir: Path | None = None) -> str:
        """The prepared cache's content fingerprint ("" while unprepared): preparing from other files
        changes it, so fits keyed on it retrain. ``cache_dir`` defaults to the CLI's ``$MTBENCH_CACHE``."""
        if cache_dir is None:
            from mtbench.cli import data_cache_dir
            cache_dir = data_cache_dir()
        try:
            meta = json.loads((prepared_dir(cache_dir, self.name, self.image_size) / "meta.json").read_text())
            return str(meta["content_fingerprint"])
        except (OSError, ValueError, KeyError):
            return ""

    def load(self, data_dir: Path | None, cache_dir: Path) -> DatasetSplits:
        folder = prepared_dir(cache_dir, self.name, self.image_size)
        if not (folder / "meta.json").exists():
            found = self.find_source(data_dir)
            if found is None:
                looked = f" (nor {' or '.join(self.source_names)} under {data_dir})" if data_dir else ""
                raise DataError(f"{self.title} is not prepared at {self.image_size}px in {folder}{looked}: run "
                                f"`mtbench prepare {self.name} --from PATH` once ({self.hint})")
            self.prepare(found, cache_dir)
        splits, meta = load_prepared(folder, self.channels)
        info = {k: meta[k] for k in ("split", "split_source", "source", "content_fingerprint", "image_size")}
        info.update(meta.get("notes", {}))
        info["storage"] = "prepared uint8 cache, memory-mapped"
        return DatasetSplits(splits, info)


def image_members(src: Source, under: str = "") -> list[str]:
    return [n for n in src.names() if n.startswith(under) and n.lower().endswith(IMAGE_SUFFIXES)]


def by_basename(names: list[str]) -> dict[str, str]:
    """basename -> member name, for files whose basename is unique in the source."""
    seen: dict[str, str] = {}
    clash: set[str] = set()
    for name in names:
        base = PurePosixPath(name).name
        if base in seen:
            clash.add(base)
        seen[base] = name
    return {b: n for b, n in seen.items() if b not in clash}


def check_present(src: Source, plan: FilePlan, listed_in: str) -> None:
    """Every member the plan names exists (checked before any decoding)."""
    have = set(src.names())
    missing = [n for n in plan.rows if n not in have]
    if missing:
        raise DataError(f"{src.what}: {len(missing)} image(s) listed in {listed_in} are missing from {src.path}, "
                        f"e.g. {missing[0]}")


def fill_from_files(src: Source, plan: FilePlan, out: PreparedWriter, reporter: Reporter, size: int,
                    channels: int) -> None:
    """Decode every planned image (resized to ``size`` with LANCZOS) into its row, with a progress bar."""
    with reporter.task(f"{src.what}: decoding images", total=len(plan.rows)) as advance:
        for name, blob in src.stream(plan.rows):
            split, row = plan.rows[name]
            try:
                image = decode(blob, size, channels)
            except Exception as exc:
                raise decode_error(src.path, name, exc, "replace that file from the original dataset") from None
            out.put(split, row, image)
            advance()


def read_text(src: Source, names: list[str]) -> dict[str, str]:
    blobs = src.read_many(names)
    try:
        return {n: blobs[n].decode("utf-8-sig") for n in names}
    except UnicodeDecodeError as exc:
        raise DataError(f"{src.what}: a text file in {src.path} is not UTF-8 ({exc})") from None

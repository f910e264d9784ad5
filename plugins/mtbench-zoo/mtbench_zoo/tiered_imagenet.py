"""tieredImageNet (Ren et al. 2018): 608 ImageNet classes under 34 super-categories, split 20 / 6 / 8
super-categories = 351 / 97 / 160 classes (779,165 images; about 16 GB as 84x84 RGB bytes).

It is never held in RAM: ``prepare`` streams the source in chunks into the prepared cache (rows written
with ``pwrite``), and ``load`` memory-maps it, so an episode reads only the rows it gathers.

Accepted layouts (a folder, or a zip/tar holding it):

* **images in folders** (preferred): ``train/<class>/<image>``, ``val/<class>/<image>``,
  ``test/<class>/<image>`` (JPEG or PNG, any size; resized to ``image_size`` with LANCZOS).
* **the community npz layout** of Ren et al.'s tools: ``{train,val,test}_images.npz`` (one uint8 array
  [n, 84, 84, 3]) read with ``allow_pickle=False`` semantics (an object array is refused) and streamed
  in chunks, never loaded whole; and ``{train,val,test}_labels.pkl`` (a dict with ``label_specific`` and
  ``label_specific_str``) read with the restricted unpickler, which admits only dicts, lists, strings,
  numbers and plain arrays. The ``png.pkl`` files (pickled lists of PNG bytes) are not accepted.
  Ren et al.'s tools decode with OpenCV, so those arrays are in BGR order; ``npz_channel_order``
  (default ``"bgr"``) says how to read them, and the cache stores RGB.
"""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator, Literal

import numpy as np
from PIL import Image

from mtbench import DataError, hookimpl
from mtbench.progress import Reporter

from ._prepared import SPLITS, FilePlan, PreparedDataset, SplitLayout, image_members
from ._sources import ARCHIVE_ERRORS, Source, restricted_unpickle

NPZ_FILES = [f"{s}_images.npz" for s in SPLITS] + [f"{s}_labels.pkl" for s in SPLITS]
CHUNK_BYTES = 8 << 20


def npy_chunks(fh: BinaryIO, where: str) -> tuple[tuple[int, ...], Iterator[np.ndarray]]:
    """Shape of the .npy stream ``fh`` and an iterator over chunks of its rows (uint8, C order only)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise DataError(f"{where}: unsupported .npy version {version}")
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[3] != 3:
        raise DataError(f"{where} holds {dtype} {'Fortran-order ' if fortran else ''}{shape}; expected a uint8 "
                        f"[n, height, width, 3] image array")
    row_bytes = int(np.prod(shape[1:]))
    per_chunk = max(1, CHUNK_BYTES // row_bytes)

    def chunks() -> Iterator[np.ndarray]:
        left = shape[0]
        while left:
            n = min(per_chunk, left)
            blob = fh.read(n * row_bytes)
            if len(blob) != n * row_bytes:
                raise DataError(f"corrupt {where}: the array ends after {shape[0] - left + len(blob) // row_bytes} "
                                f"of {shape[0]} images")
            left -= n
            yield np.frombuffer(blob, dtype=np.uint8).reshape(n, *shape[1:])
    return tuple(shape), chunks()


class TieredImageNet(PreparedDataset):
    name = "tiered-imagenet"
    title = "tieredImageNet"
    hint = ("train/, val/, test/ folders of class folders, or {train,val,test}_images.npz with "
            "{train,val,test}_labels.pkl")
    source_names = ("tiered-imagenet", "tiered_imagenet", "tieredImageNet", "tiered-imagenet.tar")
    constraints = {"image_size": ">= 8", "npz_channel_order": ("bgr", "rgb")}

    def __init__(self, image_size: int = 84, npz_channel_order: Literal["bgr", "rgb"] = "bgr") -> None:
        super().__init__(image_size)
        self.npz_channel_order = npz_channel_order

    def convert(self, src: Source, cache_dir: Path, reporter: Reporter) -> Path:
        if any(PurePosixPath(n).name.endswith("_images.npz") for n in src.names()):
            return self.convert_npz(src, cache_dir, reporter)
        return self.convert_folders(src, cache_dir, reporter)

    def convert_folders(self, src: Source, cache_dir: Path, reporter: Reporter) -> Path:
        found: dict[str, dict[str, list[tuple[str, str]]]] = {}  # root -> split -> [(member, class)]
        for name in image_members(src):
            parts = name.split("/")
            if len(parts) >= 3 and parts[-3] in SPLITS:
                root = "".join(p + "/" for p in parts[:-3])
                found.setdefault(root, {}).setdefault(parts[-3], []).append((name, parts[-2]))
        best = min(found, key=lambda r: (-len(found[r]), r.count("/")), default=None)
        missing = [s for s in SPLITS if best is None or s not in found[best]]
        if missing:
            where = f"{src.path}/{best}" if best else str(src.path)
            raise DataError(f"tieredImageNet source {where} has no {', '.join(s + '/' for s in missing)} folder of "
                            f"class folders with images ({self.hint})")
        plan = FilePlan.from_members(found[best])
        info = self.source_info(src, "ren2018", f"split folders train/, val/, test/ in {src.path}/{best}",
                                notes={"tiered_layout": "images in folders", "resize": "PIL LANCZOS to image_size"})
        return self.write_files(src, plan, "the split folders", info, cache_dir, reporter)

    def labels(self, src: Source, name: str) -> tuple[np.ndarray, list[str]]:
        """label_specific (one per image) and the class names it indexes, from a ``*_labels.pkl``."""
        value = restricted_unpickle(src.read_many([name])[name], f"{src.path}/{name}")
        if not isinstance(value, dict) or "label_specific" not in value:
            raise DataError(f"{src.path}/{name} is not a tieredImageNet label file (a dict with label_specific)")
        labels = np.asarray(value["label_specific"])
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
            raise DataError(f"{src.path}/{name}: label_specific is not a list of class indices")
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in value.get("label_specific_str", [])]
        if len(names) < n_classes:
            names = [f"class{i:03d}" for i in range(n_classes)]
        return labels.astype(np.int64), names[:n_classes]

    def convert_npz(self, src: Source, cache_dir: Path, reporter: Reporter) -> Path:
        root = src.root(NPZ_FILES, self.hint)
        layouts = {}
        for split in SPLITS:
            labels, names = self.labels(src, f"{root}{split}_labels.pkl")
            layouts[split] = SplitLayout(names, labels)
        info = self.source_info(src, "ren2018", f"{{train,val,test}}_labels.pkl in {src.path}/{root}",
                                notes={"tiered_layout": "npz + labels.pkl (restricted unpickler)",
                                       "npz_channel_order": self.npz_channel_order})
        total = sum(len(layout.labels) for layout in layouts.values())
        with self.writer(cache_dir, layouts) as out, \
                reporter.task(f"{self.title}: copying images", total=total) as advance:
            for split in SPLITS:
                where = f"{src.path}/{root}{split}_images.npz"
                with src.open(f"{root}{split}_images.npz") as fh:
                    row = 0
                    for chunk in self.npz_rows(fh, where, len(layouts[split].labels)):
                        for image in chunk:
                            out.put(split, row, image)
                            row += 1
                        advance(len(chunk))
            return out.commit(info)

    def npz_rows(self, fh: BinaryIO, where: str, expected: int) -> Iterator[np.ndarray]:
        """Chunks of uint8 [k, 3, S, S] RGB images from an ``*_images.npz`` stream."""
        try:
            with zipfile.ZipFile(fh) as npz:
                arrays = [n for n in npz.namelist() if n.endswith(".npy")]
                name = "images.npy" if "images.npy" in arrays else (arrays[0] if len(arrays) == 1 else None)
                if name is None:
                    raise DataError(f"{where} holds {arrays}; expected one image array ('images')")
                with npz.open(name) as member:
                    shape, chunks = npy_chunks(member, f"{where}:{name}")
                    if shape[0] != expected:
                        raise DataError(f"{where} holds {shape[0]} images but its labels file lists {expected}")
                    for chunk in chunks:
                        if self.npz_channel_order == "bgr":
                            chunk = chunk[..., ::-1]
                        yield self.resized(chunk).transpose(0, 3, 1, 2)
        except ARCHIVE_ERRORS as exc:
            raise DataError(f"corrupt archive {where} ({type(exc).__name__}: {exc})") from None

    def resized(self, chunk: np.ndarray) -> np.ndarray:
        if chunk.shape[1:3] == (self.image_size, self.image_size):
            return chunk
        size = (self.image_size, self.image_size)
        return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(x)).resize(size, Image.LANCZOS))
                         for x in chunk])


@hookimpl
def register_datasets(register):
    register(TieredImageNet)

"""Build small copies of the standard few-shot datasets in their official or community layouts.

Each image is a random texture around a per-class colour, so classes differ and every pixel is known
(PNG is lossless: the prepared cache must hold exactly these pixels).
"""
from __future__ import annotations

import csv
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_FS = Path(__file__).resolve().parents[1] / "plugins/mtbench-zoo/mtbench_zoo/data/cifar_fs_split.csv"


def image(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: a class colour plus noise."""
    base = np.array([(37 * class_index) % 256, (91 * class_index) % 256, (151 * class_index) % 256])
    return np.clip(base + rng.integers(-40, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes], archive: str = "") -> Path:
    """Write ``files`` (relative name -> bytes) as a folder, or as ``root`` + ".zip"/".tar.gz"/".tar"."""
    if not archive:
        for name, blob in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(blob)
        return root
    path = root.with_name(root.name + archive)
    path.parent.mkdir(parents=True, exist_ok=True)
    if archive == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, blob in files.items():
                zf.writestr(name, blob)
    else:
        with tarfile.open(path, "w:gz" if archive.endswith("gz") else "w") as tf:
            for name, blob in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))
    return path


def miniimagenet_files(classes: dict[str, int], per_class: int = 6, size: int = 84,
                       seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """``classes`` = {"train": n, ...}; files in Ravi & Larochelle's layout and the pixels of each image."""
    rng = np.random.default_rng(seed)
    files, pixels = {}, {}
    index = 0
    for split, n in classes.items():
        lines = ["filename,label"]
        for _ in range(n):
            index += 1
            wnid = f"n{index:08d}"
            for i in range(per_class):
                name = f"{wnid}{i + 1:08d}.png"
                pixels[name] = image(rng, index, size)
                files[f"mini-imagenet/images/{name}"] = png(pixels[name])
                lines.append(f"{name},{wnid}")
        files[f"mini-imagenet/{split}.csv"] = ("\n".join(lines) + "\n").encode()
    return files, pixels


def cub_files(class_names: list[str], per_class: int = 5, seed: int = 0) -> dict[str, bytes]:
    """CUB_200_2011's official files for some of its classes (class ids = the names' numbers)."""
    rng = np.random.default_rng(seed)
    files, images, labels = {}, [], []
    image_id = 0
    for name in class_names:
        class_id = int(name.split(".")[0])
        for i in range(per_class):
            image_id += 1
            path = f"{name}/{name.split('.')[1]}_{i:04d}_{image_id}.jpg"
            pil = Image.fromarray(image(rng, class_id, 40 + 3 * i))  # any size, JPEG as in the archive
            buf = io.BytesIO()
            pil.save(buf, format="JPEG")
            files[f"CUB_200_2011/images/{path}"] = buf.getvalue()
            images.append(f"{image_id} {path}")
            labels.append(f"{image_id} {class_id}")
    files["CUB_200_2011/images.txt"] = ("\n".join(images) + "\n").encode()
    files["CUB_200_2011/image_class_labels.txt"] = ("\n".join(labels) + "\n").encode()
    files["CUB_200_2011/classes.txt"] = ("\n".join(f"{int(n.split('.')[0])} {n}" for n in class_names) + "\n").encode()
    return files


def cifar100(per_class: tuple[int, int] = (4, 2), seed: int = 0) -> dict[str, object]:
    """All 100 CIFAR-100 classes with (train, test) images each: pixels [n, 3072], labels, names."""
    with CIFAR_FS.open() as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    fine_names = sorted(r["class"] for r in rows)
    coarse_names = sorted({r["superclass"] for r in rows})
    coarse_of = {r["class"]: coarse_names.index(r["superclass"]) for r in rows}
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"fine_names": fine_names, "coarse_names": coarse_names}
    for part, n in zip(("train", "test"), per_class):
        fine = np.repeat(np.arange(100), n)
        rng.shuffle(fine)  # the archive is not sorted by class
        pixels = np.stack([image(rng, int(f), 32).transpose(2, 0, 1).reshape(-1) for f in fine])
        out[part] = {"data": pixels, "fine": fine, "coarse": np.array([coarse_of[fine_names[f]] for f in fine])}
    return out


def cifar_binary_files(data: dict) -> dict[str, bytes]:
    files = {}
    for part in ("train", "test"):
        d = data[part]
        records = np.concatenate([d["coarse"][:, None], d["fine"][:, None], d["data"]], axis=1).astype(np.uint8)
        files[f"cifar-100-binary/{part}.bin"] = records.tobytes()
    files["cifar-100-binary/fine_label_names.txt"] = ("\n".join(data["fine_names"]) + "\n").encode()
    files["cifar-100-binary/coarse_label_names.txt"] = ("\n".join(data["coarse_names"]) + "\n").encode()
    return files


def cifar_python_files(data: dict) -> dict[str, bytes]:
    """The python version: pickled dicts with bytes keys (as Python 2 wrote them; protocol 3 keeps bytes
    native, where protocol 2 from Python 3 would route them through _codecs.encode)."""
    files = {}
    for part in ("train", "test"):
        d = data[part]
        files[f"cifar-100-python/{part}"] = pickle.dumps(
            {b"data": d["data"].astype(np.uint8), b"fine_labels": d["fine"].tolist(),
             b"coarse_labels": d["coarse"].tolist(), b"batch_label": b"training batch"}, protocol=3)
    files["cifar-100-python/meta"] = pickle.dumps(
        {b"fine_label_names": [n.encode() for n in data["fine_names"]],
         b"coarse_label_names": [n.encode() for n in data["coarse_names"]]}, protocol=3)
    return files


def tiered_npz_files(classes: dict[str, int], per_class: int = 5, size: int = 84, seed: int = 0
                     ) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Ren et al.'s npz layout: ``SPLIT_images.npz`` (BGR uint8 [n, s, s, 3]) and ``SPLIT_labels.pkl``."""
    rng = np.random.default_rng(seed)
    files, rgb = {}, {}
    offset = 0
    for split, n in classes.items():
        labels = np.repeat(np.arange(n), per_class)
        rng.shuffle(labels)
        rgb[split] = np.stack([image(rng, offset + int(c), size) for c in labels])
        buf = io.BytesIO()
        np.savez(buf, images=rgb[split][..., ::-1])
        files[f"tiered-imagenet/{split}_images.npz"] = buf.getvalue()
        files[f"tiered-imagenet/{split}_labels.pkl"] = pickle.dumps(
            {"label_specific": labels, "label_specific_str": [f"n{offset + i:08d}" for i in range(n)],
             "label_general": np.zeros(len(labels), dtype=np.int64), "label_general_str": ["all"]}, protocol=3)
        rgb[split + "_labels"] = labels
        offset += n
    return files, rgb


def write_large_tiered_npz(folder: Path, rows: int, size: int = 84) -> int:
    """A tiered npz source of ``rows`` images per split written in chunks (never whole in memory).

    Returns the bytes of the train image array. Images are a cheap function of the row number.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shape = (rows, size, size, 3)
    for split in ("train", "val", "test"):
        n = rows if split == "train" else 20
        with zipfile.ZipFile(folder / f"{split}_images.npz", "w") as zf:
            with zf.open("images.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                          "shape": (n, *shape[1:])})
                for start in range(0, n, 500):
                    k = min(500, n - start)
                    block = (np.arange(start, start + k, dtype=np.uint64)[:, None] * 7
                             + np.arange(size * size * 3, dtype=np.uint64)[None]) % 251
                    fh.write(block.astype(np.uint8).tobytes())
        labels = np.arange(n) % 10
        (folder / f"{split}_labels.pkl").write_bytes(pickle.dumps({"label_specific": labels}, protocol=3))
    return rows * size * size * 3

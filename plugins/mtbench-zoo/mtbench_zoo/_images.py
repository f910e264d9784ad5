"""Image decoding shared by the file-based datasets (Pillow for decoding, no torchvision)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from mtbench import DataError


def decode(blob: bytes, size: int, channels: int, invert: bool = False) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [channels, size, size], resized with LANCZOS."""
    with Image.open(io.BytesIO(blob)) as img:
        img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
    if invert:
        arr = 255 - arr
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def fingerprint(paths: list[Path], **extra: Any) -> str:
    """A cache key from file names, sizes and modification times (cheap; no hashing of contents)."""
    items = []
    for path in paths:
        stat = path.stat()
        items.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps([items, extra], sort_keys=True).encode()).hexdigest()[:16]


def files_fingerprint(root: Path, paths: list[Path]) -> str:
    """A dataset's content fingerprint: relative path, size and modification time of each file (and of every
    file under each folder given), so a replaced, added or removed file changes it; moving the whole folder
    does not."""
    items = []
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                stat = file.stat()
                items.append([os.path.relpath(file, root), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load ``path`` (npz) or build and save it atomically; a damaged cache is rebuilt."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return arrays


def decode_error(where: Path, name: str, exc: Exception, fix: str) -> DataError:
    kind = "corrupt image" if isinstance(exc, (UnidentifiedImageError, OSError, SyntaxError)) else "unreadable file"
    return DataError(f"{kind} {name!r} in {where} ({type(exc).__name__}: {exc}); {fix}")

"""Build small Omniglot archives in the official download layout (for reader and download tests)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def drawing(seed: int) -> bytes:
    """A 105x105 mode-"1" PNG like the official ones: white paper, a few black strokes."""
    rng = np.random.default_rng(seed)
    img = np.ones((105, 105), dtype=bool)
    for _ in range(3):
        r, c = rng.integers(10, 90, size=2)
        img[r:r + 12, c:c + 3] = False
        img[r:r + 3, c:c + 12] = False
    buf = io.BytesIO()
    Image.fromarray(img).convert("1").save(buf, format="PNG")
    return buf.getvalue()


LAYOUT = {
    "images_background": {"Alpha": 4, "Beta": 3},
    "images_evaluation": {"Gamma": 3, "Delta": 2},
}


def write_omniglot(root: Path, zipped: bool = True, drawers: int = 20) -> dict[str, list[str]]:
    """Write a small Omniglot in the official layout under root/omniglot/raw; returns characters per set."""
    raw = root / "omniglot" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    char_id = 0
    chars: dict[str, list[str]] = {}
    for archive, alphabets in LAYOUT.items():
        files = {}
        for alphabet, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                char_id += 1
                chars.setdefault(archive, []).append(f"{alphabet}/character{c:02d}")
                for d in range(1, drawers + 1):
                    files[f"{archive}/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"] = drawing(char_id * 100 + d)
        if zipped:
            with zipfile.ZipFile(raw / f"{archive}.zip", "w") as zf:
                for name, blob in files.items():
                    zf.writestr(name, blob)
        else:
            for name, blob in files.items():
                path = raw / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)
    return chars


def write_vinyals_split(root: Path, assignment: dict[str, str]) -> None:
    folder = root / "omniglot" / "splits" / "vinyals"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        lines = [f"{c}/rot{r:03d}" for c, s in assignment.items() if s == split for r in (0, 90, 180, 270)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")

"""miniImageNet (Vinyals et al. 2016) with the class split of Ravi & Larochelle (2017): 64 / 16 / 20 classes.

Accepted layout (a folder, zip or tar): the split files ``train.csv``, ``val.csv`` and ``test.csv``
(header ``filename,label``; label = ImageNet synset id) side by side, and the images they name, either in
``images/`` next to them (the layout of Ravi & Larochelle's generation script) or anywhere below with a
unique file name (e.g. ``train/n01532829/n0153282900000005.jpg``). 600 images per class in the
standard files; images are resized to ``image_size`` with LANCZOS (the standard files are already 84x84).

``mtbench prepare miniimagenet --from PATH`` converts it once; ``load`` reads the memory-mapped cache and
records the split files it came from.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from mtbench import DataError, hookimpl
from mtbench.progress import Reporter

from ._prepared import FilePlan, PreparedDataset, by_basename, image_members, read_text
from ._sources import Source

SPLIT_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
STANDARD_CLASSES = {"train": 64, "val": 16, "test": 20}


def parse_split_csv(text: str, where: str) -> list[tuple[str, str]]:
    """(filename, label) rows of a Ravi & Larochelle split file."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{where} must start with the header 'filename,label' (Ravi & Larochelle split file)")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{where} line {number} is not 'filename,label': {','.join(row)!r}")
        out.append((row[0].strip(), row[1].strip()))
    if not out:
        raise DataError(f"{where} lists no images")
    return out


class MiniImageNet(PreparedDataset):
    name = "miniimagenet"
    title = "miniImageNet"
    hint = "train.csv, val.csv and test.csv of Ravi & Larochelle beside images/"
    source_names = ("miniimagenet", "mini-imagenet", "miniImageNet", "mini-imagenet.zip", "mini-imagenet.tar")

    def convert(self, src: Source, cache_dir: Path, reporter: Reporter) -> Path:
        root = src.root(list(SPLIT_FILES.values()), self.hint)
        texts = read_text(src, [root + f for f in SPLIT_FILES.values()])
        listed = {s: parse_split_csv(texts[root + f], f"{src.path}/{root}{f}") for s, f in SPLIT_FILES.items()}
        owner: dict[str, str] = {}
        for split, rows in listed.items():
            for _, label in rows:
                if owner.setdefault(label, split) != split:
                    raise DataError(f"miniImageNet class {label} is in both {owner[label]}.csv and {split}.csv")
        members = image_members(src)
        exact, unique = set(members), by_basename(members)

        def member(filename: str) -> str:
            preferred = f"{root}images/{filename}"
            return preferred if preferred in exact else unique.get(filename, preferred)
        plan = FilePlan.from_members({s: [(member(f), label) for f, label in rows] for s, rows in listed.items()})
        counts = {s: len(layout.classes) for s, layout in plan.splits.items()}
        info = self.source_info(src, "ravi-larochelle", f"train.csv/val.csv/test.csv in {src.path}/{root}",
                                notes={"standard_64_16_20": counts == STANDARD_CLASSES,
                                       "resize": "PIL LANCZOS to image_size"})
        return self.write_files(src, plan, f"{root}{{train,val,test}}.csv", info, cache_dir, reporter)


@hookimpl
def register_datasets(register):
    register(MiniImageNet)

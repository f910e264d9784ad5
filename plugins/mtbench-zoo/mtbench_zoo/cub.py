"""CUB-200-2011 (Wah et al. 2011) with the few-shot class split of Chen et al. 2019: 100 / 50 / 50 classes.

Accepted layout: the official archive ``CUB_200_2011.tgz`` (or its extracted folder, or a zip of it):
``images.txt`` (``id path``), ``image_class_labels.txt`` (``id class_id``), ``classes.txt``
(``class_id name``) and ``images/<path>``. Whole images are resized to ``image_size`` with LANCZOS (no
bounding-box crop), as the miniImageNet files were made.

The split: Chen et al.'s ``filelists/CUB/write_CUB_filelist.py`` (github.com/wyharveychen/CloserLookFewShot)
sorts the class folders by name and assigns class index ``i`` (from 0) to base if ``i % 2 == 0``, val if
``i % 4 == 1`` and novel if ``i % 4 == 3``. The shipped ``data/cub_chen2019_split.csv`` lists the result by
class name, so an archive whose class names differ from the official ones is reported, not re-split.
"""
from __future__ import annotations

import csv
from pathlib import Path

from mtbench import DataError, hookimpl
from mtbench.progress import Reporter

from ._prepared import FilePlan, PreparedDataset, read_text
from ._sources import Source

META_FILES = ("images.txt", "image_class_labels.txt", "classes.txt")
SPLIT_FILE = Path(__file__).parent / "data" / "cub_chen2019_split.csv"


def chen_split() -> dict[str, str]:
    """class name -> train/val/test, from the shipped file."""
    with SPLIT_FILE.open() as fh:
        return {row["class"]: row["split"] for row in csv.DictReader(line for line in fh if not line.startswith("#"))}


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """``id value`` lines -> {id: value} (the value may contain spaces)."""
    out = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.strip().partition(" ")
        if not sep or not value.strip():
            raise DataError(f"{where} line {number} is not 'id value': {line!r}")
        out[key] = value.strip()
    return out


class CUB(PreparedDataset):
    name = "cub"
    title = "CUB-200-2011"
    hint = "the official CUB_200_2011 layout: images.txt, image_class_labels.txt, classes.txt, images/"
    source_names = ("CUB_200_2011", "CUB_200_2011.tgz", "cub", "CUB_200_2011.tar.gz")

    def convert(self, src: Source, cache_dir: Path, reporter: Reporter) -> Path:
        root = src.root(list(META_FILES), self.hint)
        texts = read_text(src, [root + f for f in META_FILES])
        images, labels, classes = (parse_pairs(texts[root + f], f"{src.path}/{root}{f}") for f in META_FILES)
        split_of = chen_split()
        unknown = sorted(set(classes.values()) - set(split_of))
        if unknown:
            raise DataError(f"CUB-200-2011 class {unknown[0]!r} in {src.path}/{root}classes.txt is not one of the "
                            f"200 official classes of the Chen et al. 2019 split ({SPLIT_FILE.name})")
        members: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
        for image_id, path in images.items():
            class_id = labels.get(image_id)
            if class_id not in classes:
                raise DataError(f"CUB-200-2011 image {image_id} ({path}) has no class in image_class_labels.txt "
                                f"and classes.txt of {src.path}/{root}")
            name = classes[class_id]
            members[split_of[name]].append((f"{root}images/{path}", name))
        plan = FilePlan.from_members(members)
        info = self.source_info(src, "chen2019", "Chen et al. 2019 (CloserLookFewShot write_CUB_filelist.py: "
                                "sorted classes, i%2==0 base, i%4==1 val, i%4==3 novel)",
                                notes={"resize": "whole image, PIL LANCZOS to image_size"})
        return self.write_files(src, plan, "images.txt", info, cache_dir, reporter)


@hookimpl
def register_datasets(register):
    register(CUB)

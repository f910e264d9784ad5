"""Rewrite the Omniglot split file's location in committed results to the form the loader now records.

Results written before the Omniglot loader recorded ``split_source`` as ``<data dir>/omniglot/splits/...``
hold the absolute path of the machine that ran them (``dataset_info.split_source`` and, for cross-domain
cells, ``train_dataset_info.split_source``). That string is provenance only: no key, digest or metric
depends on it. This script replaces the part before ``/omniglot/splits/`` by ``<data dir>`` and touches
nothing else in the file (run ``make leaderboards`` afterwards: the rendered tables do not change).

    python leaderboards/normalize_split_source.py leaderboards/*/results leaderboards/*/superseded
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

MARKER = "/omniglot/splits/"


def normalize(info: dict) -> bool:
    source = info.get("split_source") if isinstance(info, dict) else None
    if not isinstance(source, str) or MARKER not in source or source.startswith("<data dir>"):
        return False
    info["split_source"] = "<data dir>" + source[source.index(MARKER):]
    return True


def main(folders: list[str]) -> None:
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.json")):
            if any(part.startswith(".") for part in path.parts):
                continue
            result = json.loads(path.read_text())
            changed = [normalize(result.get(key)) for key in ("dataset_info", "train_dataset_info")]
            if any(changed):
                path.write_text(json.dumps(result, indent=1, allow_nan=False))
                print(f"normalized {path}")


if __name__ == "__main__":
    main(sys.argv[1:])

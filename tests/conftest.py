"""Shared fixtures: real data location, an isolated cache, a small Omniglot archive in the official layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from omniglot_archive import write_omniglot, write_vinyals_split

ROOT = Path(__file__).resolve().parents[1]

# Threads are set explicitly (issue 10 G): with torch's default threads, test processes running side by side
# oversubscribed the cores badly (18:53 for the default suite under load against 2:34 with one thread each).
# Worker processes and subprocesses the tests start inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Real datasets: $MTBENCH_DATA (CI sets it), else the shared folder beside the checkout."""
    path = Path(os.environ.get("MTBENCH_DATA", ROOT.parent / "shared" / "datasets"))
    assert (path / "omniglot").is_dir(), f"real Omniglot is expected under {path}; set MTBENCH_DATA"
    return path


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mtbench-cache")


@pytest.fixture(autouse=True)
def isolated_cache(session_cache, monkeypatch):
    """Prepared-data caches go to a per-session folder, never to the user's home."""
    monkeypatch.setenv("MTBENCH_CACHE", str(session_cache))
    monkeypatch.delenv("MTBENCH_PLUGINS", raising=False)
    monkeypatch.delenv("MTBENCH_DISABLE_PLUGINS", raising=False)


@pytest.fixture
def tiny_omniglot(tmp_path) -> Path:
    """A data dir with a small zipped Omniglot and a Vinyals-style split file for it."""
    chars = write_omniglot(tmp_path)
    background, evaluation = chars["images_background"], chars["images_evaluation"]
    assignment = {c: "train" for c in background[:5]}
    assignment.update({c: "val" for c in background[5:]})
    assignment.update({c: "test" for c in evaluation})
    write_vinyals_split(tmp_path, assignment)
    return tmp_path


@pytest.fixture
def plugins():
    from mtbench.plugins import load_plugins
    return load_plugins()

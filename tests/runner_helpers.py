"""Build a Runner the way the CLI does, on the CPU, with progress off."""
from __future__ import annotations

from pathlib import Path

import torch

from mtbench.results import ResultStore
from mtbench.runner import Runner


def make_runner(plugins, results: Path, data_dir: Path | None = None) -> Runner:
    return Runner(plugins, ResultStore(results), torch.device("cpu"), data_dir, results / ".cache",
                  results / ".data-cache")

"""CSV: the leaderboard's ``cells`` frame, every column, one row per (experiment, protocol), for scripts.

Nested values (hyperparameters, deviations) are written as JSON text, so a reader can parse them back.
"""
from __future__ import annotations

import json
from typing import Any

from ..hookspecs import hookimpl
from . import Renderer


def _json_cell(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list, tuple)) else value


def render(lb: Any) -> str:
    cells = lb.cells.copy()
    for column in cells.columns:
        if cells[column].map(lambda v: isinstance(v, (dict, list, tuple))).any():
            cells[column] = cells[column].map(_json_cell)
    return cells.to_csv(index=False, lineterminator="\n")


@hookimpl
def register_renderers(register):
    register(Renderer("csv", ".csv", render, description="the cells frame, every column (machine-readable)"))

"""JSON: the leaderboard's ``cells`` frame (every column, records) with its title, metric, Friedman test,
notes and provenance, for scripts and dashboards. Missing values are ``null``.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..hookspecs import hookimpl
from . import Renderer


def _clean(value: Any) -> Any:
    """numpy scalars, NaN and odd objects made JSON-safe (NaN -> null, unknown -> str)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def render(lb: Any) -> str:
    doc = {
        "title": lb.title, "suite": lb.suite, "metric": lb.metric, "higher_is_better": lb.higher_is_better,
        "scale": lb.scale, "digits": lb.digits,
        "cells": json.loads(lb.cells.to_json(orient="records", default_handler=str)),
        "friedman": lb.friedman, "notes": list(lb.notes), "provenance": lb.provenance,
    }
    return json.dumps(_clean(doc), indent=1, allow_nan=False) + "\n"


@hookimpl
def register_renderers(register):
    register(Renderer("json", ".json", render, description="the cells frame with metadata (machine-readable)"))

"""The built-in suites, as TOML data files next to this module."""
from __future__ import annotations

from pathlib import Path

from mtbench import hookimpl

HERE = Path(__file__).parent


@hookimpl
def register_suites(register):
    for path in sorted(HERE.glob("*.toml")):
        register(path)

"""Leaderboard output formats. Each format is a :class:`Renderer` registered through ``register_renderers``.

The built-in formats (terminal, markdown, csv, json, latex, html) are core plugins, one module each, loaded
by :func:`mtbench.plugins.load_plugins` before any entry point (pytest's "default plugins" pattern), so a
third-party format is registered exactly as they are::

    from mtbench import hookimpl
    from mtbench.renderers import Renderer

    @hookimpl
    def register_renderers(register):
        register(Renderer("tsv", ".tsv", lambda lb: lb.cells.to_csv(sep="\\t", index=False)))

A renderer sees only the :class:`mtbench.leaderboard.Leaderboard`; it never reads result files itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Renderer:
    """One ``--format``.

    Parameters
    ----------
    name : the ``--format`` value (lowercase kebab-case).
    suffix : the usual file suffix (``".md"``), for ``--output`` defaults and listings.
    render : ``render(lb) -> str | bytes``; bytes when ``binary``.
    binary : whether ``render`` returns bytes.
    description : one line for ``mtbench leaderboard --help`` style listings.
    console : optional ``console(lb, width) -> list`` of rich renderables, used instead of ``render`` when
        the output is an interactive terminal (colour, the terminal's own width).
    """

    name: str
    suffix: str
    render: Callable[[Any], str | bytes]
    binary: bool = False
    description: str = ""
    console: Callable[[Any], list] | None = None

    def write(self, lb: Any, path: Path) -> None:
        """Render into ``path`` (parent folders created), atomically enough for a report: write then rename."""
        data = self.render(lb)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        if self.binary:
            tmp.write_bytes(data)  # type: ignore[arg-type]
        else:
            tmp.write_text(data, encoding="utf-8")  # type: ignore[arg-type]
        tmp.replace(path)


__all__ = ["Renderer"]

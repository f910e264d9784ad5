"""Name -> object registries filled by the ``register_*`` hooks.

Duplicates are an error naming both providers; an unknown name lists the close matches.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Generic, Iterator, TypeVar

from .errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9\-_.]*$")


@dataclass
class Registry(Generic[T]):
    """Items of one kind (``"algorithm"``, ``"dataset"``, ...) keyed by their id."""

    kind: str
    items: dict[str, T] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, item: T, provider: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise DuplicateNameError(
                f"{self.kind} name {name!r} from {provider} is invalid: use lowercase kebab-case"
            )
        if name in self.items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered twice: by {self.providers[name]} and by "
                f"{provider}; block one with --block or MTBENCH_DISABLE_PLUGINS"
            )
        self.items[name] = item
        self.providers[name] = provider

    def get(self, name: str) -> T:
        try:
            return self.items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.items), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(self.items)) or 'none'}"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; {hint}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.items))

    def __len__(self) -> int:
        return len(self.items)

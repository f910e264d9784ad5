"""scikit-learn style parameters: ``__init__`` stores hyperparameters, nothing else.

``get_params``/``set_params``/``clone`` come from the ``__init__`` signature, so a suite file, the CLI and
the results store all see the same explicit, named hyperparameters.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
from typing import Any, TypeVar

from .errors import MtbenchError

P = TypeVar("P", bound="HasParams")


class HasParams:
    """Mixin giving ``get_params``, ``set_params``, ``clone`` and a stable ``params_hash``."""

    name: str = ""

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self: P, **params: Any) -> P:
        known = self.param_names()
        for key, value in params.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise MtbenchError(f"{type(self).__name__} ({self.name}) has no parameter {key!r}; {hint}")
            setattr(self, key, value)
        return self

    def clone(self: P) -> P:
        """A new unfitted instance with the same parameters."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def params_hash(self) -> str:
        blob = json.dumps(self.get_params(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

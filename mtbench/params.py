"""scikit-learn style parameters: ``__init__`` stores hyperparameters, nothing else.

``get_params``/``set_params``/``clone`` come from the ``__init__`` signature, so a suite file, the CLI and
the results store all see the same explicit, named hyperparameters.

Values from outside (``--set``, suite files) go through :meth:`HasParams.check_params` before any data is
loaded: each is typed from its ``__init__`` annotation (``int``, ``float``, ``bool``, ``str``, ``Optional``,
``Literal``, tuples and lists of those) and range-checked against the class's declarative
``constraints`` (scikit-learn's ``_parameter_constraints`` idea, kept to one line per parameter)::

    constraints = {"lr": "> 0", "episodes": ">= 1", "momentum": ">= 0, < 1", "bn": ("transductive", "support")}
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import math
import operator
import re
import types
import typing
from typing import Any, ClassVar, Literal, TypeVar, Union

from .errors import MtbenchError

P = TypeVar("P", bound="HasParams")
Constraint = Union[str, tuple, frozenset]  # "> 0", ">= 0, < 1", or the allowed values
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_BOUND = re.compile(r"^\s*(>=|<=|>|<)\s*(\S+)\s*$")


class ParameterError(MtbenchError):
    """A hyperparameter of the wrong type or outside its range."""


def _describe(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin in (tuple, list) or tp in (tuple, list):
        return "a list"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """``value`` as the annotated type, or ValueError naming what was expected.

    Strict: a boolean is only true/false (or the strings "true"/"false" that a command line gives), an
    integer is never a bool, a number is finite.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty or isinstance(tp, (str, typing.TypeVar)):
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return coerce(value, arg)
                except ValueError:
                    pass
        raise ValueError(f"must be {_describe(tp)}")
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return value
        raise ValueError(f"must be {_describe(tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ValueError("must be true or false")
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("must be an integer")
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError("must be a number")
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be {_describe(tp)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"must be a list of {len(args)} values")
            items = [coerce(v, a) for v, a in zip(value, args)]
        else:
            items = [coerce(v, args[0]) for v in value] if args else list(value)
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError("must be a table")
    return value


def check_constraint(value: Any, constraint: Constraint) -> None:
    """Raise ValueError when ``value`` (or each number in a list) breaks ``constraint``; None passes."""
    if value is None or not constraint:
        return
    if isinstance(constraint, (tuple, frozenset, set, list)):
        if value not in constraint:
            raise ValueError("must be one of " + ", ".join(repr(c) for c in constraint))
        return
    for item in value if isinstance(value, (list, tuple)) else [value]:
        for part in constraint.split(","):
            match = _BOUND.match(part)
            if not match:
                raise TypeError(f"constraint {constraint!r} is malformed; use e.g. '> 0' or '>= 0, < 1'")
            op, bound = match.groups()
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not _OPS[op](item, float(bound)):
                raise ValueError(f"must be {constraint}")


class HasParams:
    """Mixin giving ``get_params``, ``set_params``, ``clone`` and a stable ``params_hash``."""

    name: str = ""
    constraints: ClassVar[dict[str, Constraint]] = {}  # parameter -> "> 0", ">= 0, < 1" or allowed values

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    @classmethod
    def param_types(cls) -> dict[str, Any]:
        """The ``__init__`` annotations (empty where they cannot be resolved: such values are not typed)."""
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # an annotation naming something only imported for type checking
            return {}
        return {name: hints[name] for name in cls.param_names() if name in hints}

    @classmethod
    def check_params(cls, params: dict[str, Any], where: str) -> dict[str, Any]:
        """``params`` typed and range-checked; a bad one raises a one-line ParameterError naming ``where``."""
        known, types_ = cls.param_names(), cls.param_types()
        out = {}
        for key, value in params.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise ParameterError(f"{where}: {type_label(cls)} has no parameter {key!r}; {hint}")
            try:
                value = coerce(value, types_.get(key, Any))
                check_constraint(value, cls.constraints.get(key, ""))
            except ValueError as exc:
                raise ParameterError(f"{where}: {type_label(cls)} parameter {key}={value!r} {exc}") from None
            out[key] = value
        return out

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self: P, **params: Any) -> P:
        known = self.param_names()
        for key, value in params.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise ParameterError(f"{type(self).__name__} ({self.name}) has no parameter {key!r}; {hint}")
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


def type_label(cls: type) -> str:
    return f"{cls.__name__} ({cls.name})" if getattr(cls, "name", "") else cls.__name__

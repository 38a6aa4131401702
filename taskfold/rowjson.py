"""Rows as JSON: dataclass rows (tasks, seats, agent records...) to bytes and back.

Stores (the scheduler's tables, the projections) keep rows as JSON, never pickle, so a
row can be read by any version that knows its format, and by a person with `ldb`.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import fields
from enum import Enum
from typing import Any, Union

from immutables import Map
from pydantic import BaseModel

ROW_FORMAT = 1  # bump when a row's JSON changes incompatibly


class RowFormatError(ValueError):
    """A stored row this version cannot read."""


_SCALARS = (str, int, float, bool, type(None))


@functools.cache
def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def encode(row: Any) -> bytes:
    """A dataclass row as JSON bytes (sets sorted, so equal rows give equal bytes)."""
    body: dict[str, Any] = {"_v": ROW_FORMAT}
    for name in _fields(type(row)):
        value = getattr(row, name)
        body[name] = value if type(value) in _SCALARS else _plain(value)
    return json.dumps(body, separators=(",", ":")).encode()


def decode(cls: type, raw: bytes) -> Any:
    """The dataclass row of type `cls` in JSON bytes; fields unknown to `cls` are ignored."""
    body = json.loads(raw)
    if body.pop("_v", None) != ROW_FORMAT:
        raise RowFormatError(f"{cls.__name__} row is not in format {ROW_FORMAT}: {raw[:80]!r}")
    hints, names = _hints(cls), _fields(cls)
    return cls(**{name: _typed(hints[name], value) for name, value in body.items() if name in names})


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (frozenset, set)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, (Map, dict)):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _typed(hint: Any, value: Any) -> Any:
    """`value` from JSON, turned back into the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value)
    if origin is frozenset:
        return frozenset(_typed(args[0], v) for v in value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(args[0], v) for v in value)
        return tuple(_typed(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(value)
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return hint.model_validate(value)
    if hint is float:
        return float(value)
    if hint in (int, str, bool, Any):
        return value
    raise RowFormatError(f"no JSON rule for the annotation {hint!r}")

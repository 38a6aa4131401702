"""A row of the fold (a frozen dataclass: Task, Member, AgentRecord, Session) as JSON bytes and back.

Rows are JSON, never pickle, so a row can be read by any version that knows its format,
and by a person with `ldb`. Sets are sorted, so equal rows give equal bytes. Split from
`taskfold.core.foldrows`, which re-exports these names.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from enum import Enum
from operator import attrgetter
from typing import Any, Union

from immutables import Map
from pydantic import BaseModel

from taskfold.core.state import created

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


# json.dumps(body, separators=(",", ":")) builds this encoder, and its C encoder, on every call.
_JSON = json.JSONEncoder(separators=(",", ":"))
_C_JSON = None
if json.encoder.c_make_encoder is not None:  # CPython's C speedups: the encoder json.dumps uses, made once
    _C_JSON = json.encoder.c_make_encoder(
        {}, _JSON.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)


def _json(body: dict[str, Any]) -> bytes:
    """json.dumps(body, separators=(",", ":")).encode(), the same bytes."""
    if _C_JSON is None:
        return _JSON.encode(body).encode()
    return "".join(_C_JSON(body, 0)).encode()


@functools.cache
def _row_layout(cls: type) -> tuple[Callable[[Any], tuple], tuple[str, ...], tuple[tuple[str, Callable], ...]]:
    """(getter of every field's value, field names, (field, JSON conversion) of each field
    whose annotation is not a plain scalar) of a row class."""
    names, hints = _fields(cls), _hints(cls)
    values = attrgetter(*names) if len(names) > 1 else (lambda row: (getattr(row, names[0]),))
    conversions = tuple((name, convert) for name in names if (convert := _to_json(hints[name])) is not None)
    return values, names, conversions


def _to_json(hint: Any) -> Callable[[Any], Any] | None:
    """What `plain` does to a value of this annotation, decided once per field; None for a scalar."""
    return _conversions(hint)[0]


def _from_json(hint: Any) -> Callable[[Any], Any] | None:
    """What `_typed` does to a JSON value of this annotation, decided once per field; None:
    the value as it is. Callers pass None through (an Optional field, or a JSON null), as `_typed` does."""
    return _conversions(hint)[1]


def _conversions(hint: Any) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    """(to JSON, from JSON) for one annotation: the fast paths of `plain` and `_typed`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        # None is a scalar: never converted.
        return _conversions(inner[0]) if len(inner) == 1 else (plain, functools.partial(_typed, hint))
    if hint in (str, int, bool, type(None)):
        return None, None
    if hint is float:
        return None, float
    if hint is Any:
        return plain, None
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and typing.get_args(args[0]) == (str, str):
        return _pairs, _pairs_back
    if (origin, args) == (frozenset, (str,)):
        return sorted, frozenset
    if (origin, args) == (tuple, (str, Ellipsis)):
        return list, tuple
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum_value, hint
    if isinstance(hint, type) and issubclass(hint, BaseModel):
        return _model_json, hint.model_validate
    return plain, functools.partial(_typed, hint)


def _pairs(value: tuple[tuple[str, str], ...]) -> list[list[str]]:
    return list(map(list, value))


# What .value returns, without the enum property's Python-level __get__.
_enum_value = attrgetter("_value_")


def _model_json(value: BaseModel) -> Any:
    return value.__pydantic_serializer__.to_python(value, mode="json")  # model_dump(mode="json"), unwrapped


def encode(row: Any) -> bytes:
    """A dataclass row as JSON bytes (sets sorted, so equal rows give equal bytes)."""
    values, names, conversions = _row_layout(type(row))
    body: dict[str, Any] = {"_v": ROW_FORMAT}
    body.update(zip(names, values(row)))
    # Only the fields whose annotation is not a scalar are looked at again (a None passes).
    for name, convert in conversions:
        value = body[name]
        if type(value) not in _SCALARS:
            body[name] = convert(value)
    return _json(body)


def decode(cls: type, raw: bytes) -> Any:
    """The dataclass row of type `cls` in JSON bytes; fields unknown to `cls` are ignored."""
    body = json.loads(raw)
    if body.pop("_v", None) != ROW_FORMAT:
        raise RowFormatError(f"{cls.__name__} row is not in format {ROW_FORMAT}: {raw[:80]!r}")
    readers = _row_readers(cls)
    kwargs = {}
    for name, value in body.items():
        if name in readers:
            read = readers[name]
            kwargs[name] = value if read is None or value is None else read(value)
    return created(cls, kwargs)


@functools.cache
def _row_readers(cls: type) -> dict[str, Callable[[Any], Any] | None]:
    """Each field's conversion from JSON, decided once per class (None: the JSON value as is).

    A restart reads every stored row; judging each field's annotation per row with
    typing.get_origin/get_args cost about 0.08 ms a row.
    """
    hints = _hints(cls)
    return {name: _from_json(hints[name]) for name in _fields(cls)}


def _pairs_back(value: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((a, b) for a, b in value)


def plain(value: Any) -> Any:
    """A field value as JSON data: enums by value, sets sorted, maps and tuples as dicts and lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (frozenset, set)):
        return sorted(plain(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, (Map, dict)):
        return {k: plain(v) for k, v in value.items()}
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

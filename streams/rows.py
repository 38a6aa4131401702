"""The scheduler's table rows: keys, and the JSON round trip of the fold's and the fleet's rows.

One row per task, per seat, per agent record and per session of a queue, plus the fleet's
round-robin cursor. Every key starts with the queue name, so a queue's rows stay in the
partition of the queue's events (the changelog partition is the event's partition).
The other maps of `QueueState` are derived from tasks and seats (`taskfold.fold.rows`).
"""

from __future__ import annotations

import functools
import json
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import Any, Union

from immutables import Map
from pydantic import BaseModel

from taskfold.fold import rows as fold_rows
from taskfold.scheduling.model import AgentRecord, Fleet, Session
from taskfold.state import Member, QueueState, Task

ROW_FORMAT = 1  # bump when a row's JSON changes incompatibly
SEP = "\x00"  # queue names cannot contain it (QueueName pattern)

# Row kinds, the one-letter second part of a key.
TASK, SEAT, AGENT, SESSION, CURSOR = "t", "m", "a", "s", "c"
# The offset row of a partition (queue part empty): the next offset its rows reflect.
OFFSET = "o"


class RowFormatError(ValueError):
    """A stored row this version cannot read."""


def key(queue: str, kind: str, ident: str = "") -> bytes:
    """The table key of one row: queue, kind and id, NUL-separated."""
    return f"{queue}{SEP}{kind}{SEP}{ident}".encode()


def parse_key(raw: bytes) -> tuple[str, str, str]:
    """(queue, kind, id) of a table key."""
    queue, kind, ident = raw.decode().split(SEP, 2)
    return queue, kind, ident


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


@dataclass
class QueueRows:
    """The rows of one queue as read back from the table."""

    tasks: list[Task] = field(default_factory=list)
    seats: list[Member] = field(default_factory=list)
    agents: dict[str, AgentRecord] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    cursor: int = 0

    def add(self, kind: str, ident: str, raw: bytes) -> None:
        """Take in one stored row."""
        if kind == CURSOR:
            self.cursor = int(json.loads(raw)["cursor"])
        elif kind == TASK:
            self.tasks.append(decode(Task, raw))
        elif kind == SEAT:
            self.seats.append(decode(Member, raw))
        elif kind == AGENT:
            self.agents[ident] = decode(AgentRecord, raw)
        elif kind == SESSION:
            self.sessions[ident] = decode(Session, raw)
        else:
            raise RowFormatError(f"unknown row kind {kind!r}")

    def state(self) -> QueueState:
        """The queue's fold state; a seat holds exactly the in-flight tasks that name it."""
        held: dict[str, set[str]] = {}
        for task in self.tasks:
            if task.state.in_flight and task.agent_id is not None:
                held.setdefault(task.agent_id, set()).add(task.task_id)
        seats = [replace(m, holding=frozenset(held.get(m.agent_id, ()))) for m in self.seats]
        return fold_rows.rebuild(self.tasks, seats)

    def fleet(self) -> Fleet:
        """The queue's fleet."""
        return Fleet(agents=Map(self.agents), sessions=Map(self.sessions), cursor=self.cursor)


@dataclass
class Stored:
    """Everything read back from the table: rows by queue, and the offsets they reflect."""

    queues: dict[str, QueueRows] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to apply


def read(items: Iterable[tuple[bytes, bytes]]) -> Stored:
    """Stored rows grouped by queue, and the offset row of each partition."""
    stored = Stored()
    for raw_key, raw in items:
        queue, kind, ident = parse_key(raw_key)
        if kind == OFFSET and not queue:
            stored.offsets[int(ident)] = int(json.loads(raw)["next"])
        else:
            stored.queues.setdefault(queue, QueueRows()).add(kind, ident, raw)
    return stored


def offset_write(partition: int, offset: int) -> Write:
    """The offset row of a partition once the record at `offset` is applied."""
    return key("", OFFSET, str(partition)), json.dumps({"_v": ROW_FORMAT, "next": offset + 1}).encode()


Write = tuple[bytes, bytes | None]  # None deletes the row


def event_writes(
    queue: str, tasks: list[Task], seats: list[Member], fleet: list[Write], marker: tuple[str, str] | None,
) -> list[Write]:
    """The writes of the rows one event touched, with the row that records its id last.

    Changelog writes land in order and a crash loses a suffix at most. With the marking
    row last (the event's task, or the seat for AgentJoined/AgentLeft), a partly written
    event is never taken for a duplicate: it is applied again and rewrites the same rows.
    `QueueRows.state` derives seat holdings from the task rows, so a seat row written
    ahead of its task row cannot make a slot look taken.
    """
    writes = [(key(queue, TASK, t.task_id), encode(t)) for t in tasks]
    writes += [(key(queue, SEAT, m.agent_id), encode(m)) for m in seats]
    marked = key(queue, *marker) if marker is not None else None
    rest = [w for w in writes if w[0] != marked]
    return rest + fleet + [w for w in writes if w[0] == marked]


def fleet_writes(queue: str, before: Fleet, after: Fleet) -> list[Write]:
    """The writes of the fleet rows that changed (compared by identity, so unchanged maps are free)."""
    if before is after:
        return []
    writes = [(key(queue, AGENT, a), _maybe(r)) for a, r in _changed(before.agents, after.agents)]
    writes += [(key(queue, SESSION, s), _maybe(r)) for s, r in _changed(before.sessions, after.sessions)]
    if before.cursor != after.cursor:
        writes.append((key(queue, CURSOR), json.dumps({"_v": ROW_FORMAT, "cursor": after.cursor}).encode()))
    return writes


def _changed(before: Map, after: Map) -> Iterator[tuple[str, Any]]:
    if before is after:
        return
    for ident, row in after.items():
        if before.get(ident) is not row:
            yield ident, row
    for ident in before:
        if ident not in after:
            yield ident, None


def _maybe(row: Any) -> bytes | None:
    return None if row is None else encode(row)


def all_rows(queue: str, state: QueueState, fleet: Fleet) -> list[Write]:
    """Every row of a queue (used by tests and for a full checkpoint)."""
    fleet_rows = fleet_writes(queue, Fleet(cursor=-1), fleet)
    return event_writes(queue, list(state.tasks.values()), list(state.members.values()), fleet_rows, None)


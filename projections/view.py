"""What a projection view is: a pure function from one applied record to row writes.

The projector folds each event (the same `evolve` every component runs) and hands the
views a `Change`: the event, where it is in the log, its verdict, and the queue and fleet
before and after it. Views write rows into the batch; they read nothing but the batch, so
a view is deterministic and a rebuild from offset 0 writes the same rows as the live run.
Progress chunks and heartbeats are not folded; views that want them get a `Telemetry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from taskfold.core.events import Event
from taskfold.core.foldrows import Queue
from taskfold.core.state import Task, Verdict
from taskfold.core.telemetry import Heartbeat, ProgressChunk


class Rows(Protocol):
    """The batch a view writes to (see `projections.store.Batch`)."""

    def get(self, table: str, key: str) -> Any | None: ...

    def put(self, table: str, key: str, value: Any) -> None: ...

    def delete(self, table: str, key: str) -> None: ...

    def raw(self, table: str, key: bytes, value: bytes | None) -> None: ...


def position_key(partition: int, offset: int) -> str:
    """A position as a key that sorts in log order within a partition."""
    return f"{partition:04d}:{offset:012d}"


@dataclass(frozen=True, slots=True)
class Change:
    """One event of the `events` topic, applied by the fold."""

    partition: int
    offset: int
    event: Event
    verdict: Verdict
    before: Queue
    after: Queue
    tasks: tuple[Task, ...]  # the task rows the event changed, as they are after it
    stamp: int | None  # the time it gives its position; None: rejected as stamped ahead (placement.stamp)

    @property
    def position(self) -> str:
        """`partition:offset`, the event's id in SSE streams and in the API."""
        return f"{self.partition}:{self.offset}"

    @property
    def key(self) -> str:
        """The position as a sortable key."""
        return position_key(self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Telemetry:
    """A progress chunk (topic `progress`) or a heartbeat (topic `heartbeats`)."""

    topic: str  # "progress" or "heartbeats"
    partition: int
    offset: int
    record: ProgressChunk | Heartbeat

    @property
    def key(self) -> str:
        return position_key(self.partition, self.offset)


class View(Protocol):
    """A projection: rows derived from the log."""

    name: str

    def apply(self, change: Change, rows: Rows) -> None:
        """Write the rows this event changes."""

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Write the rows a progress chunk or heartbeat changes (most views ignore them)."""

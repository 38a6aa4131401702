"""The dependency relay (ARCHITECTURE §5): a task's end travels to its waiters in other queues.

A queue's fold settles the dependents that live in the same queue. A dependent in another
queue learns of its dependency's end only through a `DependencyResolved` appended to its
own queue, because no verdict may depend on another partition's events (§1). The relay:

1. The scheduler, for every record it folds, turns the task rows the record changed into
   small *notes* (task ids only, never payloads), keyed by the dependency's task id:
   * `waiting`: dependent D in queue Q waits on X, which Q does not have;
   * `outcome`: task X in queue P ended completed, dead_lettered or cancelled.
   A record the rows already reflect (read again after a crash) gives the notes of what
   it did, read from the current rows, so a note lost with the crash is sent after all.
   Notes come from folded records only: a submit counts once the log has it.
2. The relay agent reads the notes topic; its table (RocksDB, one row per dependency id,
   one offset row per partition) keeps X's latest outcome and its waiters. When both are
   there and the waiter's queue is not X's, it appends `DependencyResolved(queue=Q,
   task_id=D, dependency_id=X)`. Notes a fetch skipped are read from the log (`Relay`).

Exactly one resolution per (X, D) counts: the event id is derived from (X, D), so a
repeat (a note replayed after a crash, an outcome sent again) folds as a duplicate, and
the fold accepts a resolution only while D is still blocked on X. Waiters are kept after
their resolution for the same reason: a replayed note must find them to resend.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from taskfold.core.events import (
    AgentLeft,
    DependencyEnd,
    DependencyOutcome,
    DependencyResolved,
    Event,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskSubmitted,
    TaskTimedOut,
    WorkflowSubmitted,
)
from taskfold.core import foldrows
from taskfold.core.policies import derived_event_id
from taskfold.core.state import QueueState, Task, TaskState

log = logging.getLogger(__name__)


class NoteFormatError(ValueError):
    """A record of the notes topic (or a relay row) this version cannot read."""


@dataclass(frozen=True, slots=True)
class Note:
    """One fact for the relay, about dependency `dependency` (the record's key)."""

    dependency: str
    queue: str  # waiting: the dependent's queue; outcome: the dependency's own queue
    waiter: str | None = None  # waiting: the dependent's task id
    ended: str | None = None  # outcome: completed, dead_lettered or cancelled

    def encode(self) -> bytes:
        """The note as JSON bytes."""
        body = {"x": self.dependency, "q": self.queue}
        body |= {"d": self.waiter} if self.waiter is not None else {"end": self.ended}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Note:
        """The note in `raw`; NoteFormatError naming what is wrong."""
        try:
            body = json.loads(raw or b"")
            note = cls(body["x"], body["q"], body.get("d"), body.get("end"))
        except (ValueError, KeyError, TypeError) as exc:
            raise NoteFormatError(f"not a relay note ({exc}): {(raw or b'')[:80]!r}") from exc
        if (note.waiter is None) == (note.ended is None) or note.ended not in (None, *DependencyEnd.__members__):
            raise NoteFormatError(f"a note is either a waiter or a known end: {(raw or b'')[:80]!r}")
        return note


def notes_of(state: QueueState, tasks: Iterable[Task], before: QueueState | None = None) -> list[Note]:
    """The notes for these task rows of one queue, as they stand in `state`; with `before`
    (the state the event was folded into), a task blocked already sent its waiting notes."""
    out: list[Note] = []
    for task in tasks:
        if task.state.terminal:
            out.append(Note(task.task_id, task.queue, ended=task.state.value))
        elif task.state == TaskState.blocked and not _was_blocked(before, task.task_id):
            # A dependency this queue has is settled by the fold itself.
            out += [Note(x, task.queue, waiter=task.task_id) for x in sorted(task.waiting_on) if x not in state.tasks]
    return out


def _was_blocked(before: QueueState | None, task_id: str) -> bool:
    old = before.tasks.get(task_id) if before is not None else None
    return old is not None and old.state == TaskState.blocked


# The events that can admit a task blocked or end one (and so its dependents): the others
# (assignments, starts, joins, redrives) never give a note, and a replay of them sends none.
NOTED = (TaskSubmitted, WorkflowSubmitted, DependencyResolved, TaskCompleted, TaskFailed, TaskTimedOut,
         TaskLeaseExpired, TaskCancelled, TaskCancelRequested, AgentLeft)


def notes_of_replay(state: QueueState, event: Event) -> list[Note]:
    """The notes of an event the rows already reflect, from the rows as they stand now.

    Only what this event itself may have done: the end of a task it finished (finished at
    its time), the waiting notes of a task it admitted. A later event's notes are sent
    when that event is folded or replayed in turn, so nothing is noted twice per replay.
    """
    if not isinstance(event, NOTED):
        return []
    admits = isinstance(event, (TaskSubmitted, WorkflowSubmitted))
    touched = [t for tid in sorted(foldrows.affected_tasks(state, event)) if (t := state.tasks.get(tid)) is not None]
    own = [t for t in touched if (t.state.terminal and t.finished_at == event.occurred_at)
           or (admits and t.state == TaskState.blocked)]
    return notes_of(state, own)


def resolution_id(dependency: str, waiter: str) -> str:
    """The event id of the one DependencyResolved of (dependency, waiter)."""
    return derived_event_id(json.dumps(["relay", dependency, waiter]))


@dataclass
class Entry:
    """What the relay knows about one dependency: where and how it ended, and who waits."""

    queue: str | None = None
    ended: str | None = None
    waiters: dict[str, str] | None = None  # waiter task id -> its queue

    def encode(self) -> bytes:
        """The relay row as JSON."""
        body = {"_v": foldrows.ROW_FORMAT, "queue": self.queue, "ended": self.ended, "waiters": self.waiters or {}}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        """The relay row in `raw`."""
        body = json.loads(raw)
        if body.get("_v") != foldrows.ROW_FORMAT:
            raise NoteFormatError(f"relay row is not in format {foldrows.ROW_FORMAT}: {raw[:80]!r}")
        return cls(body["queue"], body["ended"], dict(body["waiters"]))


DEPENDENCY, OFFSET = b"d", b"o"  # relay table keys: one row per dependency, one per partition


class RelayBook:
    """The relay's table and rule: notes in, DependencyResolved events out."""

    def __init__(self, store: MutableMapping[bytes, bytes], *, actor: str, clock_ms: Callable[[], int]) -> None:
        self.store = store
        self.actor = actor
        self.clock_ms = clock_ms

    def take(self, note: Note) -> list[DependencyResolved]:
        """Record the note; the resolutions it makes possible (again, if it is a repeat)."""
        key = DEPENDENCY + note.dependency.encode()
        raw = self.store.get(key)
        entry = Entry.decode(raw) if raw is not None else Entry()
        waiters = dict(entry.waiters or {})
        if note.waiter is not None:
            waiters[note.waiter] = note.queue
            targets = {note.waiter: note.queue}
        else:
            entry.queue, entry.ended = note.queue, note.ended
            targets = waiters
        changed = Entry(entry.queue, entry.ended, waiters)
        if raw is None or changed.encode() != raw:
            self.store[key] = changed.encode()
        if changed.ended is None:
            return []
        return [self._resolution(note.dependency, changed, waiter, queue)
                for waiter, queue in sorted(targets.items()) if queue != changed.queue]

    def _resolution(self, dependency: str, entry: Entry, waiter: str, queue: str) -> DependencyResolved:
        ok = entry.ended == TaskState.completed.value
        return DependencyResolved(
            event_id=resolution_id(dependency, waiter), queue=queue, occurred_at=self.clock_ms(), actor=self.actor,
            causation_id=f"{entry.queue}/{dependency}", task_id=waiter, dependency_id=dependency,
            outcome=DependencyOutcome.satisfied if ok else DependencyOutcome.failed,
            dependency_state=DependencyEnd(entry.ended),
        )

    def next_offset(self, partition: int) -> int:
        """The first offset of a notes partition the table does not reflect yet."""
        raw = self.store.get(OFFSET + str(partition).encode())
        return int(raw) if raw is not None else 0

    def passed(self, partition: int, offset: int) -> None:
        """The note at (partition, offset) is taken in (the offset row never goes back)."""
        if offset + 1 > self.next_offset(partition):
            self.store[OFFSET + str(partition).encode()] = str(offset + 1).encode()


class NoteRecord(Protocol):
    """A record of the notes topic, as the agent or a backfill read it."""

    partition: int
    offset: int
    value: bytes | None


@dataclass
class Relay:
    """The relay agent's work, per record of the notes topic, in order:

    1. If the record comes after a hole (offsets the table does not reflect: a Fetch that
       skipped a batch, see BROKER.md), take in the missing records from the log first.
    2. Decode the note (a record that is not a note is logged, counted and skipped),
       take it into the table, and append the resolutions it makes possible.
    3. Record the offset in the table.
    """

    book: RelayBook
    append: Callable[[list[Event]], Awaitable[None]]
    backfill: Callable[[int, int, int], Awaitable[Sequence[NoteRecord]]] | None = None
    counts: Counter = field(default_factory=Counter)

    async def on_record(self, record: NoteRecord) -> list[Event]:
        """Steps 1-3 for one record."""
        start = self.book.next_offset(record.partition)
        if record.offset > start and self.backfill is not None:
            missed = await self.backfill(record.partition, start, record.offset)
            log.warning("relay: notes partition %s resumed at %s, the table reflects offsets before %s; "
                        "taking %s records from the log", record.partition, record.offset, start, len(missed))
            self.counts["backfilled"] += len(missed)
            for earlier in missed:
                await self._take(earlier)
        return await self._take(record)

    async def _take(self, record: NoteRecord) -> list[Event]:
        try:
            resolutions: list[Event] = list(self.book.take(Note.decode(record.value)))
        except NoteFormatError as exc:
            log.warning("relay: skipping record %s:%s of the notes topic: %s", record.partition, record.offset, exc)
            self.counts["bad_notes"] += 1
            resolutions = []
        if resolutions:
            await self.append(resolutions)
            self.counts["resolutions"] += len(resolutions)
        self.book.passed(record.partition, record.offset)
        return resolutions

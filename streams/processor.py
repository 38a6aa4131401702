"""A run of records of `events` in, events to append out: the work behind the thin faust agent.

The agent hands over what faust has buffered (a run); per record (the protocol, in order):

1. Decode the value. Undecodable bytes are copied to the `poison` topic with the reason,
   counted, and skipped; they never stop the worker.
2. Fold the event into its queue's state, observe it into the fleet, hold back the rows
   it changed (streams/scheduler.py `RowBatch`: each row written once per run, the
   offset row last), and settle it if it was one of our pending appends. Send the
   dependency relay's notes of the task rows it concerns (streams/relay.py).

Then, once per run:

3. Write the rows held back.
4. Decide each queue where an event may have made room (a submit, a completion, a new
   seat...), and append all the run's assignments in one call (key = queue); under load
   at most every `decide_every_s`, and not before the partition has been read to its end
   once since it was assigned, so a restarted worker does not re-decide what the log
   already holds. Decisions stay pending until read back: a decision counts only once
   the log has it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from schemas.codec import PoisonMessage
from streams.relay import Note
from streams.scheduler import Applied, Scheduler
from taskfold.core.edge import now_ms
from taskfold.core.events import Event, TaskAssigned, TaskStarted
from taskfold.core.rejections import rejection_kind
from taskfold.core.state import Verdict
from taskfold.log.records import ConsumedRecord
from taskfold.log.wire import decode_event

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Processed:
    """What processing one record did (the agent yields it; tests read it)."""

    partition: int
    offset: int
    event: Event | None = None
    verdict: Verdict | None = None
    poison: str | None = None
    ours: bool = False
    appended: tuple[Event, ...] = ()


class Outbox(Protocol):
    """Where the processor's output goes."""

    async def append(self, events: Sequence[Event]) -> None:
        """Append events to `events`, key = queue, with their headers."""

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        """Copy an undecodable record to `poison` with the reason."""


class CatchUp:
    """Whether the agent has caught up with a partition since it was assigned.

    Until a partition is read up to the Fetch high watermark once, the worker is
    replaying history and would decide on a stale state; from then on it decides on
    every record, even while a busy log keeps the fetcher a batch ahead (a worker that
    waited for an exact catch-up would hardly ever decide under load).
    """

    def __init__(
        self, highwater: Callable[[int], int | None] = lambda p: None,
        position: Callable[[int], int | None] = lambda p: None,
    ) -> None:
        self.highwater = highwater  # the end the last Fetch response reported
        self.position = position  # where the consumer will fetch next
        self.read: dict[int, int] = {}  # partition -> offset after the last record processed
        self.live: set[int] = set()  # partitions caught up with since their assignment

    def note(self, partition: int, offset: int) -> None:
        """The agent processed this record."""
        self.read[partition] = offset + 1

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Partitions revoked (all when None)."""
        for p in list(self.read) + list(self.live) if partitions is None else partitions:
            self.read.pop(p, None)
            self.live.discard(p)

    def caught_up(self, partition: int) -> bool:
        """True when everything the last fetch reported has been processed."""
        end = self.highwater(partition)
        done = self.read.get(partition, self.position(partition))
        return end is not None and done is not None and done >= end

    def settled(self, partition: int) -> bool:
        """True once everything the log held at some fetch since the assignment has been processed."""
        if partition not in self.live and self.caught_up(partition):
            self.live.add(partition)
        return partition in self.live


def _may_open_room(event: Event, applied: Applied) -> bool:
    """True unless the event surely leaves no new assignment possible.

    An accepted TaskAssigned or TaskStarted takes room, never makes it; a duplicate or a
    rejection changes nothing, unless it was our own decision (no longer pending, so its
    task is free to decide again).
    """
    if applied.verdict.accepted:
        return not isinstance(event, (TaskAssigned, TaskStarted))
    return applied.ours


class Always(CatchUp):
    """Every partition counts as read to its end (tests without a broker)."""

    def caught_up(self, partition: int) -> bool:
        """Always: there is no fetch to be behind."""
        return True


@dataclass
class Processor:
    """Decodes, folds, decides and appends; counts what happened."""

    scheduler: Scheduler
    outbox: Outbox
    catch_up: CatchUp = field(default_factory=Always)
    clock_ms: Callable[[], int] = now_ms
    ready: Callable[[], bool] = lambda: True  # liveness known (heartbeats read to their end)
    decide_every_s: float = 0.02  # under load, a queue is decided at most this often per record
    monotonic: Callable[[], float] = time.monotonic
    # Reads records [start, end) of a partition from the log, for gaps the consumer skipped.
    backfill: Callable[[int, int, int], Awaitable[list[ConsumedRecord]]] | None = None
    # Sends the dependency relay's notes (streams/relay.py); None: no relay (unit tests).
    relay: Callable[[Sequence[Note]], Awaitable[None]] | None = None
    counts: Counter = field(default_factory=Counter)
    rejections: Counter = field(default_factory=Counter)  # (event type, rejection kind) -> events
    _dirty: set[str] = field(default_factory=set)  # queues where an event may have made room
    _decided_at: dict[str, float] = field(default_factory=dict)

    def _mark(self, event: Event, applied: Applied) -> None:
        """Mark the event's queue if the event may have made room."""
        if _may_open_room(event, applied):
            self._dirty.add(event.queue)

    def _should_decide(self, partition: int, queue: str) -> bool:
        """Decide now? Only where room may have opened, once caught up, and batched under load.

        decide() looks at the whole queue, so running it after every record of a burst
        costs O(backlog) each time. A queue is marked when an event may allow a new
        assignment; it is decided at the end of a run when the partition is read to the
        fetched end, or at most every `decide_every_s` while records keep coming. The
        timer decides anyway.
        """
        if queue not in self._dirty or not (self.ready() and self.catch_up.settled(partition)):
            return False
        now = self.monotonic()
        if self.catch_up.caught_up(partition) or now - self._decided_at.get(queue, 0.0) >= self.decide_every_s:
            self._dirty.discard(queue)
            self._decided_at[queue] = now
            return True
        return False

    async def on_record(self, record: ConsumedRecord) -> Processed:
        """Process one record of `events` (a run of one)."""
        (processed,) = await self.on_records([record])
        return processed

    async def on_records(self, records: Sequence[ConsumedRecord],
                         entering: Callable[[int], None] = lambda index: None) -> list[Processed]:
        """Process a run of records as one round: fold each, write rows once, decide once, append once.

        `entering(i)` is called before record i is folded, after the rows of an earlier
        partition were written (faust sends a row's changelog record to the partition of
        the event it holds for current, so the agent sets it there).
        """
        out: list[Processed] = []
        last: dict[str, int] = {}  # queue -> index in `out` of its last folded record
        self.counts["runs"] += 1  # records / runs: how much a run batches
        self.scheduler.rows.deferring = True
        try:
            for index, record in enumerate(records):
                if self.scheduler.rows.partition not in (None, record.partition):
                    self.scheduler.flush()
                entering(index)
                start = self.scheduler.missing(record.partition, record.offset)
                if start is not None and self.backfill is not None:
                    await self._fill(record.partition, start, record.offset)
                folded = await self._fold(record)
                if isinstance(folded, Processed):
                    out.append(folded)
                    continue
                event, applied = folded
                self._mark(event, applied)
                last[event.queue] = len(out)
                out.append(Processed(record.partition, record.offset, event, applied.verdict, None, applied.ours))
            self.scheduler.flush()
        finally:
            self.scheduler.rows.deferring = False
        await self._round(out, last)
        return out

    async def _round(self, out: list[Processed], last: dict[str, int]) -> None:
        """Decide each queue of the run that may have room, and append every decision in one produce."""
        due = [q for q in sorted(last) if self._should_decide(out[last[q]].partition, q)]
        if not due:
            return
        by_queue: dict[str, list[Event]] = {}

        def decide_all() -> list[Event]:
            for queue in due:
                by_queue[queue] = self.scheduler.decide(queue, self.clock_ms())
            return [e for q in due for e in by_queue[q]]

        if await self._append(decide_all, "decisions"):
            for queue in due:
                i = last[queue]
                out[i] = replace(out[i], appended=tuple(by_queue[queue]))

    async def _fold(self, record: ConsumedRecord) -> Processed | tuple[Event, Applied]:
        """Steps 1 and 2: decode (poison aside) and fold."""
        self.counts["records"] += 1
        try:
            event = decode_event(record.value) if record.value is not None else None
        except PoisonMessage as exc:
            return await self._poison(record, exc.reason)
        if event is None:
            return await self._poison(record, "empty record (no value)")
        applied = self.scheduler.apply(event, record.partition, record.offset, record.timestamp)
        self.catch_up.note(record.partition, record.offset)
        self.counts[applied.verdict.outcome] += 1
        if applied.verdict.outcome == "rejected":
            self.rejections[(event.event_type, rejection_kind(applied.verdict.reason))] += 1
        self.counts["read_back"] += applied.ours
        if applied.notes and self.relay is not None:
            await self.relay(applied.notes)
            self.counts["relay_notes"] += len(applied.notes)
        return event, applied

    async def _fill(self, partition: int, start: int, end: int) -> None:
        """Fold the records [start, end) the consumer skipped (its committed offset was past the rows)."""
        records = await self.backfill(partition, start, end)  # type: ignore[misc]
        log.warning("partition %s: the rows reflect offsets before %s, the consumer resumed at %s; "
                    "folding %s records from the log", partition, start, end, len(records))
        self.counts["backfilled"] += len(records)
        for missed in records:
            await self._fold(missed)

    async def on_tick(self) -> list[Event]:
        """The timer: expirations and due decisions for every settled queue."""
        if not self.ready():
            return []
        return await self._append(lambda: self.scheduler.tick(self.clock_ms(), self.catch_up.settled), "timer")

    async def _append(self, produce: Callable[[], list[Event]], what: str) -> list[Event]:
        # The pure core deciding wrongly must not stop the fold: log it, count it, go on.
        try:
            events = produce()
        except Exception:
            log.exception("scheduler core failed (%s)", what)
            self.counts["core_errors"] += 1
            return []
        if events:
            try:
                await self.outbox.append(events)
            except Exception as exc:
                # Decisions stay pending and are decided again once they expire; nothing is lost.
                log.exception("appending %s %s failed: %s", len(events), what, exc)
                self.counts["append_errors"] += 1
                return []
            self.counts[what] += len(events)
            self.counts["appends"] += 1
        return events

    async def _poison(self, record: ConsumedRecord, reason: str) -> Processed:
        log.warning("poison at %s:%s: %s", record.partition, record.offset, reason)
        self.counts["poison"] += 1
        self.scheduler.skip(record.partition, record.offset)
        self.catch_up.note(record.partition, record.offset)
        try:
            await self.outbox.quarantine(record, reason)
        except Exception as exc:
            log.exception("copying poison at %s:%s to the poison topic failed: %s", record.partition,
                          record.offset, exc)
            self.counts["append_errors"] += 1
        return Processed(record.partition, record.offset, poison=reason)

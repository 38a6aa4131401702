"""The typed log: append events, read them back decoded, and set poison aside.

Everything in taskfold reads and writes events through `EventLog`. Events are keyed by
queue, so one queue's events keep one total order (ARCHITECTURE §2).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from schemas.codec import PoisonMessage
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import now_ms
from taskfold.core.events import Event
from taskfold.core.fold.placement import Where, stamp
from taskfold.log.coalesce import Coalescer
from taskfold.log.reader import LogReader
from taskfold.log.records import ConsumedRecord, Position, RawRecord, poison_record
from taskfold.log.writer import LogWriter
from taskfold.log.wire import decode_event, encode_event


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as the log holds it: the event and its position."""

    event: Event
    partition: int
    offset: int
    timestamp: int
    partitions: int | None = None  # the topic's partition count, when the reader knew it

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)

    @property
    def where(self) -> Where | None:
        """Where the fold judges the event to sit (None when the partition count is unknown)."""
        if self.partitions is None:
            return None
        return Where(self.partition, self.partitions, self.timestamp)


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that could not be decoded, and why."""

    partition: int
    offset: int
    reason: str
    key: str | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)


Entry = Recorded | Poison


def entry_of(record: ConsumedRecord) -> Entry:
    """Decode one consumed record; undecodable bytes become a Poison entry, never an exception."""
    if record.value is None:
        return Poison(record.partition, record.offset, "empty record (no value)", record.key, None, record.headers)
    try:
        event = decode_event(record.value)
    except PoisonMessage as exc:
        return Poison(record.partition, record.offset, exc.reason, record.key, record.value, record.headers)
    return Recorded(event, record.partition, record.offset, record.timestamp, record.partitions)


@dataclass(frozen=True)
class Cut:
    """Where a replay stops: before the first event stamped after `until_ms` in each
    partition, or before `offsets[p]` in partition p (unlisted partitions are left out)."""

    until_ms: int | None = None
    offsets: dict[int, int] | None = None


def occurred_at(entry: Entry) -> int | None:
    """The time a time cut judges an entry by: the event's `occurred_at`, unless the fold rejects
    it as stamped too far ahead of its record (`taskfold.core.fold.placement`); poison has none."""
    return stamp(entry.event.occurred_at, entry.where) if isinstance(entry, Recorded) else None


class CutRule:
    """A Cut applied to one topic's records in log order: which are in, where each partition closes.

    The one implementation of the cut, for `EventLog.read` and for projection rebuilds:
    a partition closes at `offsets[p]`, or at its first entry stamped after `until_ms`
    (entries without a stamp, such as poison or an event rejected as stamped ahead of
    its record, never close it); nothing after is kept. Closing at the first stamp past
    T is closing where the running maximum of the stamps passes T: the time of a
    position is that running maximum, so stamps a few ms out of order between writers
    never make a cut skip an event and keep a later one.
    """

    def __init__(self, cut: Cut | None = None, start: dict[int, int] | None = None, *,
                 decode: Callable[[ConsumedRecord], Any] = entry_of,
                 stamp: Callable[[Any], int | None] = occurred_at) -> None:
        self.cut = cut or Cut()
        self.start = start or {}
        self.closed: set[int] = set()
        self._decode = decode
        self._stamp = stamp

    def partitions(self) -> list[int] | None:
        """The partitions worth reading (None: all of them; empty: none)."""
        if self.cut.offsets is None:
            return None
        return sorted(p for p, end in self.cut.offsets.items() if end > 0 and self.start.get(p, 0) < end)

    def admit(self, record: ConsumedRecord) -> Any | None:
        """The decoded entry if the cut keeps it; None if not (its partition is then closed)."""
        if record.partition in self.closed:
            return None
        if self.cut.offsets is not None and record.offset >= self.cut.offsets[record.partition]:
            self.closed.add(record.partition)
            return None
        entry = self._decode(record)
        stamp = self._stamp(entry) if self.cut.until_ms is not None else None
        if stamp is not None and stamp > self.cut.until_ms:
            self.closed.add(record.partition)
            return None
        return entry


class EventLog:
    """Appends and reads the `events` topic and sets poison aside on the `poison` topic."""

    def __init__(self, bootstrap: str, topics: TopicNames | None = None, *, tansu: bool = False,
                 window_s: float | None = None, busy_window_s: float | None = None) -> None:
        """With `window_s`, appends made within that window share one produce, and within
        `busy_window_s` under steady traffic (taskfold.log.coalesce)."""
        self.topics = topics or TopicNames()
        self.writer = LogWriter(bootstrap, tansu=tansu)
        self.reader = LogReader(bootstrap, tansu=tansu)
        self.poison_count = 0
        self.coalescer: Coalescer[RawRecord, Position] | None = (
            None if window_s is None else Coalescer(self._append_now, window_s, busy_window_s))

    async def start(self) -> None:
        """Connect the writer and the reader."""
        await self.writer.start()
        await self.reader.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self.coalescer is not None:
            await self.coalescer.close()
        await self.writer.stop()
        await self.reader.stop()

    async def __aenter__(self) -> EventLog:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def append(self, events: Sequence[Event], *, after: asyncio.Future[Any] | None = None) -> list[Position]:
        """Append events (key = queue, headers type/task/agent) and wait for acks.

        Coalescing, the events share a produce with the appends of the same window; with
        `after` (a `submit` of this log) they land only once that append has, never without it.
        """
        if self.coalescer is None and after is None:
            return await self._append_now([_record(event) for event in events])
        return await self.submit(events, after=after)

    def submit(self, events: Sequence[Event], *, after: asyncio.Future[Any] | None = None
               ) -> asyncio.Future[list[Position]]:
        """Start appending events; the future gives their positions. Encoding errors raise here,
        so one bad event never fails the other appends of its window."""
        records = [_record(event) for event in events]
        if self.coalescer is None:
            return asyncio.ensure_future(self._append_after(records, after))
        return self.coalescer.submit(records, after=after)

    async def _append_after(self, records: list[RawRecord], after: asyncio.Future[Any] | None) -> list[Position]:
        if after is not None:
            await after
        return await self._append_now(records)

    async def _append_now(self, records: list[RawRecord]) -> list[Position]:
        return await self.writer.append(self.topics.events, records)

    async def end_offsets(self) -> dict[int, int]:
        """{partition: next offset} of the events topic, from the Fetch high watermark."""
        return await self.reader.end_offsets(self.topics.events)

    async def read(
        self, *, start: dict[int, int] | None = None, cut: Cut | None = None, live: bool = False
    ) -> AsyncIterator[Entry]:
        """Yield decoded entries in log order per partition, to the end (or the cut), or live.

        A time cut is resolved through the events' own `occurred_at`, never through the
        broker's offsets_for_times (wrong on Tansu): a partition is closed at its first
        event stamped after `until_ms`, not counting an event stamped more than the skew
        bound ahead of its record (the fold rejects it).
        """
        rule = CutRule(cut, start)
        partitions = rule.partitions()
        if partitions == []:
            return
        stream = self.reader.read(self.topics.events, partitions=partitions, start=start,
                                  to_end=not live, live=live)
        async with aclosing(stream) as records:
            async for record in records:
                entry = rule.admit(record)
                if entry is None:
                    continue
                if isinstance(entry, Poison):
                    self.poison_count += 1
                yield entry

    async def quarantine(self, poison: Poison) -> Position:
        """Copy an undecodable record to the poison topic with its reason and origin."""
        record = poison_record(poison.key, poison.value, poison.headers, reason=poison.reason,
                               topic=self.topics.events, position=poison.position, quarantined_at=now_ms())
        (position,) = await self.writer.append(self.topics.poison, [record])
        return position


def _record(event: Event) -> RawRecord:
    value, headers = encode_event(event)
    return RawRecord(key=event.queue, value=value, headers=headers)

"""A task's stream over Kafka: its events with the fold's verdicts, and its progress chunks.

Cursors are the gateway's SSE ids (`p:e` or `p:e.c`: events of partition p delivered
through offset e, progress chunks through offset c), so a cursor from either transport
resumes on the other.

1. Fold the queue's `events` partition from offset 0 with a private ledger (a verdict is a
   function of the partition's own sequence), and read the queue's `progress` partition
   after the cursor, both live (or to their ends when not following).
2. Deliver what is past the cursor: an event about the task, or one that changed it (a lost
   agent's AgentLeft can), and the task's chunks.
3. Once an event leaves the task terminal, read `progress` up to its end as it is then (an
   agent appends an attempt's chunks before its outcome), deliver those chunks, then `end`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from taskfold.broker.topics import queue_partition
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Poison, entry_of
from taskfold.log.reader import LogReader
from taskfold.core.state import TaskState
from taskfold.core.telemetry import ProgressChunk
from taskfold.log.wire import PoisonMessage, decode_record

from taskfold.clients.errors import Refused
from taskfold.clients.models import StreamItem, VerdictView

if TYPE_CHECKING:
    from taskfold.clients.kafka import KafkaTransport


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a stream has delivered: events and progress offsets of one partition (-1: none)."""

    partition: int
    events: int = -1
    progress: int = -1

    def __str__(self) -> str:
        return f"{self.partition}:{self.events}" + (f".{self.progress}" if self.progress >= 0 else "")

    @classmethod
    def parse(cls, text: str, partition: int) -> Cursor:
        """`p:e` or `p:e.c` of this stream's partition; Refused naming `after` otherwise."""
        head, sep, rest = text.strip().partition(":")
        events, _, progress = rest.partition(".")
        try:
            cursor = cls(int(head), int(events), int(progress) if progress else -1)
        except ValueError:
            cursor = None
        if not sep or cursor is None or min(cursor.events, cursor.progress) < -1:
            reason = f"not a stream cursor (p:events_offset or p:events_offset.progress_offset): {text!r}"
            raise Refused(reason, [("after", reason)])
        if cursor.partition != partition:
            reason = f"the cursor is for partition {cursor.partition}, this task's stream is on partition {partition}"
            raise Refused(reason, [("after", reason)])
        return cursor


@dataclass(frozen=True, slots=True)
class _Read:
    """What a reader hands the stream: an item to deliver (or None), and how far it has read."""

    topic: str  # "events" or "progress"
    offset: int
    item: StreamItem | None = None
    ended: TaskState | None = None  # set on the event that left the task terminal


async def task_stream(transport: KafkaTransport, task_id: str, queue: str | None, after: str | None,
                      follow: bool) -> AsyncIterator[StreamItem]:
    """Steps 1 to 3 of the module docstring."""
    name = await transport._queue_of(task_id, queue)
    log, topics = transport.log, transport.topics
    assert log is not None
    p = queue_partition(name, len(await log.reader.partitions(topics.events)))
    pp = queue_partition(name, len(await log.reader.partitions(topics.progress)))
    cursor = Cursor.parse(after, p) if after else Cursor(p)
    inbox: asyncio.Queue[_Read | BaseException | None] = asyncio.Queue(maxsize=1000)
    readers = [_EventsReader(task_id, name, p, cursor.events), _ChunksReader(task_id, pp, cursor.progress)]
    tasks = [asyncio.create_task(r.run(transport, inbox, follow)) for r in readers]
    try:
        async for item in _deliver(transport, inbox, cursor, pp, running=len(tasks), follow=follow):
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _deliver(transport: KafkaTransport, inbox: asyncio.Queue, cursor: Cursor, pp: int, *,
                   running: int, follow: bool) -> AsyncIterator[StreamItem]:
    """Steps 2 and 3: hand out items in the order read, advancing the cursor; stop at the end."""
    ended: TaskState | None = None
    drain_to: int | None = None
    progress_read = cursor.progress + 1
    while running:
        if drain_to is not None and progress_read >= drain_to:
            yield StreamItem(kind="end", state=ended)
            return
        got = await inbox.get()
        if got is None:
            running -= 1
            continue
        if isinstance(got, BaseException):
            raise got
        if got.topic == "progress":
            progress_read = got.offset + 1
        if got.item is not None:
            cursor = replace(cursor, **{got.topic: got.offset})
            yield got.item.model_copy(update={"cursor": str(cursor)})
        if got.ended is not None and follow and ended is None:
            ended = got.ended
            assert transport.log is not None
            drain_to = (await transport.log.reader.end_offsets(transport.topics.progress, [pp]))[pp]


class _EventsReader:
    """Folds the queue's partition from 0 and reports the task's events past the cursor."""

    def __init__(self, task_id: str, queue: str, partition: int, delivered: int) -> None:
        self.task_id, self.queue, self.partition, self.delivered = task_id, queue, partition, delivered

    async def run(self, transport: KafkaTransport, inbox: asyncio.Queue, follow: bool) -> None:
        try:
            reader = LogReader(transport.log.reader.bootstrap, tansu=transport.tansu)  # type: ignore[union-attr]
            async with reader, aclosing(reader.read(transport.topics.events, partitions=[self.partition],
                                                    start={self.partition: 0}, to_end=not follow,
                                                    live=follow)) as records:
                ledger = Ledger()
                async for record in records:
                    read = self._fold(ledger, entry_of(record))
                    if read is not None:
                        await inbox.put(read)
            await inbox.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await inbox.put(exc)

    def _fold(self, ledger: Ledger, entry: Any) -> _Read | None:
        if isinstance(entry, Poison):
            return None
        event = entry.event
        before = ledger.state(self.queue).task(self.task_id) if event.queue == self.queue else None
        verdict = ledger.apply(event, entry.where)
        task = ledger.state(self.queue).task(self.task_id)
        if event.task != self.task_id and task is before:
            return None
        ended = task.state if task is not None and task.state.terminal and task is not before else None
        if entry.offset <= self.delivered:
            return _Read("events", entry.offset, ended=ended)
        item = StreamItem(kind="event", event_type=event.event_type,
                          event={"type": event.event_type, **event.model_dump(mode="json")},
                          verdict=VerdictView.of(verdict))
        return _Read("events", entry.offset, item, ended)


class _ChunksReader:
    """Reads the queue's progress partition past the cursor and reports the task's chunks."""

    def __init__(self, task_id: str, partition: int, delivered: int) -> None:
        self.task_id, self.partition, self.delivered = task_id, partition, delivered

    async def run(self, transport: KafkaTransport, inbox: asyncio.Queue, follow: bool) -> None:
        try:
            reader = LogReader(transport.log.reader.bootstrap, tansu=transport.tansu)  # type: ignore[union-attr]
            start = {self.partition: self.delivered + 1}
            async with reader, aclosing(reader.read(transport.topics.progress, partitions=[self.partition],
                                                    start=start, to_end=not follow, live=follow)) as records:
                async for record in records:
                    await inbox.put(_Read("progress", record.offset, self._item(record.value)))
            await inbox.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await inbox.put(exc)

    def _item(self, value: bytes | None) -> StreamItem | None:
        try:
            chunk = decode_record(value or b"")
        except PoisonMessage:
            return None  # progress is telemetry: an undecodable chunk is skipped
        if not isinstance(chunk, ProgressChunk) or chunk.task_id != self.task_id:
            return None
        return StreamItem(kind="progress", chunk=chunk.model_dump(mode="json"))

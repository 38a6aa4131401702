"""bench/restart.py's history, with the worker state a worker that folded it would leave.

A worker folds about a thousand records a second through faust (each row write is a
changelog send), so 100,000 tasks (409,000 events) took more than 600 s to fold before any
restart could be measured. This appends the events, then folds them here with the
worker's own code (`streams.scheduler.Scheduler`, `streams.relay.Relay`) over a store
that records every write, and appends what a worker that folded them leaves on the log:

1. the rows changelog: every row write in order, one record each, in the queue's
   partition (Tansu never compacts, so a worker's changelog holds every write too);
2. the relay's notes, and the relay table's changelog from folding them;
3. the consumer group's committed offsets: the end of both topics.

The first worker start then recovers its tables from the changelogs instead of folding
the history; what each measured restart reads (local store, changelogs, committed
offsets) is what it read before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from streams.app import RELAY_TABLE, TABLE, relay_topic
from streams.relay import Note, Relay, RelayBook
from streams.scheduler import Scheduler
from taskfold.broker import clients
from taskfold.broker.topics import TopicNames, queue_partition
from taskfold.core import foldrows
from taskfold.core.edge import now_ms
from taskfold.core.events import Event
from taskfold.log.records import RawRecord
from taskfold.log.wire import encode_event
from taskfold.log.writer import LogWriter

CHUNK = 20_000  # records per append


class Recording(dict):
    """A row store that keeps every write in order (value None: a delete), as faust sends them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, bytes | None]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        super().__setitem__(key, value)
        self.writes.append((key, value))

    def pop(self, key: bytes, default: object = None) -> object:
        self.writes.append((key, None))
        return super().pop(key, default)

    def taken(self) -> list[tuple[bytes, bytes | None]]:
        """The writes since the last call."""
        out, self.writes = self.writes, []
        return out


@dataclass
class NoteRecord:
    partition: int
    offset: int
    value: bytes


def changelog(app_id: str, table: str) -> str:
    """The changelog topic faust gives a table."""
    return f"{app_id}-{table}-changelog"


async def build(bootstrap: str, tansu: bool, topics: TopicNames, partitions: int, events: Iterable[Event]) -> int:
    """Append the events and the worker state of having folded them; returns the events appended."""
    app_id = f"{topics.prefix}scheduler"  # streams.app.build: the group, and the changelogs' prefix
    rows_log, relay_log = changelog(app_id, TABLE), changelog(app_id, RELAY_TABLE)
    await _create(bootstrap, [rows_log, relay_log, relay_topic(topics)], partitions)
    rows, relay_rows = Recording(), Recording()
    scheduler = Scheduler(rows, partitions=partitions)
    relay = Relay(RelayBook(relay_rows, actor="relay:worker-1", clock_ms=now_ms), _no_resolutions)
    ends: dict[tuple[str, int], int] = {}
    count, started = 0, time.perf_counter()
    async with LogWriter(bootstrap, tansu=tansu) as writer:
        for chunk in _chunks(events):
            records = [RawRecord(key=e.queue, value=v, headers=h) for e in chunk for v, h in [encode_event(e)]]
            notes: list[Note] = []
            stamp = now_ms()
            for event, where in zip(chunk, await writer.append(topics.events, records)):
                notes += scheduler.apply(event, where.partition, where.offset, stamp).notes
                ends[(topics.events, where.partition)] = where.offset + 1
            await _changelog(writer, rows_log, rows.taken(), partitions)
            noted = await writer.append(relay_topic(topics), [RawRecord(key=n.dependency, value=n.encode())
                                                              for n in notes])
            relay_writes: dict[int, list] = {}
            for note, where in zip(notes, noted):
                await relay.on_record(NoteRecord(where.partition, where.offset, note.encode()))
                ends[(relay_topic(topics), where.partition)] = where.offset + 1
                relay_writes.setdefault(where.partition, []).extend(relay_rows.taken())
            for partition, writes in relay_writes.items():
                await _append_rows(writer, relay_log, writes, partition)
            count += len(chunk)
            print(f"\rhistory: {count:,} events and their worker state, {time.perf_counter() - started:.0f} s",
                  end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    await _commit(bootstrap, app_id, ends)
    return count


async def _no_resolutions(events: list[Event]) -> None:
    if events:
        raise RuntimeError(f"the history has no cross-queue dependencies, yet the relay resolved {len(events)}")


def _chunks(events: Iterable[Event]) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _changelog(writer: LogWriter, topic: str, writes: list, partitions: int) -> None:
    """Row writes go to their queue's partition (every key starts with the queue: foldrows.key)."""
    by_partition: dict[int, list] = {}
    for key, value in writes:
        queue, kind, ident = foldrows.parse_key(key)
        partition = int(ident) if kind == foldrows.OFFSET and not queue else queue_partition(queue, partitions)
        by_partition.setdefault(partition, []).append((key, value))
    for partition, part in by_partition.items():
        await _append_rows(writer, topic, part, partition)


async def _append_rows(writer: LogWriter, topic: str, writes: list, partition: int) -> None:
    for first in range(0, len(writes), CHUNK):
        await writer.append(topic, [RawRecord(key=k.decode(), value=v, partition=partition)  # type: ignore[arg-type]
                                    for k, v in writes[first:first + CHUNK]])


async def _create(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=clients.changelog_configs())
                                   for n in names])
    finally:
        await admin.close()


async def _commit(bootstrap: str, group: str, ends: dict[tuple[str, int], int]) -> None:
    """Commit the group's offsets at the ends, as a worker that read everything would have."""
    consumer = clients.consumer(bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = {TopicPartition(topic, partition): end for (topic, partition), end in ends.items()}
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()

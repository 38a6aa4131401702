"""A projection kept live: tails `events`, `progress` and `heartbeats` into a Projector.

Each topic is read by its own no-group consumer from the offsets the store holds, one
fetch per batch, so a restart resumes exactly where the last committed batch ended. The
gateway uses it for read-your-write (`wait_applied`), readiness (`caught_up`) and lag.

How far a topic has been read is the consumer's position, not the last record applied:
the position also moves past offsets that hold no record (expired by retention,
compacted, transaction markers), so a `progress` partition whose records all expired is
caught up, not behind for ever. A stored offset the log no longer has (below its start
after retention, or past its end after the topic was recreated) follows `OFFSET_RESET`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

from projections.projector import EVENTS, HEARTBEATS, PROGRESS, Item, PoisonSeen, Projector
from aiokafka.errors import OffsetOutOfRangeError
from immutables import Map

from projections.store import Store
from projections.view import Change, Telemetry, View
from taskfold.broker.settings import DemandWait, fetch_max_wait_ms
from taskfold.broker.topics import TopicNames
from taskfold.config import ClusterSettings
from taskfold.log.eventlog import Poison, entry_of
from taskfold.log.reader import LogReader
from taskfold.log.records import ConsumedRecord
from taskfold.core import workingset
from taskfold.core.foldrows import Queue
from taskfold.core.state import QueueState
from taskfold.core.telemetry import Heartbeat, ProgressChunk
from taskfold.log.wire import PoisonMessage, decode_record

log = logging.getLogger(__name__)

WRITE_PATH_FETCH_WAIT_MS = 20  # the events reader's longest parked Fetch on Tansu (see __init__)
RECENT = 100_000  # applied events remembered for read-your-write after they were applied
# What a reader does when the log no longer has its stored offset. Progress and heartbeats
# are telemetry: what expired is gone, read on from the log start. Events are the system
# of record: skipping what retention deleted would fold a different history, so the
# projection stops naming the gap, unless the operator allowed retention on events.
OFFSET_RESET = {PROGRESS: "earliest", HEARTBEATS: "earliest", EVENTS: "none"}


def offset_reset(role: str, settings: ClusterSettings | None = None) -> str:
    """aiokafka's auto_offset_reset for a topic role: OFFSET_RESET, events 'earliest' if retention is allowed."""
    if role == EVENTS and (settings or ClusterSettings()).events_retention_allowed:
        return "earliest"
    return OFFSET_RESET[role]


def remembered(change: Change) -> Change:
    """The change as the recent window keeps it: its event, verdict and rows, and of the queue
    after it only the tasks a writer reads back (writes.judge, admission, agents_http).

    A whole `after` pins that version of the queue's state: 100,000 of them held about
    4 KB each (a 5,000-task burst: gateway peak RSS 236 MB, 150 with a window of 1,000).
    """
    after = change.after.state
    ids = {*workingset.wanted(QueueState(), change.event), *(t.task_id for t in change.tasks)}
    if change.verdict.ref:
        ids.add(change.verdict.ref)
    kept = {tid: task for tid in ids if (task := after.task(tid)) is not None}
    return replace(change, before=Queue(), after=Queue(QueueState(tasks=Map(kept))))


class OffsetGone(RuntimeError):
    """The log no longer has the offset the store would resume from."""


def telemetry_of(role: str, record: ConsumedRecord) -> Telemetry | Poison:
    """Decode a progress chunk or heartbeat; anything else is poison, never an exception."""
    expected = ProgressChunk if role == PROGRESS else Heartbeat
    if record.value is None:
        # A compacted heartbeat tombstone: nothing to apply, but the offset counts.
        return Poison(record.partition, record.offset, "empty record (no value)", record.key, None, record.headers)
    try:
        decoded = decode_record(record.value)
    except PoisonMessage as exc:
        return Poison(record.partition, record.offset, exc.reason, record.key, record.value, record.headers)
    if not isinstance(decoded, expected):
        reason = f"a {type(decoded).__name__} on the {role} topic, which carries {expected.__name__} only"
        return Poison(record.partition, record.offset, reason, record.key, record.value, record.headers)
    return Telemetry(role, record.partition, record.offset, decoded)


class LiveProjection:
    """A store kept up to date with the log, and the waits the gateway needs."""

    def __init__(self, bootstrap: str, topics: TopicNames, path: Path | str, views: Sequence[View], *,
                 tansu: bool = False) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.tansu = tansu
        self.store = Store(path)
        # Finished tasks live in the store only (projections.workingset): the gateway's
        # memory follows the tasks in flight, not the history (1 GB at 52,000 tasks before).
        self.projector = Projector(self.store, views, keep_finished=False)
        self.projector.listeners.append(self._settle)
        self._names = {EVENTS: topics.events, PROGRESS: topics.progress, HEARTBEATS: topics.heartbeats}
        # Read-your-write waits for the events reader: on Tansu a parked Fetch is not woken
        # by new data, so its max wait is the latency floor of every write (BROKER.md). Each
        # Fetch that finds records costs the broker a listing of the partition, so the reader
        # fetches quickly only while a caller waits on it (settings.DemandWait).
        self._demand = DemandWait(WRITE_PATH_FETCH_WAIT_MS, fetch_max_wait_ms(True)) if tansu else None
        self._waiting = 0
        self._last_wait_done = float("-inf")  # loop time when the last wait on the projection ended
        self._readers = {role: LogReader(bootstrap, tansu=tansu, auto_offset_reset=offset_reset(role))
                         for role in self._names}
        self._tasks: list[asyncio.Task] = []
        self._waiters: dict[tuple[int, int], list[asyncio.Future[Change]]] = {}
        self._recent: OrderedDict[tuple[int, int], Change] = OrderedDict()
        self._applied = asyncio.Condition()
        self.ends: dict[str, dict[int, int]] = {}  # ends captured at start: caught up once reached
        self._highwater: dict[str, dict[int, int]] = {role: {} for role in self._names}
        self._position: dict[str, dict[int, int]] = {role: {} for role in self._names}
        self.failure: BaseException | None = None

    async def start(self) -> None:
        """Connect and start tailing every topic."""
        for role, reader in self._readers.items():
            await reader.start()
            self.ends[role] = await reader.end_offsets(self._names[role])
        for role in self._names:
            self._tasks.append(asyncio.create_task(self._tail(role), name=f"projection-{role}"))

    async def stop(self) -> None:
        """Stop tailing, disconnect, close the store."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for reader in self._readers.values():
            await reader.stop()
        self.store.close()

    async def _tail(self, role: str) -> None:
        topic = self._names[role]
        reader = self._readers[role]
        start = self.projector.offsets[role]
        try:
            async with aclosing(reader.batches(topic, start=dict(start), live=True, idle_ms=200,
                                               contiguous=not self.topics.compacted(topic))) as batches:
                async for records in batches:
                    if records:
                        entries = [entry_of(r) if role == EVENTS else telemetry_of(role, r) for r in records]
                        self.projector.apply(role, entries)
                        if not self.caught_up():
                            # While catching up on a long log, the fold's state is long-lived:
                            # keep the cyclic GC from rescanning it (README, Benchmarks: tuning).
                            gc.freeze()
                    self._note_progress(role, reader)
                    async with self._applied:
                        self._applied.notify_all()
        except asyncio.CancelledError:
            raise
        except OffsetOutOfRangeError as exc:
            offsets = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            gone = ", ".join(f"partition {tp.partition} offset {o}" for tp, o in offsets.items()) or "an offset"
            self._fail(role, OffsetGone(
                f"{topic} no longer has {gone}, where this store resumes: the records were deleted "
                "(retention on events) or the topic was recreated; rebuild the projection "
                "(`taskfold replay --rebuild`), or set TASKFOLD_EVENTS_RETENTION_ALLOWED=true to read on "
                "from the log start"))
            raise self.failure from None
        except BaseException as exc:  # a dead tail must show in /readyz, not hang writers
            self._fail(role, exc)
            raise

    def _note_progress(self, role: str, reader: LogReader) -> None:
        """Remember each partition's high watermark and position after a batch."""
        topic = self._names[role]
        for p in self.ends.get(role, {}):
            end, position = reader.highwater(topic, p), reader.position(topic, p)
            if end is not None:
                self._highwater[role][p] = end
            if position is not None:
                self._position[role][p] = position

    def _fail(self, role: str, exc: BaseException) -> None:
        topic = self._names[role]
        self.failure = exc
        log.error("projection of %s stopped: %s", topic, exc, exc_info=exc)
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(RuntimeError(f"the projection of {topic} stopped: {exc}"))

    def _settle(self, items: Sequence[Item]) -> None:
        for item in items:
            if isinstance(item, Change):
                key = (item.partition, item.offset)
                self._recent[key] = remembered(item)
                for future in self._waiters.pop(key, ()):
                    if not future.done():
                        future.set_result(item)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def applied(self, partition: int, offset: int) -> Change | None:
        """The applied event at that position of `events`, if it is still remembered."""
        return self._recent.get((partition, offset))

    async def wait_applied(self, partition: int, offset: int, timeout: float) -> Change:
        """The event at that position once applied; TimeoutError after `timeout` seconds."""
        key = (partition, offset)
        if self.failure is not None:
            raise RuntimeError(f"the projection stopped: {self.failure}")
        change = self._recent.get(key)
        if change is not None:
            return change
        if self.projector.next_offset(EVENTS, partition) > offset:
            raise LookupError(f"event {partition}:{offset} was applied too long ago to be remembered")
        future: asyncio.Future[Change] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        try:
            with self._demanded():
                return await asyncio.wait_for(asyncio.shield(future), timeout)
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[key]

    def lag(self) -> dict[str, dict[int, int]]:
        """{topic role: {partition: records behind the last fetched high watermark}}."""
        out: dict[str, dict[int, int]] = {}
        for role in self._names:
            ends = {**self.ends.get(role, {}), **self._highwater[role]}
            out[role] = {p: max(0, end - self.read_to(role, p)) for p, end in ends.items()}
        return out

    def read_to(self, role: str, partition: int) -> int:
        """How far a partition has been read: the consumer's position, or the next offset to apply if further."""
        return max(self.projector.next_offset(role, partition), self._position[role].get(partition, 0))

    def caught_up(self) -> bool:
        """True once every partition has been read up to where it ended at start (by position)."""
        if self.failure is not None or not self._tasks:
            return False
        return all(self.read_to(role, p) >= end for role, ends in self.ends.items() for p, end in ends.items())

    async def wait_caught_up(self, timeout: float) -> None:
        """Wait until `caught_up`; TimeoutError naming the lag otherwise."""
        async def _wait() -> None:
            async with self._applied:
                await self._applied.wait_for(lambda: self.caught_up() or self.failure is not None)
        try:
            await asyncio.wait_for(_wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"projection not caught up after {timeout}s; lag {self.lag()}") from None
        if self.failure is not None:
            raise RuntimeError(f"the projection stopped: {self.failure}")

    async def wait_for(self, predicate, timeout: float) -> None:  # noqa: ANN001 - any zero-arg callable
        """Wait until `predicate()` is true after some batch; TimeoutError otherwise."""
        async def _wait() -> None:
            async with self._applied:
                await self._applied.wait_for(predicate)
        with self._demanded():
            await asyncio.wait_for(_wait(), timeout)

    @contextlib.contextmanager
    def _demanded(self):  # noqa: ANN202 - a context manager
        """While inside, the events reader fetches with the short wait (Tansu only)."""
        self._waiting += 1
        self._fit_fetch_wait()
        try:
            yield
        finally:
            self._waiting -= 1
            loop = asyncio.get_running_loop()
            self._last_wait_done = loop.time()
            self._fit_fetch_wait()
            if self._demand is not None and not self._waiting:
                loop.call_later(self._demand.linger_s + 0.01, self._fit_fetch_wait)

    def _fit_fetch_wait(self) -> None:
        if self._demand is not None:
            idle_s = asyncio.get_running_loop().time() - self._last_wait_done
            self._readers[EVENTS].set_fetch_wait(self._demand.wait_ms(self._waiting, idle_s))


__all__ = ["LiveProjection", "PoisonSeen", "telemetry_of"]

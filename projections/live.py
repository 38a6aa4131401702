"""A projection kept live: tails `events`, `progress` and `heartbeats` into a Projector.

Each topic is read by its own no-group consumer from the offsets the store holds, one
fetch per batch, so a restart resumes exactly where the last committed batch ended. The
gateway uses it for read-your-write (`wait_applied`), readiness (`caught_up`) and lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path

from projections.projector import EVENTS, HEARTBEATS, PROGRESS, Item, PoisonSeen, Projector
from projections.store import Store
from projections.view import Change, Telemetry, View
from taskfold.broker.topics import TopicNames
from taskfold.log.eventlog import Poison, entry_of
from taskfold.log.reader import LogReader
from taskfold.log.records import ConsumedRecord
from taskfold.core.telemetry import Heartbeat, ProgressChunk
from taskfold.log.wire import PoisonMessage, decode_record

log = logging.getLogger(__name__)

WRITE_PATH_FETCH_WAIT_MS = 20  # the events reader's longest parked Fetch on Tansu (see __init__)
RECENT = 100_000  # applied events remembered for read-your-write after they were applied


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
        self.projector = Projector(self.store, views)
        self.projector.listeners.append(self._settle)
        self._names = {EVENTS: topics.events, PROGRESS: topics.progress, HEARTBEATS: topics.heartbeats}
        # Read-your-write waits for the events reader: on Tansu a parked Fetch is not woken
        # by new data, so its max wait is the latency floor of every write (BROKER.md).
        quick = {"fetch_max_wait_ms": WRITE_PATH_FETCH_WAIT_MS} if tansu else {}
        self._readers = {role: LogReader(bootstrap, tansu=tansu, **(quick if role == EVENTS else {}))
                         for role in self._names}
        self._tasks: list[asyncio.Task] = []
        self._waiters: dict[tuple[int, int], list[asyncio.Future[Change]]] = {}
        self._recent: OrderedDict[tuple[int, int], Change] = OrderedDict()
        self._applied = asyncio.Condition()
        self.ends: dict[str, dict[int, int]] = {}  # ends captured at start: caught up once reached
        self._highwater: dict[str, dict[int, int]] = {role: {} for role in self._names}
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
                    for p in self.ends.get(role, {}):
                        end = reader.highwater(topic, p)
                        if end is not None:
                            self._highwater[role][p] = end
                    async with self._applied:
                        self._applied.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a dead tail must show in /readyz, not hang writers
            self.failure = exc
            log.exception("projection of %s stopped", topic)
            for futures in self._waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(RuntimeError(f"the projection of {topic} stopped: {exc}"))
            raise

    def _settle(self, items: Sequence[Item]) -> None:
        for item in items:
            if isinstance(item, Change):
                key = (item.partition, item.offset)
                self._recent[key] = item
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
            out[role] = {p: max(0, end - self.projector.next_offset(role, p)) for p, end in ends.items()}
        return out

    def caught_up(self) -> bool:
        """True once every partition has been applied up to where it ended at start."""
        if self.failure is not None or not self._tasks:
            return False
        return all(self.projector.next_offset(role, p) >= end
                   for role, ends in self.ends.items() for p, end in ends.items())

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
        await asyncio.wait_for(_wait(), timeout)


__all__ = ["LiveProjection", "PoisonSeen", "telemetry_of"]

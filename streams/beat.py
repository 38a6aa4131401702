"""The beat (issue 15): fires the due slots of recurring schedules, inside the worker's app.

The protocol, in order:
1. Tail the `events` partitions this worker holds (the scheduler's, so each partition has
   one beat) from the beginning, without a consumer group; a rebalance starts over. Fold
   the records about schedules into a `ScheduleBook`: their `type` header names a
   Schedule* event, or a TaskSubmitted whose `task` header has a fired slot's `sched:`
   prefix. Undecodable records are the scheduler's business (it quarantines them).
2. Fire only once every held partition has been read to its Fetch high watermark: before
   that the book is behind, and the cursors it holds are stale.
3. At most every `tick_ms`, ask the book which slots are due at the wall clock, keep those
   of queues on partitions this worker owns (a rebalance may make two owners for a
   moment; that costs a duplicate, never a second task), append them and wait for the
   acks, then fold them at once: they are in the log, so the cursor moves on.
4. After a crash nothing is remembered but the log: step 1 folds again what was fired, and
   a slot fired twice anyway carries the same ids, so the fold takes it as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from contextlib import aclosing

from schemas.codec import PoisonMessage
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event, ScheduleEvent, TaskSubmitted
from taskfold.log import LogReader
from taskfold.log.eventlog import EventLog
from taskfold.log.records import ConsumedRecord
from taskfold.core.scheduling.recurring import TASK_PREFIX, ScheduleBook, key_of
from taskfold.log.wire import decode_event

log = logging.getLogger(__name__)

WATCHED = frozenset({cls.event_type for cls in ScheduleEvent} | {TaskSubmitted.event_type})


class Beat:
    """Folds the schedules of the log and fires their due slots (steps 1-4 above)."""

    def __init__(self, bootstrap: str, topics: TopicNames, *, tansu: bool, actor: str,
                 clock_ms: Callable[[], int], owned: Callable[[], set[int] | None], tick_ms: int = 200) -> None:
        self.bootstrap, self.topics, self.tansu = bootstrap, topics, tansu
        self.actor, self.clock_ms, self.owned, self.tick_ms = actor, clock_ms, owned, tick_ms
        self.book = ScheduleBook()
        self.partition_of: dict[tuple[str, str], int] = {}
        self.read: dict[int, int] = {}  # partition -> next offset to fold
        self.fired = 0
        self._checked_at = 0

    async def run(self) -> None:
        """Run until cancelled; a rebalance or a broker hiccup starts the fold again from the log."""
        while True:
            try:
                await self._follow(await self._assigned())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the beat failed; folding the schedules again from the log in 1 s")
                await asyncio.sleep(1.0)

    async def _assigned(self) -> set[int]:
        """The partitions this worker holds, once it holds any."""
        while not (owned := self.owned()):
            await asyncio.sleep(self.tick_ms / 1000)
        return owned

    async def _follow(self, owned: set[int]) -> None:
        """Steps 1-3 over the partitions held now; returns when the worker holds others."""
        self.book, self.partition_of, self.read = ScheduleBook(), {}, {}
        topic = self.topics.events
        async with LogReader(self.bootstrap, tansu=self.tansu) as reader, \
                EventLog(self.bootstrap, self.topics, tansu=self.tansu) as out:
            batches = reader.batches(topic, sorted(owned), live=True, idle_ms=max(50, self.tick_ms))
            async with aclosing(batches) as stream:
                async for batch in stream:
                    for record in batch:
                        self.fold(record)
                    if self.owned() != owned:
                        return
                    ends = [reader.highwater(topic, p) for p in owned]
                    if all(end is not None and end <= self.read.get(p, 0) for p, end in zip(owned, ends)):
                        await self.tick(out.append)

    def fold(self, record: ConsumedRecord) -> None:
        """Step 1: fold one record if it may be about a schedule."""
        self.read[record.partition] = record.offset + 1
        headers = dict(record.headers)
        kind = headers.get("type", b"").decode(errors="replace")
        if record.value is None or kind not in WATCHED:
            return
        # Only submits a schedule fired are decoded: most of a busy log is other tasks' submits.
        if kind == TaskSubmitted.event_type and not headers.get("task", b"").startswith(TASK_PREFIX.encode()):
            return
        try:
            event = decode_event(record.value)
        except PoisonMessage:
            return
        key = key_of(event)
        if key is not None:
            self.partition_of.setdefault(key, record.partition)
            self.book.apply(event)

    async def tick(self, append: Callable[[Sequence[Event]], object]) -> list[Event]:
        """Step 3: append the due slots of the owned schedules and fold them."""
        now = self.clock_ms()
        if now - self._checked_at < self.tick_ms:
            return []
        self._checked_at = now
        owned = self.owned()
        if not owned:
            return []
        due = [e for e in self.book.due(now, self.actor) if self.partition_of.get(key_of(e)) in owned]  # type: ignore[arg-type]
        if due:
            await append(due)  # type: ignore[misc]
            for event in due:
                self.book.apply(event)
            self.fired += len(due)
        return due

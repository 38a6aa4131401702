"""The projector: folds records into the views and commits each batch atomically.

It keeps every queue's fold and fleet in memory (persisted as rows in table `_fold`, so a
restart does not replay from zero) and judges each event with the same `evolve` as the
scheduler. Records at or past a partition's stored offset are applied; earlier ones are
duplicates by position and dropped. One batch of records is one RocksDB write batch: the
view rows, the fold rows and the offsets together. No I/O but the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from projections.store import Batch, Store
from projections.view import Change, Telemetry, View, position_key
from projections.workingset import FOLD, WorkingSet
from taskfold.core import foldrows
from taskfold.core.fold.placement import stamp
from taskfold.log.eventlog import Poison, Recorded
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.state import Task

POISON = "poison"  # table: position -> reason, for every undecodable record seen
EVENTS, PROGRESS, HEARTBEATS = "events", "progress", "heartbeats"  # topic roles
# 2: verdicts judge where a record sits (misrouted, clock skew) and the time index leaves
# out rejected stamps; a format-1 store may hold other verdicts and a truncating index.
STORE_FORMAT = 2
DEFAULT_POLICY = QueuePolicy()  # built once, not per event: a rebuild asks for it on every event


@dataclass(frozen=True, slots=True)
class PoisonSeen:
    """An undecodable record of one of the projected topics."""

    topic: str
    poison: Poison


Item = Change | Telemetry | PoisonSeen
Listener = Callable[[Sequence[Item]], None]


class StoreFormatError(RuntimeError):
    """A store written by an incompatible version: rebuild it."""


class Projector:
    """Applies records of `events`, `progress` and `heartbeats` to a set of views."""

    def __init__(self, store: Store, views: Sequence[View],
                 policy: Callable[[str], QueuePolicy] = lambda queue: DEFAULT_POLICY, *,
                 keep_finished: bool = True, keys_in_store: bool = False) -> None:
        self.store = store
        self.views = list(views)
        self.policy = policy
        self.listeners: list[Listener] = []
        fmt = store.meta("format")
        if fmt not in (None, STORE_FORMAT):
            raise StoreFormatError(
                f"the store at {store.path} has format {fmt}, this version writes {STORE_FORMAT}; "
                "rebuild it with `taskfold replay --rebuild`")
        # keep_finished=False (a rebuild): finished tasks live in the store only (see WorkingSet).
        self.fold = WorkingSet(store, keep_finished=keep_finished, keys_in_store=keys_in_store)
        self.offsets = {role: store.offsets(role) for role in (EVENTS, PROGRESS, HEARTBEATS)}
        self.counts: Counter = Counter(store.meta("counts") or {})
        self.seconds = 0.0  # time spent applying, for events/s

    @property
    def queues(self) -> dict[str, foldrows.Queue]:
        """Every queue's fold and fleet."""
        return self.fold.queues

    def queue(self, name: str) -> foldrows.Queue:
        """A queue's fold and fleet (empty if never seen). Finished tasks may be in the store
        only: look a task up with `task`, not in the state's task map."""
        return self.fold.queue(name)

    def task(self, queue: str, task_id: str) -> Task | None:
        """A task of a queue, in memory or stored (None if the queue never had it)."""
        return self.fold.task(queue, task_id)

    def key_owner(self, queue: str, key: str) -> str | None:
        """The task holding an idempotency key in a queue, in memory or stored."""
        return self.fold.key_owner(queue, key)

    def next_offset(self, topic: str, partition: int) -> int:
        """The next offset of a topic's partition that the rows do not reflect yet."""
        return self.offsets[topic].get(partition, 0)

    def apply(self, topic: str, entries: Iterable[Recorded | Poison | Telemetry]) -> list[Item]:
        """Apply records of one topic (in log order per partition) in one atomic batch."""
        started = time.perf_counter()
        batch = self.store.batch()
        if self.store.meta("format") is None:
            batch.put("_meta", "format", STORE_FORMAT)
        applied: list[Item] = []
        seen = self.offsets[topic]
        touched: dict[int, int] = {}
        for entry in entries:
            if entry.offset < seen.get(entry.partition, 0):
                self.counts["dropped_by_position"] += 1
                continue
            touched[entry.partition] = seen[entry.partition] = entry.offset + 1
            if isinstance(entry, Poison):
                self.counts["poison"] += 1
                batch.put(POISON, f"{topic}:{position_key(entry.partition, entry.offset)}",
                          {"topic": topic, "partition": entry.partition, "offset": entry.offset,
                           "reason": entry.reason, "key": entry.key})
                applied.append(PoisonSeen(topic, entry))
            elif isinstance(entry, Telemetry):
                self.counts[topic] += 1
                for view in self.views:
                    view.telemetry(entry, batch)
                applied.append(entry)
            else:
                applied.append(self._event(entry, batch))
        self.fold.flush(batch)
        for partition, next_offset in touched.items():
            batch.offset(topic, partition, next_offset)
        batch.put("_meta", "counts", dict(self.counts))
        batch.commit()
        self.seconds += time.perf_counter() - started
        for listener in self.listeners:
            listener(applied)
        return applied

    def _event(self, entry: Recorded, batch: Batch) -> Change:
        event = entry.event
        where = entry.where
        step = self.fold.fold(event, self.policy(event.queue), where)
        self.counts["events"] += 1
        self.counts[step.verdict.outcome] += 1
        change = Change(entry.partition, entry.offset, event, step.verdict, step.before, step.after,
                        tuple(step.tasks), stamp(event.occurred_at, where))
        for view in self.views:
            view.apply(change, batch)
        return change

"""The results of a task's dependencies, for its handler (`await task.dependency_results()`).

Results never travel with the dependent: not in its payload (the payload limit is the
dependent's own), not in DependencyResolved, not in any scheduler row. A dependency's
result stays where it was written, in its TaskCompleted, and is read from the log when a
handler asks:

1. A dependency in a queue this agent serves is in the agent's own fold: its row holds
   the result of the accepted completion.
2. Otherwise its queue is named by the DependencyResolved the relay appended to the
   dependent's queue (`causation_id` = "<queue>/<task id>"), which this agent folded.
   The agent folds that queue's partition with the shared fold, from the beginning once,
   then from where it stopped (kept per partition for the agent's life, on its own log
   client so the agent's tail is not disturbed), and takes the row's result. Only the
   fold knows which of several TaskCompleted (a zombie's, a retry's) was accepted.

A dependency that ran anyway after failing (on_dependency_failure: run) has no result:
its entry is None. A result is keyed by the dependency's node name when it is a workflow
node, else by its task id.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from taskfold.broker.topics import queue_partition
from taskfold.core.events import DependencyResolved, Event
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog, Poison, entry_of
from taskfold.core.state import Task, TaskState, Verdict
from taskfold.workflows.spec import node_of


class DependencyUnknown(LookupError):
    """A dependency's result cannot be found: the message names the dependency and why."""


class DependencyResults:
    """Finds dependency results: in the agent's fold, or by folding the dependency's partition."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.where: dict[str, str] = {}  # dependency task id -> its queue, from DependencyResolved
        self._open: Callable[[], EventLog] | None = None
        self._log: EventLog | None = None
        self._foreign: dict[int, tuple[Ledger, int]] = {}  # partition -> (its fold, next offset)
        self._lock = asyncio.Lock()
        self.counts: Counter[str] = Counter()  # results found in the agent's fold ("own") or another queue's

    def connect(self, open_log: Callable[[], EventLog]) -> None:
        """How to open the log client used for other queues' partitions (opened on first use)."""
        self._open = open_log

    def note(self, event: Event, verdict: Verdict) -> None:
        """Take in a folded event: an accepted DependencyResolved names its dependency's queue."""
        if isinstance(event, DependencyResolved) and verdict.accepted and event.causation_id:
            queue, sep, dependency = event.causation_id.partition("/")
            if sep and dependency == event.dependency_id:
                self.where[dependency] = queue

    async def of(self, task: Task) -> dict[str, Any]:
        """{node name or task id: parsed result} of every dependency of `task`."""
        out: dict[str, Any] = {}
        for dependency in task.depends_on:
            row = self._own(dependency, task.queue)
            self.counts["own" if row is not None else "other_queue"] += 1
            row = row or await self._foreign_row(dependency)
            if not row.state.terminal:
                raise DependencyUnknown(f"dependency {dependency} of task {task.task_id} is {row.state.value}")
            name = node_of(row.task_id, row.correlation_id, row.idempotency_key) or row.task_id
            completed = row.state == TaskState.completed and row.result is not None
            out[name] = json.loads(row.result) if completed else None  # type: ignore[arg-type]
        return out

    def _own(self, dependency: str, prefer: str) -> Task | None:
        row = self.ledger.state(prefer).task(dependency)
        if row is not None:
            return row
        return next((q.task(dependency) for q in self.ledger.queues.values() if q.task(dependency)), None)

    async def _foreign_row(self, dependency: str) -> Task:
        queue = self.where.get(dependency)
        if queue is None:
            raise DependencyUnknown(f"dependency {dependency} is in no queue this agent folds, and no "
                                    "DependencyResolved folded here names its queue")
        if self._open is None:
            raise DependencyUnknown(f"dependency {dependency} is in queue {queue}, and this agent has no log client")
        async with self._lock:
            ledger = await self._fold_partition(queue)
        row = ledger.state(queue).task(dependency)
        if row is None:
            raise DependencyUnknown(f"dependency {dependency} is not in queue {queue} (up to its end now)")
        return row

    async def _fold_partition(self, queue: str) -> Ledger:
        """Fold the queue's partition from where this agent stopped to its end now."""
        if self._log is None:
            self._log = self._open()  # type: ignore[misc]
            await self._log.start()
        log = self._log
        partition = queue_partition(queue, len(await log.reader.partitions(log.topics.events)))
        ledger, start = self._foreign.get(partition, (Ledger(), 0))
        async with aclosing(log.reader.read(log.topics.events, [partition], start={partition: start})) as records:
            async for record in records:
                start = record.offset + 1
                entry = entry_of(record)
                if record.key == queue and not isinstance(entry, Poison):
                    ledger.apply(entry.event, entry.where)
        self._foreign[partition] = (ledger, start)
        return ledger

    async def close(self) -> None:
        """Close the log client, if one was opened."""
        if self._log is not None:
            await self._log.stop()
            self._log = None

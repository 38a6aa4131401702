"""The events log folded incrementally by a client: each partition from offset 0, once, in order.

Several readers may feed one `LogFold` (a catch-up read and a live wait, say). Each reader
starts at the fold's `read_to` of its partitions and reads them contiguously, and `apply`
skips what was already applied, so every record is folded exactly once and in log order.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskfold.core.events import TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Cut, Entry, EventLog, Poison
from taskfold.log.records import Position
from taskfold.core.state import Task, Verdict


@dataclass(frozen=True)
class Judged:
    """Where an awaited event landed and the fold's verdict on it."""

    position: Position
    verdict: Verdict


class LogFold:
    """A Ledger kept up to date with the log, and the verdicts of the events this client appended."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.ledger = Ledger()
        self.read_to: dict[int, int] = {}
        # The accepted TaskSubmitted of each (queue, idempotency key): a retry is compared with
        # the request, not the folded task (a redrive raises the task's max_attempts).
        self.keyed: dict[tuple[str, str], TaskSubmitted] = {}
        self.awaited: dict[str, Judged | None] = {}  # event id -> its verdict, once folded

    def apply(self, entry: Entry) -> None:
        """Fold one entry unless an earlier read already did."""
        if entry.offset < self.read_to.get(entry.partition, 0):
            return
        self.read_to[entry.partition] = entry.offset + 1
        if isinstance(entry, Poison):
            return
        event = entry.event
        verdict = self.ledger.apply(event, entry.where)
        if isinstance(event, TaskSubmitted) and event.idempotency_key is not None and verdict.accepted:
            self.keyed[(event.queue, event.idempotency_key)] = event
        if event.event_id in self.awaited and self.awaited[event.event_id] is None:
            self.awaited[event.event_id] = Judged(entry.position, verdict)

    async def catch_up(self, until: dict[int, int] | None = None) -> None:
        """Fold every partition to the log's end, or the listed partitions up to `until[p]`."""
        if until is not None:
            until = {p: end for p, end in until.items() if end > self.read_to.get(p, 0)}
            if not until:
                return
        cut = Cut(offsets=until) if until is not None else None
        async for entry in self.log.read(start=dict(self.read_to), cut=cut):
            self.apply(entry)

    def await_events(self, event_ids: list[str]) -> None:
        """Remember the verdicts of these events when they are folded."""
        for event_id in event_ids:
            self.awaited.setdefault(event_id, None)

    def judged(self, event_id: str) -> Judged | None:
        """The verdict of an awaited event once folded (then forgotten), else None."""
        found = self.awaited.get(event_id)
        if found is not None:
            del self.awaited[event_id]
        return found

    def holders(self, task_id: str) -> list[str]:
        """The queues that hold a task with this id, sorted."""
        return sorted(name for name, q in self.ledger.queues.items() if q.task(task_id) is not None)

    def task(self, task_id: str, queue: str) -> Task | None:
        """The folded task of a queue."""
        return self.ledger.state(queue).task(task_id)

"""`priority-start`: no agent starts a task while a task of strictly higher priority, which it
had already read as assigned to it, waits unstarted (issue 12's promise for a seat).

Judged by what the agent had read, not by log order. A TaskStarted (v2) carries `seen`:
the offset of the last record of the queue's partition its agent had read when it chose
the attempt. A start decided before the agent read a critical assignment can land after
that assignment in the log (the report waits out the append window), and is no inversion
the agent could have avoided. A start without `seen` (v1, other writers), or events
audited without their positions, are not judged.
"""

from __future__ import annotations

from taskfold.audit.report import Violation
from taskfold.audit.shadow import Books
from taskfold.core.events import Event, TaskAssigned, TaskStarted
from taskfold.core.state import TaskState
from taskfold.log.records import Position


class PriorityStarts:
    """Where each accepted assignment sits, and the rule judged at each accepted start."""

    def __init__(self) -> None:
        self.assigned_at: dict[tuple[str, str], int] = {}  # (queue, task) -> offset of its accepted assignment

    def judge(self, books: Books, event: Event, position: str | None) -> Violation | None:
        """Judge an accepted event against the books as they were before it."""
        if position is None:
            return None
        if isinstance(event, TaskAssigned):
            self.assigned_at[(event.queue, event.task_id)] = Position.parse(position).offset
            return None
        if not isinstance(event, TaskStarted) or event.seen is None:
            return None
        seat, book = books.seat(event.queue, event.agent_id), books.task(event.queue, event.task_id)
        if seat is None or book is None:
            return None
        tasks = books.queue(event.queue).tasks
        waiting = sorted(t for t in seat.holding - {event.task_id}
                         if t in tasks and tasks[t].state is TaskState.assigned and tasks[t].rank < book.rank
                         and self.assigned_at.get((event.queue, t), event.seen + 1) <= event.seen)
        if not waiting:
            return None
        return Violation("priority-start", event.queue, f"agent {event.agent_id} started {event.task_id} (priority "
                         f"rank {book.rank}) after reading up to offset {event.seen}, while it held the higher-"
                         f"priority {', '.join(waiting)} unstarted", event.task_id, event.agent_id)

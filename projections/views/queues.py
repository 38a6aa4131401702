"""The queues view: depth by state and priority, the oldest waiting task, and totals.

Tables (keys NUL-joined):
* `queues`         queue -> {queue, states: {state: tasks now}, waiting_by_priority: {priority: tasks},
                   submitted, completed, failed (attempts), dead_lettered, cancelled (tasks that
                   entered those states, ever), events, accepted, duplicate, rejected,
                   first_event_at, last_event_at, last_position}
* `queue_waiting`  queue, arrival -> {task_id, submitted_at, priority, state} for every task
                   waiting to be placed (queued, scheduled, retry_wait): the first row of a
                   queue's prefix is its oldest waiting task, a range lookup instead of a scan.
"""

from __future__ import annotations

from typing import Any

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import arrival_key, join
from taskfold.core.events import Priority
from taskfold.core.state import Task, TaskState

QUEUES = "queues"
WAITING = "queue_waiting"
WAITING_STATES = frozenset({TaskState.queued, TaskState.scheduled, TaskState.retry_wait})
FAILURES = frozenset({"TaskFailed", "TaskTimedOut", "TaskLeaseExpired"})
ENTERED = {TaskState.completed: "completed", TaskState.dead_lettered: "dead_lettered",
           TaskState.cancelled: "cancelled"}


def empty_queue(queue: str) -> dict[str, Any]:
    """The row of a queue no event has touched yet."""
    return {"queue": queue, "states": {s.value: 0 for s in TaskState},
            "waiting_by_priority": {p.value: 0 for p in Priority},
            "submitted": 0, "completed": 0, "failed": 0, "dead_lettered": 0, "cancelled": 0,
            "events": 0, "accepted": 0, "duplicate": 0, "rejected": 0,
            "first_event_at": None, "last_event_at": None, "last_position": None}


class QueuesView:
    """Per-queue depth, totals, and the index of waiting tasks."""

    name = "queues"

    def apply(self, change: Change, rows: Rows) -> None:
        event = change.event
        queue = event.queue
        row = rows.get(QUEUES, queue) or empty_queue(queue)
        row["events"] += 1
        row[change.verdict.outcome] += 1
        at = event.occurred_at
        if row["first_event_at"] is None or at < row["first_event_at"]:
            row["first_event_at"] = at
        if row["last_event_at"] is None or at > row["last_event_at"]:
            row["last_event_at"] = at
        row["last_position"] = change.position
        if change.verdict.accepted and event.event_type in FAILURES:
            row["failed"] += 1
        before_state = change.before.state
        for task in change.tasks:
            self._task(row, before_state.task(task.task_id), task, rows)
        rows.put(QUEUES, queue, row)

    def _task(self, row: dict[str, Any], before: Task | None, after: Task, rows: Rows) -> None:
        states, by_priority = row["states"], row["waiting_by_priority"]
        if before is None:
            row["submitted"] += 1
        elif before.state is not after.state:
            states[before.state.value] -= 1
        if before is None or before.state is not after.state:
            states[after.state.value] += 1
            entered = ENTERED.get(after.state)
            if entered is not None:
                row[entered] += 1
        was = before is not None and before.state in WAITING_STATES
        now = after.state in WAITING_STATES
        key = join(after.queue, arrival_key(after.arrival))
        if was and not now:
            by_priority[before.priority.value] -= 1  # type: ignore[union-attr]
            rows.delete(WAITING, key)
        elif now and (not was or before.state is not after.state):  # type: ignore[union-attr]
            if not was:
                by_priority[after.priority.value] += 1
            rows.put(WAITING, key, {"task_id": after.task_id, "submitted_at": after.submitted_at,
                                    "priority": after.priority.value, "state": after.state.value})

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Queues are made of events only."""

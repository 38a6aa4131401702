"""The sessions view: the tasks of a conversation (`session_id`) or a workflow (`correlation_id`).

Tables (keys NUL-joined), written once when a task first appears, in submission time order:
* `session_tasks`      session_id, submitted_at (16 digits), queue, task_id -> {task_id, queue}
* `correlation_tasks`  correlation_id, submitted_at, queue, task_id -> {task_id, queue}
"""

from __future__ import annotations

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join

SESSIONS = "session_tasks"
CORRELATIONS = "correlation_tasks"


def stamp(ms: int) -> str:
    """A time as a sortable key part."""
    return f"{ms:016d}"


class SessionsView:
    """Tasks indexed by session and by correlation id."""

    name = "sessions"

    def apply(self, change: Change, rows: Rows) -> None:
        before = change.before.state
        for task in change.tasks:
            if task.session_id is None and task.correlation_id is None:
                continue
            if before.task(task.task_id) is not None:
                continue
            ref = {"task_id": task.task_id, "queue": task.queue}
            at = stamp(task.submitted_at)
            if task.session_id is not None:
                rows.put(SESSIONS, join(task.session_id, at, task.queue, task.task_id), ref)
            if task.correlation_id is not None:
                rows.put(CORRELATIONS, join(task.correlation_id, at, task.queue, task.task_id), ref)

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Sessions are made of events only."""

"""The dead letters view: one row per task that is dead-lettered now; a redrive removes it.

Table (keys NUL-joined):
* `dead_letters`  queue, task_id -> {task_id, queue, task_type, priority, reason, error,
                  attempts, lost_attempts, max_attempts, agent_id, dead_lettered_at, position}
"""

from __future__ import annotations

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join
from taskfold.core.state import TaskState

DEAD_LETTERS = "dead_letters"


class DeadLettersView:
    """Tasks in the dead letter state, with why they got there."""

    name = "dead_letters"

    def apply(self, change: Change, rows: Rows) -> None:
        before_state = change.before.state
        for task in change.tasks:
            before = before_state.task(task.task_id)
            was = before is not None and before.state is TaskState.dead_lettered
            now = task.state is TaskState.dead_lettered
            key = join(task.queue, task.task_id)
            if was and not now:
                rows.delete(DEAD_LETTERS, key)
            elif now and not was:
                rows.put(DEAD_LETTERS, key, {
                    "task_id": task.task_id, "queue": task.queue, "task_type": task.task_type,
                    "priority": task.priority.value, "reason": task.reason, "error": task.error,
                    "attempts": task.attempt, "lost_attempts": task.lost_attempts, "max_attempts": task.max_attempts,
                    "agent_id": task.agent_id,
                    "dead_lettered_at": change.event.occurred_at, "position": change.position})

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Dead letters are made of events only."""

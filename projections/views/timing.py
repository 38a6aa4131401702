"""When a task waited and ran, read off two consecutive states of it (pure).

Shared by the tasks view (a task's timings) and the analytics view (wait and run samples),
so both measure the same thing:

* a task is *ready* from the moment it could be placed: when it became queued, or when
  its `not_before` or retry delay ran out (`due_at`);
* its *queue wait* for an attempt is from ready to that attempt's assignment;
* an attempt *runs* from its start (its assignment when it never reported one) to the
  event that ended it.
"""

from __future__ import annotations

from taskfold.core.events import AgentLeft, Event, LeaveReason
from taskfold.core.state import Task, TaskState

_OUTCOMES = {"TaskCompleted": "completed", "TaskFailed": "failed", "TaskTimedOut": "timed_out",
             "TaskLeaseExpired": "lease_expired", "TaskCancelled": "cancelled"}


def ready_since(before: Task | None, after: Task, occurred_at: int, previous: int | None) -> int | None:
    """Since when `after` has been ready to be placed; None while it is not waiting to be."""
    state = after.state
    if state is TaskState.queued:
        if before is not None and before.state is TaskState.queued and previous is not None:
            return previous
        return occurred_at
    if state is TaskState.scheduled or state is TaskState.retry_wait:
        return after.due_at if after.due_at is not None else occurred_at
    return None


def attempt_began(before: Task | None, after: Task) -> bool:
    """True when `after` holds an attempt that `before` did not."""
    return after.state.in_flight and (before is None or not before.state.in_flight or before.attempt != after.attempt)


def attempt_ended(before: Task | None, after: Task) -> bool:
    """True when the attempt `before` held is over in `after`."""
    return (before is not None and before.state.in_flight
            and (not after.state.in_flight or after.attempt != before.attempt))


def run_ms(before: Task, ended_at: int) -> int:
    """How long the attempt `before` held ran, up to `ended_at`."""
    began = before.started_at if before.started_at is not None else before.assigned_at
    return max(0, ended_at - began) if began is not None else 0


def wait_ms(ready: int | None, assigned_at: int) -> int:
    """How long a task waited from ready to its assignment."""
    return max(0, assigned_at - ready) if ready is not None else 0


def attempt_outcome(event: Event, after: Task) -> str:
    """How an attempt ended, in a word: completed, failed, timed_out, lease_expired, cancelled, released, lost."""
    outcome = _OUTCOMES.get(event.event_type)
    if outcome is not None:
        return outcome
    if isinstance(event, AgentLeft):
        return "lost" if event.reason is LeaveReason.lost else "released"
    return after.state.value

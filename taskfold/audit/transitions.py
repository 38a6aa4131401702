"""The task state machine as a table, written apart from the fold.

An audit that asked `evolve` whether a transition is legal would only repeat the fold's
answer. This table is a second, small statement of the same design (ARCHITECTURE §4):
for each (state before, event type) the states the task may be in after it. A pair that
is missing is illegal. Finer conditions that a state alone cannot carry (the attempt
number, a pending cancel request, a due time) are the guards in `taskfold.audit.rules`.
"""

from __future__ import annotations

from taskfold.core.state import TaskState as S

Before = S | None  # None: the task does not exist yet

_WAITING = (S.queued, S.scheduled, S.retry_wait)
_HELD = (S.assigned, S.running)
_ADMITTED = frozenset({S.blocked, S.scheduled, S.queued, S.cancelled})
_RETRIED = frozenset({S.retry_wait, S.dead_lettered, S.cancelled})
_REQUEUED = frozenset({S.queued, S.dead_lettered, S.cancelled})


def _each(states: tuple[S, ...], event_type: str, after: frozenset[S] | None = None) -> dict:
    # None as `after` means the event leaves the state as it is (a cancel request on a held task).
    return {(s, event_type): after if after is not None else frozenset({s}) for s in states}


TRANSITIONS: dict[tuple[Before, str], frozenset[S]] = {
    (None, "TaskSubmitted"): _ADMITTED,
    (None, "WorkflowSubmitted"): _ADMITTED,
    (S.blocked, "DependencyResolved"): _ADMITTED | {S.blocked},
    **_each((S.blocked, *_WAITING), "TaskCancelRequested", frozenset({S.cancelled})),
    **_each(_HELD, "TaskCancelRequested"),
    (S.dead_lettered, "TaskRedriven"): frozenset({S.queued}),
    **_each(_WAITING, "TaskAssigned", frozenset({S.assigned})),
    (S.assigned, "TaskStarted"): frozenset({S.running}),
    **_each(_HELD, "TaskCompleted", frozenset({S.completed})),
    **_each(_HELD, "TaskFailed", _RETRIED),
    **_each(_HELD, "TaskTimedOut", _RETRIED),
    **_each(_HELD, "TaskLeaseExpired", _REQUEUED),
    **_each(_HELD, "TaskCancelled", frozenset({S.cancelled})),
    # An agent leaving ends each attempt it holds; for those tasks it is an attempt-ending event.
    **_each(_HELD, "AgentLeft", _REQUEUED),
}

# A seat is absent (None), active (True) or gone (False); joining again is always allowed.
SEAT_TRANSITIONS: dict[tuple[bool | None, str], bool] = {
    (None, "AgentJoined"): True,
    (True, "AgentJoined"): True,
    (False, "AgentJoined"): True,
    (True, "AgentLeft"): False,
}


def allowed(before: Before, event_type: str) -> frozenset[S] | None:
    """The states a task may move to on this event, or None when the event is illegal there."""
    return TRANSITIONS.get((before, event_type))


def seat_allowed(before: bool | None, event_type: str) -> bool:
    """True when a seat in that condition (absent, active, gone) may take this membership event."""
    return (before, event_type) in SEAT_TRANSITIONS

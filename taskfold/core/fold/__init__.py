"""The fold: `evolve(state, event) -> (state, verdict)`, the one arbiter everyone runs.

Pure and deterministic: no clock, no I/O, no faust. The state is one queue's
(`QueueState`); `Ledger` routes events of many queues to their states. A reader that
knows where a record sits passes a `Where`, and the fold first rejects a misrouted or
future-stamped event (`taskfold.core.fold.placement`), the same for every reader.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskfold.core.events import (
    AgentJoined,
    AgentLeft,
    DependencyResolved,
    Event,
    ScheduleCreated,
    ScheduleDeleted,
    SchedulePaused,
    ScheduleResumed,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskRedriven,
    TaskStarted,
    TaskSubmitted,
    TaskTimedOut,
    WorkflowSubmitted,
)
from taskfold.core.fold import attempts, intake, membership
from taskfold.core.fold.placement import Where, misplaced
from taskfold.core.state import ACCEPTED, EMPTY, QueueState, Verdict, duplicate, rejected


def evolve(state: QueueState, event: Event, where: Where | None = None) -> tuple[QueueState, Verdict]:
    """Apply one event of a queue to that queue's state and say whether it counted."""
    # Judged before the state: the verdict must not depend on what else was read first.
    if where is not None and (reason := misplaced(event.queue, event.occurred_at, where)) is not None:
        return state, rejected(reason)
    if _already_applied(state, event):
        return state, duplicate("event already applied", getattr(event, "task_id", None))
    match event:  # the most frequent first: each case is an isinstance check
        case TaskAssigned():
            return attempts.assign(state, event)
        case TaskStarted():
            return attempts.start(state, event)
        case TaskCompleted():
            return attempts.complete(state, event)
        case TaskSubmitted():
            return intake.submit(state, event)
        case TaskFailed():
            return attempts.fail(state, event)
        case TaskLeaseExpired():
            return attempts.expire_lease(state, event)
        case TaskTimedOut():
            return attempts.time_out(state, event)
        case TaskCancelRequested():
            return intake.request_cancel(state, event)
        case TaskCancelled():
            return attempts.acknowledge_cancel(state, event)
        case DependencyResolved():
            return intake.resolve_dependency(state, event)
        case TaskRedriven():
            return intake.redrive(state, event)
        case WorkflowSubmitted():
            return intake.submit_workflow(state, event)
        case AgentJoined():
            return membership.join(state, event)
        case AgentLeft():
            return membership.leave(state, event)
        case ScheduleCreated() | SchedulePaused() | ScheduleResumed() | ScheduleDeleted():
            # A schedule changes no task: its own fold (scheduling/recurring.py) judges it.
            return state, ACCEPTED
    return state, rejected(f"event type {type(event).__name__} has no rule in the fold")


def _already_applied(state: QueueState, event: Event) -> bool:
    # From the fields, not getattr: on an event without the field, pydantic's __getattr__
    # builds and raises an AttributeError, which costs more than the whole check.
    task_id = vars(event).get("task_id")
    if task_id is not None:
        task = state.tasks.get(task_id)
        return task is not None and task.seen(event.event_id)
    if isinstance(event, (AgentJoined, AgentLeft)):
        seat = state.members.get(event.agent_id)
        return seat is not None and seat.seen(event.event_id)
    return False


class Ledger:
    """Queue states for every queue seen, folded event by event in log order."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueState] = {}

    def apply(self, event: Event, where: Where | None = None) -> Verdict:
        """Fold one event (read at `where`, if known) into its queue's state and return its verdict."""
        state, verdict = evolve(self.queues.get(event.queue, EMPTY), event, where)
        self.queues[event.queue] = state
        return verdict

    def state(self, queue: str) -> QueueState:
        """The folded state of one queue (empty if never seen)."""
        return self.queues.get(queue, EMPTY)


def fold(events: Iterable[Event], ledger: Ledger | None = None) -> tuple[Ledger, list[Verdict]]:
    """Fold events in order; returns the ledger and one verdict per event."""
    ledger = ledger or Ledger()
    return ledger, [ledger.apply(event) for event in events]


__all__ = ["evolve", "fold", "Ledger", "Where"]

"""Rules for agents joining and leaving a queue."""

from __future__ import annotations

from dataclasses import replace

from taskfold.core.events import AgentJoined, AgentLeft, LeaveReason
from taskfold.core.fold.lifecycle import end_attempt
from taskfold.core.state import ACCEPTED, Member, QueueState, Verdict, rejected

Step = tuple[QueueState, Verdict]


def join(state: QueueState, event: AgentJoined) -> Step:
    """Seat an agent in the queue, or update its seat when it joins again."""
    seat = state.members.get(event.agent_id)
    holding = seat.holding if seat is not None else frozenset()
    seen = seat.event_ids if seat is not None else frozenset()
    seat = Member(
        agent_id=event.agent_id, slots=event.slots, prefetch=event.prefetch, capabilities=frozenset(event.capabilities),
        labels=tuple(sorted(event.labels.items())), active=True, holding=holding,
        joined_at=event.occurred_at, left_at=None, event_ids=seen | {event.event_id},
    )
    return replace(state, members=state.members.set(event.agent_id, seat)), ACCEPTED


def leave(state: QueueState, event: AgentLeft) -> Step:
    """Unseat an agent; every attempt it still holds ends and its task goes back at once."""
    seat = state.members.get(event.agent_id)
    if seat is None:
        return state, rejected(f"agent {event.agent_id} has not joined queue {event.queue}")
    if not seat.active:
        return state, rejected(f"agent {event.agent_id} has already left queue {event.queue}")
    error = f"agent {event.agent_id} left ({event.reason.value}) holding attempt"
    for task_id in sorted(seat.holding):
        task = state.tasks[task_id]
        retry = "free" if event.reason == LeaveReason.drained else "lost"
        state = end_attempt(state, task, event, error=f"{error} {task.attempt}", retry=retry)
    seat = state.members[event.agent_id]
    gone = replace(seat, active=False, left_at=event.occurred_at, holding=frozenset(),
                   event_ids=seat.event_ids | {event.event_id})
    return replace(state, members=state.members.set(event.agent_id, gone)), ACCEPTED

"""`expirations`: what the clock decides, recorded as events (ARCHITECTURE §1: the fold
never reads a clock, so a processor appends the decision).

Four rules, judged at `now_ms`:

1. An active seat silent for longer than `agent_lost_ms` (last heartbeat or join) is
   declared lost: AgentLeft(reason=lost). The fold then ends every attempt it held, so
   those attempts get no event of their own here.
2. A running attempt older than its task's `timeout_ms` (since TaskStarted) times out:
   TaskTimedOut, which retries with backoff.
3. Otherwise an in-flight attempt whose holder has given no sign of life (heartbeat,
   join, the attempt's assignment or start) for longer than `lease_ms` loses its lease:
   TaskLeaseExpired, which puts the task back at once, not charged to its max_attempts
   (the fold dead-letters it only when its third holder in a row is lost).
4. An attempt assigned more than `start_within_ms` ago and still not started loses its
   lease too, although its agent heartbeats: the agent missed the assignment or could
   not report the start, and its heartbeats would otherwise renew the lease forever.

Only attempts held by a seat are looked at (every in-flight attempt is in its holder's
`holding`), so a tick costs O(in flight), not O(every task the queue ever had).

When an attempt both timed out and lost its lease, the timeout wins: it is the more
specific fact, and its backoff keeps a task that always hangs out of a hot retry loop.
Event ids derive from the attempt (or the seat's join), so two workers that judge the
same thing write the same id and the fold keeps one. `fleet` is unused today; it is in
the signature so per-agent rules (say, a longer lease for a slow agent) need no new call.
"""

from __future__ import annotations

from collections.abc import Mapping

from taskfold.core.events import AgentLeft, Event, LeaveReason, TaskLeaseExpired, TaskTimedOut
from taskfold.core.policies import derived_event_id
from taskfold.core.scheduling.liveness import last_sign_of_life, silence_ms
from taskfold.core.scheduling.model import Fleet, QueuePolicy
from taskfold.core.state import Member, QueueState, Task, TaskState

# derived_event_id index per kind, distinct from TaskAssigned's 0, so no two kinds share an id.
LEASE_INDEX = 1
TIMEOUT_INDEX = 2
AGENT_LOST_INDEX = 3


def expirations(
    state: QueueState,
    fleet: Fleet,
    policy: QueuePolicy,
    *,
    queue: str,
    now_ms: int,
    heartbeats: Mapping[str, int],
    actor: str = "scheduler",
) -> list[Event]:
    """The AgentLeft, TaskTimedOut and TaskLeaseExpired events due at `now_ms`, fold-accepted in order."""
    lost = [
        seat for seat in sorted(state.members.values(), key=lambda m: m.agent_id)
        if seat.active and silence_ms(seat, heartbeats, now_ms) > policy.agent_lost_ms
    ]
    events: list[Event] = [_agent_lost(seat, queue, now_ms, actor) for seat in lost]
    gone = {seat.agent_id for seat in lost}
    tasks = state.tasks
    held = (tasks[task_id] for seat in state.members.values() if seat.agent_id not in gone
            for task_id in seat.holding)
    for task in sorted(held, key=lambda t: (t.arrival, t.task_id)):
        if not task.state.in_flight:
            continue  # a stale holding entry; the fold frees slots as attempts end
        if _timed_out(task, now_ms):
            events.append(TaskTimedOut(**_envelope(task, queue, now_ms, actor, TIMEOUT_INDEX)))
        elif _lease_ran_out(task, state, policy, now_ms, heartbeats) or _never_started(task, policy, now_ms):
            events.append(TaskLeaseExpired(**_envelope(task, queue, now_ms, actor, LEASE_INDEX)))
    return events


def _never_started(task: Task, policy: QueuePolicy, now_ms: int) -> bool:
    assigned = task.assigned_at
    return task.state == TaskState.assigned and assigned is not None and now_ms - assigned > policy.start_within_ms


def _envelope(task: Task, queue: str, now_ms: int, actor: str, index: int) -> dict:
    return {
        "event_id": derived_event_id(f"{queue}/{task.task_id}/{task.attempt}", index),
        "queue": queue, "occurred_at": now_ms, "actor": actor, "causation_id": None,
        "correlation_id": task.correlation_id, "task_id": task.task_id, "attempt": task.attempt,
        "agent_id": task.agent_id,
    }


def _timed_out(task: Task, now_ms: int) -> bool:
    started = task.started_at
    return task.state == TaskState.running and started is not None and now_ms - started > task.timeout_ms


def _lease_ran_out(
    task: Task, state: QueueState, policy: QueuePolicy, now_ms: int, heartbeats: Mapping[str, int]
) -> bool:
    seat = state.member(task.agent_id) if task.agent_id is not None else None
    signs = [task.assigned_at or 0, task.started_at or 0]
    signs.append(last_sign_of_life(seat, heartbeats) if seat is not None else heartbeats.get(task.agent_id or "", 0))
    return now_ms - max(signs) > policy.lease_ms


def _agent_lost(seat: Member, queue: str, now_ms: int, actor: str) -> AgentLeft:
    return AgentLeft(
        # One id per seating: a later rejoin (new joined_at) can be declared lost again.
        event_id=derived_event_id(f"{queue}/{seat.agent_id}/{seat.joined_at}", AGENT_LOST_INDEX),
        queue=queue, occurred_at=now_ms, actor=actor, agent_id=seat.agent_id, reason=LeaveReason.lost,
    )

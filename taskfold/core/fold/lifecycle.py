"""Transitions shared by every rule: storing a task, freeing what an attempt held,
ending attempts, finishing tasks and telling their dependents.

Sets are iterated in sorted order: str hashing differs between processes, and the fold
must give the same result everywhere.
"""

from __future__ import annotations

from typing import Literal

from immutables import Map

from taskfold.core.events import Event
from taskfold.core.policies import retry_delay_ms
from taskfold.core.state import LOST_HOLDERS_LIMIT, SCHEDULABLE, QueueState, Task, TaskState, order_of, replaced

Retry = Literal["backoff", "lost", "never", "free"]


def put(state: QueueState, task: Task, **fields: object) -> QueueState:
    """The state with `task` stored under its id, the index of schedulable tasks kept, and
    any other `fields` of the state set (one copy of the state per event)."""
    waiting = state.waiting
    if task.state in SCHEDULABLE:
        waiting = waiting.set(task.task_id, order_of(task))
    elif task.task_id in waiting:
        waiting = waiting.delete(task.task_id)
    fields["tasks"] = state.tasks.set(task.task_id, task)
    fields["waiting"] = waiting
    return replaced(state, fields)


def free(state: QueueState, task: Task) -> QueueState:
    """Release the slot and the concurrency key the task's current attempt holds."""
    members, holders = released(state, task)
    return replaced(state, {"members": members, "holders": holders})


def released(state: QueueState, task: Task) -> tuple[Map, Map]:
    """(members, holders) once the task's current attempt gives back its slot and concurrency key."""
    members, holders = state.members, state.holders
    if not task.state.in_flight:
        return members, holders
    member = members.get(task.agent_id) if task.agent_id else None
    if member is not None and task.task_id in member.holding:
        members = members.set(member.agent_id, replaced(member, {"holding": member.holding - {task.task_id}}))
    if task.concurrency_key is not None:
        held = holders.get(task.concurrency_key, frozenset()) - {task.task_id}
        if held:
            holders = holders.set(task.concurrency_key, held)
        elif task.concurrency_key in holders:
            holders = holders.delete(task.concurrency_key)
    return members, holders


def unblocked(task: Task, when: int) -> Task:
    """The task once nothing it depends on is pending: scheduled if not_before is ahead."""
    return replaced(task, released_to(task.not_before, when))


def released_to(not_before: int | None, when: int) -> dict[str, object]:
    """The state and due time of a task whose dependencies are all met at `when`."""
    if not_before is not None and not_before > when:
        return {"state": TaskState.scheduled, "due_at": not_before}
    return {"state": TaskState.queued, "due_at": None}


def finish(
    state: QueueState, task: Task, event: Event, outcome: TaskState, **changes: object
) -> QueueState:
    """Make `task` terminal, free what it held, and settle the tasks that wait on it."""
    members, holders = released(state, task)
    done = task.noting(event.event_id, state=outcome, finished_at=event.occurred_at, due_at=None, **changes)
    state = put(state, done, members=members, holders=holders)
    return settle_dependents(state, done, event.occurred_at)


def settle_dependents(state: QueueState, done: Task, when: int) -> QueueState:
    """Satisfy the dependents of a completed task; those of a dead-lettered or cancelled one
    are cancelled, transitively, unless they run anyway (`on_dependency_failure: run`)."""
    if done.task_id not in state.dependents:
        return state
    work = [(done.task_id, done.state)]
    while work:
        dependency, ended = work.pop()
        for task_id in sorted(state.dependents.get(dependency, frozenset())):
            waiting = state.tasks.get(task_id)
            if waiting is None or waiting.state != TaskState.blocked or dependency not in waiting.waiting_on:
                continue
            if ended == TaskState.completed or waiting.runs_anyway:
                state = put(state, satisfy(waiting, dependency, when))
                continue
            cancelled = cancelled_by(waiting, dependency, ended.value, when)
            state = put(state, cancelled)
            work.append((task_id, cancelled.state))
    return state


def cancelled_by(task: Task, dependency: str, ended: str | None, when: int) -> Task:
    """The blocked task cancelled because `dependency` ended without completing."""
    why = f"dependency {dependency} was {ended}" if ended else f"dependency {dependency} did not complete"
    return replaced(task, {"state": TaskState.cancelled, "finished_at": when, "waiting_on": frozenset(), "reason": why})


def satisfy(task: Task, dependency: str, when: int) -> Task:
    """The blocked task with one dependency satisfied; released when none is left."""
    left = task.waiting_on - {dependency}
    changes: dict[str, object] = released_to(task.not_before, when) if not left else {}
    changes["waiting_on"] = left
    return replaced(task, changes)


def end_attempt(
    state: QueueState, task: Task, event: Event, *, error: str, retry: Retry
) -> QueueState:
    """End the current attempt: cancel if asked, else retry if allowed, else dead-letter.

    `retry` says how the attempt ended: "backoff" (a retryable failure or a timeout, charged),
    "never" (a non-retryable failure), "free" (handed back by a draining agent) or "lost"
    (its holder was lost: not charged, but LOST_HOLDERS_LIMIT in a row dead-letter the task).
    """
    if task.cancel_requested:
        return finish(state, task, event, TaskState.cancelled, error=error,
                      reason=f"cancelled; attempt {task.attempt} ended: {error}")
    if retry == "free":
        # Handed back by a draining agent: neither the task's fault nor the agent's.
        return _back(state, task, event, error, TaskState.queued, None,
                     free_attempts=task.free_attempts + 1, lost_holders=())
    if retry == "lost":
        return _lose_holder(state, task, event, error)
    # Its holder lived to see the attempt end: lost_holders starts again.
    if retry == "backoff" and task.charged_attempts < task.max_attempts:
        due = event.occurred_at + retry_delay_ms(task.backoff, task.attempt, task.task_id)
        return _back(state, task, event, error, TaskState.retry_wait, due, lost_holders=())
    if retry == "never":
        reason = f"failed without retry on attempt {task.attempt}: {error}"
    else:
        reason = f"attempts exhausted ({task.charged_attempts} of {task.max_attempts}): {error}"
    return finish(state, task, event, TaskState.dead_lettered, error=error, reason=reason, lost_holders=())


def _lose_holder(state: QueueState, task: Task, event: Event, error: str) -> QueueState:
    """The holder was lost: the agent failed, not the task, so the task goes back at once,
    uncharged; unless its last LOST_HOLDERS_LIMIT holders were all lost under it."""
    lost = (*task.lost_holders, task.agent_id or "an unknown agent")
    if len(lost) >= LOST_HOLDERS_LIMIT:
        reason = (f"lost {len(lost)} holders in a row ({', '.join(lost)}): "
                  f"the task may be killing its agents; last: {error}")
        return finish(state, task, event, TaskState.dead_lettered, error=error, reason=reason,
                      lost_attempts=task.lost_attempts + 1, lost_holders=lost)
    return _back(state, task, event, error, TaskState.queued, None,
                 lost_attempts=task.lost_attempts + 1, lost_holders=lost)


def _back(
    state: QueueState, task: Task, event: Event, error: str, waits: TaskState, due_at: int | None, **changes: object
) -> QueueState:
    """The task waiting again (`waits`) after its attempt ended with `error`: its slot and key freed."""
    members, holders = released(state, task)
    after = task.noting(event.event_id, state=waits, due_at=due_at, agent_id=None, lease_ms=None, error=error,
                        **changes)
    return put(state, after, members=members, holders=holders)

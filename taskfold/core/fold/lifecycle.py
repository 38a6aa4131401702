"""Transitions shared by every rule: storing a task, freeing what an attempt held,
ending attempts, finishing tasks and telling their dependents.

Sets are iterated in sorted order: str hashing differs between processes, and the fold
must give the same result everywhere.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from taskfold.core.events import Event
from taskfold.core.policies import retry_delay_ms
from taskfold.core.state import LOST_HOLDERS_LIMIT, SCHEDULABLE, QueueState, Task, TaskState, order_of

Retry = Literal["backoff", "lost", "never", "free"]


def put(state: QueueState, task: Task) -> QueueState:
    """The state with `task` stored under its id, and the index of schedulable tasks kept."""
    waiting = state.waiting
    if task.state in SCHEDULABLE:
        waiting = waiting.set(task.task_id, order_of(task))
    elif task.task_id in waiting:
        waiting = waiting.delete(task.task_id)
    return replace(state, tasks=state.tasks.set(task.task_id, task), waiting=waiting)


def free(state: QueueState, task: Task) -> QueueState:
    """Release the slot and the concurrency key the task's current attempt holds."""
    if not task.state.in_flight:
        return state
    members, holders = state.members, state.holders
    member = members.get(task.agent_id) if task.agent_id else None
    if member is not None and task.task_id in member.holding:
        members = members.set(member.agent_id, replace(member, holding=member.holding - {task.task_id}))
    if task.concurrency_key is not None:
        held = holders.get(task.concurrency_key, frozenset()) - {task.task_id}
        if held:
            holders = holders.set(task.concurrency_key, held)
        elif task.concurrency_key in holders:
            holders = holders.delete(task.concurrency_key)
    return replace(state, members=members, holders=holders)


def unblocked(task: Task, when: int) -> Task:
    """The task once nothing it depends on is pending: scheduled if not_before is ahead."""
    if task.not_before is not None and task.not_before > when:
        return _move(task, TaskState.scheduled, due_at=task.not_before)
    return _move(task, TaskState.queued, due_at=None)


def _move(task: Task, new_state: TaskState, **changes: object) -> Task:
    return replace(task, state=new_state, **changes)


def finish(
    state: QueueState, task: Task, event: Event, outcome: TaskState, **changes: object
) -> QueueState:
    """Make `task` terminal, free what it held, and settle the tasks that wait on it."""
    state = free(state, task)
    done = task.noting(event.event_id, state=outcome, finished_at=event.occurred_at, due_at=None, **changes)
    state = put(state, done)
    return settle_dependents(state, done, event.occurred_at)


def settle_dependents(state: QueueState, done: Task, when: int) -> QueueState:
    """Satisfy the dependents of a completed task; those of a dead-lettered or cancelled one
    are cancelled, transitively, unless they run anyway (`on_dependency_failure: run`)."""
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
    return _move(task, TaskState.cancelled, finished_at=when, waiting_on=frozenset(), reason=why)


def satisfy(task: Task, dependency: str, when: int) -> Task:
    """The blocked task with one dependency satisfied; released when none is left."""
    left = task.waiting_on - {dependency}
    task = replace(task, waiting_on=left)
    return unblocked(task, when) if not left else task


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
        after = task.noting(event.event_id, state=TaskState.queued, due_at=None,
                            free_attempts=task.free_attempts + 1, lost_holders=())
        return put(free(state, task), _cleared(after, error))
    if retry == "lost":
        return _lose_holder(state, task, event, error)
    task = replace(task, lost_holders=())  # its holder lived to see the attempt end
    if retry == "backoff" and task.charged_attempts < task.max_attempts:
        due = event.occurred_at + retry_delay_ms(task.backoff, task.attempt, task.task_id)
        after = task.noting(event.event_id, state=TaskState.retry_wait, due_at=due)
        return put(free(state, task), _cleared(after, error))
    if retry == "never":
        reason = f"failed without retry on attempt {task.attempt}: {error}"
    else:
        reason = f"attempts exhausted ({task.charged_attempts} of {task.max_attempts}): {error}"
    return finish(state, task, event, TaskState.dead_lettered, error=error, reason=reason)


def _lose_holder(state: QueueState, task: Task, event: Event, error: str) -> QueueState:
    """The holder was lost: the agent failed, not the task, so the task goes back at once,
    uncharged; unless its last LOST_HOLDERS_LIMIT holders were all lost under it."""
    task = replace(task, lost_attempts=task.lost_attempts + 1,
                   lost_holders=(*task.lost_holders, task.agent_id or "an unknown agent"))
    if len(task.lost_holders) >= LOST_HOLDERS_LIMIT:
        reason = (f"lost {len(task.lost_holders)} holders in a row ({', '.join(task.lost_holders)}): "
                  f"the task may be killing its agents; last: {error}")
        return finish(state, task, event, TaskState.dead_lettered, error=error, reason=reason)
    after = task.noting(event.event_id, state=TaskState.queued, due_at=None)
    return put(free(state, task), _cleared(after, error))


def _cleared(task: Task, error: str) -> Task:
    return replace(task, agent_id=None, lease_ms=None, error=error)

"""Rules for an attempt's life: assignment, start, and the reports that end it.

Attempt numbers are fencing tokens: a report counts only when it names the current
attempt and comes from the agent that holds it.
"""

from __future__ import annotations

from taskfold.core.events import (
    TaskAssigned,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskStarted,
    TaskTimedOut,
)
from taskfold.core.fold.lifecycle import end_attempt, finish, put
from taskfold.core.state import ACCEPTED, Member, QueueState, Task, TaskState, Verdict, rejected, replaced

Step = tuple[QueueState, Verdict]
AttemptEvent = TaskStarted | TaskCompleted | TaskFailed | TaskLeaseExpired | TaskTimedOut | TaskCancelled


def assign(state: QueueState, event: TaskAssigned) -> Step:
    """Give the next attempt to an agent, within its slots and the task's constraints."""
    task = state.tasks.get(event.task_id)
    problem = _unassignable(task, event) or _seat_problem(state, task, event)  # type: ignore[arg-type]
    if problem:
        return state, rejected(problem)
    assert task is not None
    member = state.members[event.agent_id]
    members = state.members.set(member.agent_id, replaced(member, {"holding": member.holding | {task.task_id}}))
    holders = state.holders
    if task.concurrency_key is not None:
        holders = holders.set(task.concurrency_key, holders.get(task.concurrency_key, frozenset()) | {task.task_id})
    held = task.noting(
        event.event_id, state=TaskState.assigned, attempt=event.attempt, agent_id=event.agent_id,
        lease_ms=event.lease_ms, assigned_at=event.occurred_at, started_at=None, due_at=None,
    )
    return put(state, held, members=members, holders=holders), ACCEPTED


def _unassignable(task: Task | None, event: TaskAssigned) -> str | None:
    if task is None:
        return f"unknown task {event.task_id}"
    if task.state.terminal:
        return f"task {task.task_id} is already {task.state.value}"
    if task.state.in_flight:
        return f"task {task.task_id} is {task.state.value}: attempt {task.attempt} is held by {task.agent_id}"
    if task.state == TaskState.blocked:
        return f"task {task.task_id} is blocked on {sorted(task.waiting_on)}"
    if task.state in (TaskState.scheduled, TaskState.retry_wait) and (task.due_at or 0) > event.occurred_at:
        return f"task {task.task_id} is {task.state.value} until {task.due_at}, assignment is at {event.occurred_at}"
    if event.attempt != task.attempt + 1:
        return f"attempt {event.attempt} is not the next attempt of task {task.task_id} (expected {task.attempt + 1})"
    return None


def _seat_problem(state: QueueState, task: Task, event: TaskAssigned) -> str | None:
    member = state.members.get(event.agent_id)
    if member is None:
        return f"agent {event.agent_id} has not joined queue {event.queue}"
    if not member.active:
        return f"agent {event.agent_id} has left queue {event.queue}"
    room = seat_room(state, member, task)
    if room is not None:
        return room
    if task.required_capabilities and (missing := sorted(task.required_capabilities - member.capabilities)):
        return f"agent {event.agent_id} lacks required capabilities {missing}"
    if task.labels:
        agent_labels = dict(member.labels)
        for key, value in task.labels:
            if agent_labels.get(key) != value:
                return f"agent {event.agent_id} does not match label {key}={value}"
    if task.concurrency_key is not None:
        running = len(state.holders.get(task.concurrency_key, frozenset()))
        if running >= task.concurrency_limit:
            return f"concurrency key {task.concurrency_key!r} is at its limit ({running} of {task.concurrency_limit})"
    return None


def seat_room(state: QueueState, member: Member, task: Task) -> str | None:
    """Why the seat has no room for the task, or None: held < slots + prefetch, one more for a
    task of strictly higher priority than every unstarted one it holds (a seat with prefetch).

    A task with a concurrency key takes a free slot only (held < slots): it then runs at once,
    so the key counts running tasks, never prefetched ones.
    """
    held, slots = len(member.holding), member.slots
    where = f"agent {member.agent_id} holds {held} of its {slots} slots"
    if task.concurrency_key is not None:
        return None if held < slots else f"{where}: a task with a concurrency key takes a free slot, not prefetch"
    bound = slots + member.prefetch
    if held < bound:
        return None
    if member.prefetch and held == bound and _outranks_unstarted(state, member, task):
        return None
    ahead = f" and prefetch {member.prefetch}" if member.prefetch else ""
    return f"{where}{ahead} in queue {task.queue}"


def _outranks_unstarted(state: QueueState, member: Member, task: Task) -> bool:
    ranks = [state.tasks[t].priority.rank for t in member.holding if state.tasks[t].state == TaskState.assigned]
    return all(task.priority.rank < rank for rank in ranks)


def fence(task: Task | None, event: AttemptEvent) -> str | None:
    """Why a report about an attempt does not count, or None when it does."""
    if task is None:
        return f"unknown task {event.task_id}"
    if task.state.terminal:
        return f"task {task.task_id} is already {task.state.value}"
    if event.attempt != task.attempt:
        return f"stale attempt {event.attempt}: the current attempt of task {task.task_id} is {task.attempt}"
    if not task.state.in_flight:
        return f"attempt {event.attempt} of task {task.task_id} is over (task is {task.state.value})"
    if event.agent_id != task.agent_id:
        return f"agent {event.agent_id} does not hold attempt {event.attempt} of task {task.task_id} (held by {task.agent_id})"
    return None


def start(state: QueueState, event: TaskStarted) -> Step:
    """The holding agent began running its attempt."""
    task = state.tasks.get(event.task_id)
    problem = fence(task, event)
    if problem:
        return state, rejected(problem)
    assert task is not None
    if task.state == TaskState.running:
        return state, rejected(f"attempt {event.attempt} of task {task.task_id} has already started")
    return put(state, task.noting(event.event_id, state=TaskState.running, started_at=event.occurred_at)), ACCEPTED


def complete(state: QueueState, event: TaskCompleted) -> Step:
    """The holding agent finished its attempt with a result."""
    task = state.tasks.get(event.task_id)
    problem = fence(task, event)
    if problem:
        return state, rejected(problem)
    assert task is not None
    if task.cancel_requested:
        return state, rejected(
            f"cancel of task {task.task_id} was requested first; the agent must acknowledge it with TaskCancelled"
        )
    return finish(state, task, event, TaskState.completed, result=event.result, reason=None), ACCEPTED


def fail(state: QueueState, event: TaskFailed) -> Step:
    """The holding agent's attempt failed: retry with backoff, or dead-letter."""
    task = state.tasks.get(event.task_id)
    problem = fence(task, event)
    if problem:
        return state, rejected(problem)
    retry = "backoff" if event.retryable else "never"
    if event.handed_back:
        if task.state == TaskState.running:  # type: ignore[union-attr]
            return state, rejected(f"attempt {event.attempt} of task {event.task_id} has started: only an unstarted "
                                   "attempt can be handed back")
        retry = "free"  # given back unstarted by its holder: neither the task's fault nor the agent's
    return end_attempt(state, task, event, error=event.error, retry=retry), ACCEPTED  # type: ignore[arg-type]


def expire_lease(state: QueueState, event: TaskLeaseExpired) -> Step:
    """The holder stopped heartbeating (or never started it): the attempt is lost, uncharged."""
    task = state.tasks.get(event.task_id)
    problem = fence(task, event)
    if problem:
        return state, rejected(problem)
    assert task is not None
    # Before the start, the holder was silent or never took the assignment up (start_within_ms).
    unstarted = " before it started" if task.state == TaskState.assigned else ""
    error = f"lease of agent {event.agent_id} expired on attempt {event.attempt}{unstarted}"
    return end_attempt(state, task, event, error=error, retry="lost"), ACCEPTED  # type: ignore[arg-type]


def time_out(state: QueueState, event: TaskTimedOut) -> Step:
    """The attempt ran past the task's timeout: a retryable failure."""
    task = state.tasks.get(event.task_id)
    problem = fence(task, event)
    if problem:
        return state, rejected(problem)
    assert task is not None
    error = f"attempt {event.attempt} timed out after {task.timeout_ms} ms"
    return end_attempt(state, task, event, error=error, retry="backoff"), ACCEPTED


def acknowledge_cancel(state: QueueState, event: TaskCancelled) -> Step:
    """The holding agent stopped its attempt because a cancel was requested."""
    task = state.tasks.get(event.task_id)
    problem = fence(task, event)
    if problem:
        return state, rejected(problem)
    assert task is not None
    if not task.cancel_requested:
        return state, rejected(f"no cancel was requested for task {task.task_id}")
    return finish(state, task, event, TaskState.cancelled, reason="cancelled by request"), ACCEPTED

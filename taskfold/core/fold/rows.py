"""A queue's state as rows (tasks and seats), for stores that persist it row by row.

Only tasks and seats are stored: the other maps of `QueueState` (idempotency keys,
concurrency holders, dependents, the arrival counter) are derived from them by `rebuild`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from immutables import Map

from taskfold.core.events import AgentLeft, Event, WorkflowSubmitted
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import SCHEDULABLE, Member, QueueState, Task, TaskState, order_of


def rebuild(tasks: Iterable[Task], members: Iterable[Member]) -> QueueState:
    """The QueueState whose rows are these tasks and seats."""
    task_map: dict[str, Task] = {}
    idempotency: dict[str, str] = {}
    holders: dict[str, set[str]] = {}
    dependents: dict[str, set[str]] = {}
    arrivals = 0
    for task in tasks:
        task_map[task.task_id] = task
        arrivals = max(arrivals, task.arrival + 1)
        if task.idempotency_key is not None:
            idempotency[task.idempotency_key] = task.task_id
        if task.state.in_flight and task.concurrency_key is not None:
            holders.setdefault(task.concurrency_key, set()).add(task.task_id)
        for dependency in task.depends_on:
            dependents.setdefault(dependency, set()).add(task.task_id)
    seats = {}
    for seat in members:
        holding = frozenset(t for t in seat.holding if t in task_map)
        seats[seat.agent_id] = replace(seat, holding=holding)
    return QueueState(
        tasks=Map(task_map), members=Map(seats), idempotency=Map(idempotency),
        holders=Map({k: frozenset(v) for k, v in holders.items()}),
        dependents=Map({k: frozenset(v) for k, v in dependents.items()}), arrivals=arrivals,
        waiting=Map({t.task_id: order_of(t) for t in task_map.values() if t.state in SCHEDULABLE}),
    )


def touched(before: QueueState, after: QueueState, event: Event) -> tuple[list[Task], list[Member]]:
    """The task and seat rows that `event` changed (compared by identity, so it is cheap)."""
    if before is after:
        return [], []
    candidates = _candidate_tasks(before, event)
    tasks = [t for tid in sorted(candidates) if (t := after.tasks.get(tid)) is not before.tasks.get(tid) and t]
    seats: set[str] = {event.agent} if event.agent else set()
    for task in tasks:
        old = before.tasks.get(task.task_id)
        seats.update(a for a in (task.agent_id, old.agent_id if old else None) if a)
    members = [m for aid in sorted(seats) if (m := after.members.get(aid)) is not before.members.get(aid) and m]
    return tasks, members


def affected_tasks(state: QueueState, event: Event) -> set[str]:
    """The ids of the tasks `event` may change: its own, a workflow's, a leaving agent's, and their dependents."""
    return _candidate_tasks(state, event)


def _candidate_tasks(before: QueueState, event: Event) -> set[str]:
    ids: set[str] = set()
    if event.task:
        ids.add(event.task)
    if isinstance(event, WorkflowSubmitted):
        ids.update(workflow_task_id(event.workflow_id, node.node) for node in event.nodes)
    if isinstance(event, AgentLeft):
        seat = before.members.get(event.agent_id)
        ids.update(seat.holding if seat else ())
    # Settling a task reaches its dependents, transitively.
    frontier = list(ids)
    while frontier:
        for dependent in before.dependents.get(frontier.pop(), frozenset()):
            if dependent not in ids:
                ids.add(dependent)
                frontier.append(dependent)
    return ids


def is_waiting(task: Task) -> bool:
    """True for tasks a scheduler may still place (queued, scheduled, retry_wait)."""
    return task.state in (TaskState.queued, TaskState.scheduled, TaskState.retry_wait)

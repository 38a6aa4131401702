"""Rules for events that create tasks or change them from outside an attempt:
submits, workflows, dependency outcomes, cancel requests and redrives."""

from __future__ import annotations

from taskfold.core.events import (
    DependencyFailurePolicy,
    DependencyOutcome,
    DependencyResolved,
    TaskCancelRequested,
    TaskRedriven,
    TaskSubmitted,
    WorkflowSubmitted,
)
from taskfold.core.fold.lifecycle import cancelled_by, finish, put, released_to, satisfy, settle_dependents
from taskfold.core.fold.limits import submit_problem, workflow_problem
from taskfold.core.policies import workflow_task_id
from taskfold.core.state import ACCEPTED, QueueState, Task, TaskState, Verdict, created, duplicate, rejected

Step = tuple[QueueState, Verdict]


def submit(state: QueueState, event: TaskSubmitted) -> Step:
    """Admit a new task: blocked on pending dependencies, scheduled, or queued."""
    key = event.idempotency_key
    if key is not None and key in state.idempotency:
        original = state.idempotency[key]
        return state, duplicate(f"idempotency key {key!r} was already used by task {original}", original)
    if event.task_id in state.tasks:
        return state, rejected(f"task {event.task_id} was already submitted")
    if event.task_id in event.depends_on:
        return state, rejected(f"depends_on: task {event.task_id} cannot depend on itself")
    if (too_large := submit_problem(event)) is not None:
        return state, rejected(too_large)
    return _admit(state, event), ACCEPTED


def _admit(state: QueueState, event: TaskSubmitted) -> QueueState:
    dependents = state.dependents
    waiting: set[str] = set()
    failed: Task | None = None  # the first dependency (by id) that ended without completing
    runs_anyway = event.on_dependency_failure == DependencyFailurePolicy.run
    for dependency in sorted(set(event.depends_on)):
        # Every dependency is indexed, waited on or not, so the index can be rebuilt from rows.
        dependents = dependents.set(dependency, dependents.get(dependency, frozenset()) | {event.task_id})
        known = state.tasks.get(dependency)
        if known is not None and known.state == TaskState.completed:
            continue
        if known is not None and known.state.terminal:
            if not runs_anyway:
                failed = failed or known
            continue
        waiting.add(dependency)
    # The task is built once, in the state it starts in (blocked, scheduled or queued).
    start: dict[str, object] = {"state": TaskState.blocked, "due_at": None}
    if failed is None and not waiting:
        start = released_to(event.not_before, event.occurred_at)
    task = created(Task, dict(
        task_id=event.task_id, queue=event.queue, task_type=event.task_type,
        priority=event.priority, payload=event.payload, arrival=state.arrivals,
        submitted_at=event.occurred_at, timeout_ms=event.timeout_ms,
        max_attempts=event.max_attempts, backoff=event.backoff, not_before=event.not_before,
        depends_on=tuple(event.depends_on), session_id=event.session_id,
        correlation_id=event.correlation_id, concurrency_key=event.concurrency_key,
        concurrency_limit=event.concurrency_limit, labels=tuple(sorted(event.labels.items())),
        required_capabilities=frozenset(event.required_capabilities),
        idempotency_key=event.idempotency_key, event_ids=frozenset({event.event_id}),
        on_dependency_failure=event.on_dependency_failure, dependencies_may_follow=event.dependencies_may_follow,
        waiting_on=frozenset(waiting) if failed is None else frozenset(), **start,
    ))
    idempotency = state.idempotency
    if event.idempotency_key is not None:
        idempotency = idempotency.set(event.idempotency_key, event.task_id)
    indexes = {"dependents": dependents, "idempotency": idempotency, "arrivals": state.arrivals + 1}
    if failed is not None:
        # Cancelled at once: whatever already waits on it (dependencies_may_follow) is settled now.
        task = cancelled_by(task, failed.task_id, failed.state.value, event.occurred_at)
        return settle_dependents(put(state, task, **indexes), task, event.occurred_at)
    return put(state, task, **indexes)


def submit_workflow(state: QueueState, event: WorkflowSubmitted) -> Step:
    """Expand a workflow DAG into tasks with ids uuid5(workflow_id, node), in dependency order."""
    order, problem = _topological(event)
    problem = problem or workflow_problem(event)
    if problem:
        return state, rejected(problem)
    ids = {node.node: workflow_task_id(event.workflow_id, node.node) for node in event.nodes}
    first = state.tasks.get(ids[order[0].node])
    if first is not None:
        if first.seen(event.event_id):
            return state, duplicate("event already applied", first.task_id)
        return state, rejected(f"workflow {event.workflow_id} was already submitted (task {first.task_id} exists)")
    clash = next((ids[n.node] for n in order if ids[n.node] in state.tasks), None)
    if clash is not None:
        return state, rejected(f"workflow {event.workflow_id}: task {clash} already exists")
    for node in order:
        spec = TaskSubmitted(
            event_id=event.event_id, queue=event.queue, occurred_at=event.occurred_at,
            actor=event.actor, causation_id=event.event_id,
            correlation_id=event.correlation_id or event.workflow_id,
            task_id=ids[node.node], task_type=node.task_type, priority=node.priority,
            payload=node.payload, depends_on=[ids[d] for d in node.depends_on],
            timeout_ms=node.timeout_ms, max_attempts=node.max_attempts,
        )
        state = _admit(state, spec)
    return state, ACCEPTED


def _topological(event: WorkflowSubmitted) -> tuple[list, str | None]:
    """Nodes in dependency order (stable by position), or a reason the DAG is invalid."""
    by_name = {}
    for node in event.nodes:
        if node.node in by_name:
            return [], f"nodes: node {node.node!r} appears twice"
        by_name[node.node] = node
    for node in event.nodes:
        for dep in node.depends_on:
            if dep not in by_name:
                return [], f"nodes.{node.node}.depends_on: unknown node {dep!r}"
    placed: set[str] = set()
    order = []
    while len(order) < len(event.nodes):
        ready = [n for n in event.nodes if n.node not in placed and set(n.depends_on) <= placed]
        if not ready:
            cycle = sorted(n.node for n in event.nodes if n.node not in placed)
            return [], f"nodes: dependency cycle among {cycle}"
        for node in ready:
            placed.add(node.node)
            order.append(node)
    return order, None


def resolve_dependency(state: QueueState, event: DependencyResolved) -> Step:
    """Apply a dependency outcome relayed from another queue."""
    task = state.tasks.get(event.task_id)
    if task is None:
        return state, rejected(f"unknown task {event.task_id}")
    if task.state != TaskState.blocked or event.dependency_id not in task.waiting_on:
        return state, rejected(f"task {event.task_id} is not waiting on {event.dependency_id} (it is {task.state.value})")
    if event.outcome == DependencyOutcome.satisfied or task.runs_anyway:
        released = satisfy(task, event.dependency_id, event.occurred_at)
        return put(state, released.noting(event.event_id)), ACCEPTED
    ended = event.dependency_state.value if event.dependency_state is not None else None
    why = cancelled_by(task, event.dependency_id, ended, event.occurred_at).reason
    state = finish(state, task, event, TaskState.cancelled, waiting_on=frozenset(), reason=why)
    return state, ACCEPTED


def request_cancel(state: QueueState, event: TaskCancelRequested) -> Step:
    """Cancel a waiting task at once; mark a held one so its agent or its lease ends it."""
    task = state.tasks.get(event.task_id)
    if task is None:
        return state, rejected(f"unknown task {event.task_id}")
    if task.state.terminal:
        return state, rejected(f"task {task.task_id} is already {task.state.value}")
    if task.cancel_requested:
        return state, rejected(f"cancel of task {task.task_id} was already requested")
    why = event.reason or "cancel requested"
    if task.state.in_flight:
        return put(state, task.noting(event.event_id, cancel_requested=True)), ACCEPTED
    return finish(state, task, event, TaskState.cancelled, reason=why, waiting_on=frozenset()), ACCEPTED


def redrive(state: QueueState, event: TaskRedriven) -> Step:
    """Put a dead-lettered task back in its queue with more attempts: the one way out of a terminal state."""
    task = state.tasks.get(event.task_id)
    if task is None:
        return state, rejected(f"unknown task {event.task_id}")
    if task.state != TaskState.dead_lettered:
        return state, rejected(f"only dead-lettered tasks can be redriven; task {task.task_id} is {task.state.value}")
    again = task.noting(
        event.event_id, state=TaskState.queued, max_attempts=task.charged_attempts + event.extra_attempts,
        finished_at=None, reason=event.reason, agent_id=None, lease_ms=None, due_at=None, lost_holders=(),
    )
    return put(state, again), ACCEPTED


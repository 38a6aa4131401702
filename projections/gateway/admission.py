"""What a submit is refused for before anything is appended, and the one thing found after.

Before appending (from this gateway's fold of the log, `runtime.live.projector`):
1. A dependency on a task id that no queue holds, unless the submit says
   `dependencies_may_follow` (ids submitted in the same batch count as known): 422 naming
   `depends_on` and each unknown id.
2. An idempotency key this gateway already knows for the queue, reused for a different
   request (`taskfold.core.submits` says what "different" means): 409 `idempotency_conflict`
   naming the key and the task that used it. The same request again is let through: the
   fold answers it as a duplicate with the original task. Within one batch, two items with
   one key must be the same request too.

After appending: a key that landed first from elsewhere while this submit was on its way
makes the fold answer `duplicate`; if the requests differ, that is the same 409 (the
appended event changed nothing, as every duplicate).

A request is compared with the TaskSubmitted that created the original task, as the tasks
view's history holds it, not with the folded task: a redrive raises the task's
max_attempts, and a retry of the original request must still be the same request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections import queries
from projections.gateway.deps import Runtime
from projections.gateway.errors import ApiError
from projections.view import Change
from taskfold.core.events import TaskSubmitted
from taskfold.core.state import Task
from taskfold.core.submits import conflict_reason, request_differences, unknown_dependencies, unknown_reason

Item = tuple[TaskSubmitted, bool]  # the event, and whether the request named its task_id


def refuse_before_append(rt: Runtime, items: Sequence[Item], *, prefix: str = "") -> None:
    """Raise the ApiError of step 1 or 2 for the first items that fail them; nothing is appended."""
    projector = getattr(rt.live, "projector", None)
    if projector is None:
        return  # a read-only gateway: the append answers 405
    field = (lambda i: f"{prefix}{i}.") if prefix else (lambda i: "")
    _refuse_unknown(projector, items, field)
    _refuse_conflicts(rt, projector, items, field)


def _refuse_unknown(projector: Any, items: Sequence[Item], field) -> None:  # noqa: ANN001
    batch = {event.task_id for event, _ in items}

    def known(task_id: str) -> bool:
        return task_id in batch or any(projector.task(name, task_id) is not None for name in projector.queues)

    problems = []
    for index, (event, _) in enumerate(items):
        if event.depends_on and not event.dependencies_may_follow:
            unknown = unknown_dependencies(event.depends_on, known)
            if unknown:
                problems.append((f"{field(index)}depends_on", unknown_reason(unknown)))
    if problems:
        raise ApiError(422, "unknown_dependency", f"nothing was appended: {problems[0][1]}", problems)


def _refuse_conflicts(rt: Runtime, projector: Any, items: Sequence[Item], field) -> None:  # noqa: ANN001
    first: dict[tuple[str, str], TaskSubmitted] = {}
    for index, (event, given) in enumerate(items):
        key = event.idempotency_key
        if key is None:
            continue
        used_by = projector.key_owner(event.queue, key)
        task = projector.task(event.queue, used_by) if used_by is not None else None
        original = submitted_request(rt, task) if task is not None else first.get((event.queue, key))
        if original is None:
            first[(event.queue, key)] = event
            continue
        differences = request_differences(event, original, task_id_given=given)
        if differences:
            raise conflict(key, original.task_id, differences, f"{field(index)}idempotency_key")


def conflict(key: str, original: str, differences: Sequence[str], field: str = "idempotency_key",
             extra: dict[str, Any] | None = None) -> ApiError:
    """The 409 of an idempotency key reused for a different request."""
    reason = conflict_reason(key, original, differences)
    appended = "the event was appended but changed nothing" if extra else "nothing was appended"
    return ApiError(409, "idempotency_conflict", f"{reason}; {appended}", [(field, reason)],
                    extra={"idempotency_key": key, "task_id": original, **(extra or {})})


def submitted_request(rt: Runtime, task: Task) -> TaskSubmitted | Task:
    """The TaskSubmitted that created `task`, from the tasks view; the folded task without that view."""
    for row in queries.task_history(rt.live.store, task.task_id, queue=task.queue, limit=50):
        event = row.get("event") or {}
        if event.get("type") == "TaskSubmitted" and row.get("verdict", {}).get("outcome") == "accepted":
            return TaskSubmitted.model_validate({k: v for k, v in event.items() if k != "type"})
    return task


def conflict_after(rt: Runtime, change: Change, event: TaskSubmitted, task_id_given: bool) -> ApiError | None:
    """The 409 of a submit the fold found a duplicate of a different request by key, else None."""
    verdict = change.verdict
    if verdict.outcome != "duplicate" or event.idempotency_key is None or verdict.ref is None:
        return None
    original = change.after.state.task(verdict.ref)
    if original is None:
        return None
    differences = request_differences(event, submitted_request(rt, original), task_id_given=task_id_given)
    if not differences:
        return None
    return conflict(event.idempotency_key, original.task_id, differences,
                    extra={"position": change.position, "event_id": event.event_id})

"""From the fold's verdict on an appended event to what a client call answers: a Receipt or an error."""

from __future__ import annotations

import re

from taskfold.core.events import Event, TaskSubmitted
from taskfold.core.state import QueueState, Verdict
from taskfold.core.submits import conflict_reason, request_differences

from taskfold.clients.errors import Duplicate, Refused
from taskfold.clients.models import Receipt, TaskView

ALREADY_SUBMITTED = re.compile(r"^task (?P<task>.+) was already submitted$")


def rejection(reason: str | None, position: str | None = None) -> Refused:
    """The error of a rejected event: Duplicate for a task id already taken, else Refused naming the field."""
    reason = reason or "no reason given"
    message = f"rejected: {reason}"
    taken = ALREADY_SUBMITTED.match(reason)
    if taken:
        return Duplicate(message, taken["task"], [("task_id", reason)], position=position)
    field, sep, rest = reason.partition(": ")
    problems = [(field, rest)] if sep and field in TaskSubmitted.model_fields else []
    return Refused(message, problems, position=position)


def conflict(key: str, original: str, differences: list[str], position: str | None = None) -> Duplicate:
    """The error of an idempotency key reused for a different request."""
    reason = conflict_reason(key, original, differences)
    where = f"; the event appended at {position} changed nothing" if position else "; nothing was appended"
    return Duplicate(f"conflict: {reason}{where}", original, [("idempotency_key", reason)], position=position)


def judge(state: QueueState, event: Event, position: str, verdict: Verdict, *,
          request: TaskSubmitted | None = None, task_id_given: bool = False) -> Receipt | Refused:
    """A Receipt for an accepted event or an idempotent retry; the error otherwise.

    `request` is the submit that first used the event's idempotency key (a duplicate is
    compared with it: a different request is a conflict).
    """
    task_id = getattr(event, "task_id", None)
    common = {"position": position, "event_id": event.event_id, "verdict": verdict.outcome, "reason": verdict.reason}
    if verdict.outcome == "rejected":
        return rejection(verdict.reason, position)
    if verdict.outcome == "duplicate":
        original = state.task(verdict.ref or task_id or "")
        key = getattr(event, "idempotency_key", None)
        if isinstance(event, TaskSubmitted) and key is not None and original is not None:
            differences = request_differences(event, request or original, task_id_given=task_id_given)
            if differences:
                return conflict(key, original.task_id, differences, position)
        return Receipt(task=_view(original), duplicate=True, **common)
    return Receipt(task=_view(state.task(task_id) if task_id else None), **common)


def _view(task) -> TaskView | None:  # noqa: ANN001 - a folded Task or None
    return TaskView.of_task(task) if task is not None else None

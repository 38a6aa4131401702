"""Building events from what a person or program asks for, with errors that name the field.

Pure but for its defaults: the time, the actor and the payload limit come from the
caller, by default from `taskfold.core.edge` (the process's clock, user and settings).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

from pydantic import ValidationError

from taskfold.core.edge import default_actor, now_ms, payload_limit
from taskfold.core.events import Event, TaskCancelRequested, TaskSubmitted
from taskfold.core.fold.limits import over, submit_problem, text_bytes

LIMIT_NAME = "TASKFOLD_MAX_PAYLOAD_BYTES"
REASON_MAX_BYTES = 4096  # a cancel's or redrive's reason is a sentence, not a document


class InvalidRequest(ValueError):
    """A request that cannot become an event; `problems` lists (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


def problems_of(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted field, message) pairs."""
    out = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(request)"
        out.append((field, error["msg"]))
    return out


def size_problem(field: str, text: str | None, limit: int | None = None) -> str | None:
    """Why a JSON text (payload, result) is over the writers' limit, or None."""
    limit = payload_limit() if limit is None else limit
    if text is None or len(text) * 4 <= limit:  # no UTF-8 text of that length can be over
        return None
    size = text_bytes(text)
    return over(field, size, limit, LIMIT_NAME) if size > limit else None


def check_size(field: str, text: str | None, limit: int | None = None) -> None:
    """InvalidRequest naming the field, its size and the limit when `text` is over the writers' limit."""
    problem = size_problem(field, text, limit)
    if problem is not None:
        raise InvalidRequest([(field, problem)])


def build(event_class: type[Event], **fields: Any) -> Event:
    """Validate fields into an event; fills event_id, occurred_at and actor; InvalidRequest names each bad field."""
    fields.setdefault("event_id", str(uuid.uuid4()))
    fields.setdefault("occurred_at", now_ms())
    fields.setdefault("actor", default_actor())
    reason = fields.get("reason")
    if isinstance(reason, str) and text_bytes(reason) > REASON_MAX_BYTES:
        raise InvalidRequest([("reason", over("reason", text_bytes(reason), REASON_MAX_BYTES, "a reason's limit"))])
    try:
        return event_class.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequest(problems_of(exc)) from None


def submission(queue: str, task_type: str, *, payload: str | None = None, max_payload_bytes: int | None = None,
               **options: Any) -> TaskSubmitted:
    """A TaskSubmitted from user input; payload is JSON text, must parse and be within the limit.

    The limit is `max_payload_bytes`, by default TASKFOLD_MAX_PAYLOAD_BYTES. A submit the
    fold would reject for its size (limits.submit_problem) is refused here too, before
    anything is appended.
    """
    if payload is not None:
        check_size("payload", payload, max_payload_bytes)  # first: parsing a huge text costs
        try:
            json.loads(payload)
        except ValueError as exc:
            raise InvalidRequest([("payload", f"not valid JSON: {exc}")]) from None
        options["payload"] = payload
    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("task_id", str(uuid.uuid4()))
    event = cast(TaskSubmitted, build(TaskSubmitted, queue=queue, task_type=task_type, **options))
    problem = submit_problem(event)
    if problem is not None:
        field = "payload" if problem.startswith("payload") else "(request)"
        raise InvalidRequest([(field, problem)])
    return event


def cancel_request(queue: str, task_id: str, reason: str | None = None) -> TaskCancelRequested:
    """A TaskCancelRequested for a task of a queue."""
    return build(TaskCancelRequested, queue=queue, task_id=task_id, reason=reason)  # type: ignore[return-value]

"""Building events from what a person or program asks for, with errors that name the field."""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from typing import Any

from pydantic import ValidationError

from taskfold.events import Event, TaskCancelRequested, TaskSubmitted


class InvalidRequest(ValueError):
    """A request that cannot become an event; `problems` lists (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


def now_ms() -> int:
    """Wall-clock time in milliseconds (only the edges of the system read the clock)."""
    return time.time_ns() // 1_000_000


def default_actor() -> str:
    """user@host, the actor recorded on events appended by this process."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def problems_of(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted field, message) pairs."""
    out = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(request)"
        out.append((field, error["msg"]))
    return out


def build(event_class: type[Event], **fields: Any) -> Event:
    """Validate fields into an event; fills event_id and occurred_at; InvalidRequest names each bad field."""
    fields.setdefault("event_id", str(uuid.uuid4()))
    fields.setdefault("occurred_at", now_ms())
    fields.setdefault("actor", default_actor())
    try:
        return event_class.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequest(problems_of(exc)) from None


def submission(queue: str, task_type: str, *, payload: str | None = None, **options: Any) -> TaskSubmitted:
    """A TaskSubmitted from user input; payload is JSON text and must parse."""
    if payload is not None:
        try:
            json.loads(payload)
        except ValueError as exc:
            raise InvalidRequest([("payload", f"not valid JSON: {exc}")]) from None
        options["payload"] = payload
    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("task_id", str(uuid.uuid4()))
    return build(TaskSubmitted, queue=queue, task_type=task_type, **options)  # type: ignore[return-value]


def cancel_request(queue: str, task_id: str, reason: str | None = None) -> TaskCancelRequested:
    """A TaskCancelRequested for a task of a queue."""
    return build(TaskCancelRequested, queue=queue, task_id=task_id, reason=reason)  # type: ignore[return-value]

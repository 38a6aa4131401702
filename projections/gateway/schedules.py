"""Recurring schedules over HTTP: create, list, read, pause, resume and delete.

Writes follow the read-your-write protocol of `writes.py`: validate and build the event
(a bad cron or timezone is a 422 naming the field, nothing appended), append, wait for
this gateway's projection, and answer with the verdict of the schedules fold
(`taskfold.core.scheduling.recurring`), which the schedules view records per event.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from projections.gateway.deps import AdminDep, ReaderDep, Runtime, RuntimeDep
from projections.gateway.errors import ApiError
from projections.gateway.writes import Name, Text, actor, commit
from projections.views.schedules import SCHEDULES, VERDICTS
from projections.views.viewrows import SEP, join
from taskfold.core.events import (INT_MAX, LONG_MAX, Event, Millis, MisfirePolicy, Priority, QueueName, ScheduleCreated,
                             ScheduleDeleted, SchedulePaused, ScheduleResumed)
from taskfold.core.scheduling.recurring import definition_problems, describe, from_row
from taskfold.core.edge import now_ms

router = APIRouter(tags=["schedules"])

ScheduleIdPath = Annotated[str, Path(min_length=1, max_length=1024)]
QueueQuery = Annotated[str | None, Query(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._#:-]+$",
                                         description="the schedule's queue, when its id is in several")]


class ScheduleRequest(BaseModel):
    """A recurring schedule: a cron expression (in a timezone) or an interval, and the task each slot submits."""

    model_config = ConfigDict(extra="forbid")

    queue: QueueName
    task_type: Name
    schedule_id: Name | None = Field(default=None, description="default: a new uuid4")
    cron: Text | None = Field(default=None, description="5-field cron expression, e.g. '*/5 * * * *'")
    timezone: Text = Field(default="UTC", description="IANA timezone the cron expression is read in")
    interval_ms: Annotated[int, Field(ge=1000, le=LONG_MAX)] | None = Field(default=None,
                                                                            description="or: fire every interval")
    start_at: Millis | None = Field(default=None, description="epoch ms: no slot before it; an interval's anchor")
    misfire: MisfirePolicy = Field(default=MisfirePolicy.skip, description="after downtime: skip, or run_once")
    misfire_grace_ms: Millis = Field(default=60_000, description="a slot this late still fires")
    payload: JsonValue = None
    priority: Priority = Priority.medium
    timeout_ms: Annotated[int, Field(gt=0, le=LONG_MAX)] = 300_000
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3
    concurrency_key: Text | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=INT_MAX)] = 1
    labels: dict[Text, Text] = Field(default_factory=dict)
    required_capabilities: list[Text] = Field(default_factory=list)


class ScheduleTemplate(BaseModel):
    """What each slot of a schedule submits."""

    task_type: str
    priority: Priority
    payload: JsonValue
    timeout_ms: int
    max_attempts: int
    concurrency_key: str | None
    concurrency_limit: int
    labels: dict[str, str]
    required_capabilities: list[str]


class ScheduleOut(BaseModel):
    """A schedule as folded from the log: its definition, state, fires so far and next slot."""

    schedule_id: str
    queue: str
    cron: str | None
    timezone: str
    interval_ms: int | None
    start_at: int | None
    misfire: MisfirePolicy
    misfire_grace_ms: int
    task: ScheduleTemplate
    state: str = Field(description="active, paused or deleted")
    created_at: int
    fired: int
    last_slot: int | None = Field(description="epoch ms of the latest slot fired")
    next_slot: int | None = Field(description="epoch ms of the next slot (null when paused or deleted)")


class ScheduleResult(BaseModel):
    """A schedule write's outcome: the schedule after it, where the event is, and the verdict."""

    schedule: ScheduleOut | None
    position: str
    event_id: str
    verdict: str
    reason: str | None = None



def _rows(rt: Runtime, queue: str | None = None) -> list[dict[str, Any]]:
    return [row for _, row in rt.live.store.scan(SCHEDULES, queue + SEP if queue else "")]


def _shown(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else describe(from_row(row), now_ms())


def _find(rt: Runtime, schedule_id: str, queue: str | None) -> dict[str, Any]:
    """The live row of a schedule; 404 if none, 409 if its id is in several queues and none is named."""
    rows = [r for r in _rows(rt, queue) if r["definition"]["schedule_id"] == schedule_id and not r["deleted"]]
    if not rows:
        raise ApiError(404, "not_found", f"no schedule {schedule_id}" + (f" in queue {queue}" if queue else ""))
    if len(rows) > 1:
        raise ApiError(409, "ambiguous_schedule", f"schedule id {schedule_id} exists in several queues; name one "
                       "with ?queue=", [("queue", "required: the schedule id is in several queues")])
    return rows[0]


async def _write(rt: Runtime, event: Event, status: int = 200) -> JSONResponse:
    """Append, wait for the projection, and answer with the schedules fold's verdict."""
    (change,) = await commit(rt, [event])
    verdict = rt.live.store.get(VERDICTS, event.event_id) or {"outcome": "rejected", "reason": "no verdict recorded"}
    row = rt.live.store.get(SCHEDULES, join(event.queue, event.schedule_id))  # type: ignore[attr-defined]
    if verdict["outcome"] == "rejected":
        field, _, rest = (verdict["reason"] or "").partition(": ")
        named = field in ScheduleRequest.model_fields and rest
        raise ApiError(422 if named and field != "schedule_id" else 409, "rejected", f"rejected: {verdict['reason']}",
                       [(field, rest)] if named else [], extra={"position": change.position})
    result = ScheduleResult(schedule=_shown(row), position=change.position, event_id=event.event_id,
                            verdict=verdict["outcome"], reason=verdict["reason"])
    return JSONResponse(result.model_dump(mode="json"), status_code=status if verdict["outcome"] == "accepted" else 200)


def creation(body: ScheduleRequest, by: str) -> ScheduleCreated:
    """The ScheduleCreated of a request; ApiError(422) naming the fields otherwise."""
    fields = body.model_dump(exclude={"payload", "schedule_id"})
    try:
        event = ScheduleCreated(event_id=str(uuid.uuid4()), occurred_at=now_ms(), actor=by,
                                schedule_id=body.schedule_id or str(uuid.uuid4()),
                                payload=json.dumps(body.payload, allow_nan=False, separators=(",", ":")), **fields)
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])) or "payload", e["msg"]) for e in exc.errors()]
        raise ApiError(422, "invalid_request", "not a valid schedule: " + ", ".join(f for f, _ in problems),
                       problems) from None
    except ValueError as exc:  # json.dumps: NaN or Infinity
        raise ApiError(422, "invalid_request", "payload is not JSON", [("payload", str(exc))]) from None
    problems = definition_problems(event)
    if problems:
        raise ApiError(422, "invalid_request", "not a valid schedule: " + "; ".join(f"{f}: {r}" for f, r in problems),
                       problems)
    return event


@router.post("/v1/schedules", status_code=201, response_model=ScheduleResult,
             responses={409: {"description": "a schedule with this id exists in the queue"},
                        422: {"description": "a field is not valid (cron, timezone, ...)"}})
async def create_schedule(body: ScheduleRequest, principal: AdminDep, rt: RuntimeDep) -> JSONResponse:
    """Create a recurring schedule (admin only); its slots submit tasks from the template."""
    event = creation(body, actor(principal))
    if any(r["definition"]["schedule_id"] == event.schedule_id and not r["deleted"] for r in _rows(rt, body.queue)):
        raise ApiError(409, "schedule_exists", f"schedule {event.schedule_id} already exists in queue {body.queue}",
                       [("schedule_id", "already exists in this queue")])
    return await _write(rt, event, status=201)


@router.get("/v1/schedules", response_model=list[ScheduleOut])
async def list_schedules(principal: ReaderDep, rt: RuntimeDep, queue: QueueQuery = None,
                         deleted: bool = False) -> list[dict[str, Any]]:
    """Every schedule (of one queue), with its state, fires so far and next slot."""
    return [describe(from_row(r), now_ms()) for r in _rows(rt, queue) if deleted or not r["deleted"]]


@router.get("/v1/schedules/{schedule_id}", response_model=ScheduleOut, responses={404: {"description": "unknown"}})
async def get_schedule(schedule_id: ScheduleIdPath, principal: ReaderDep, rt: RuntimeDep,
                       queue: QueueQuery = None) -> dict[str, Any]:
    """One schedule."""
    return describe(from_row(_find(rt, schedule_id, queue)), now_ms())


async def _change(kind: type[Event], schedule_id: str, principal: Any, rt: Runtime, queue: str | None) -> JSONResponse:
    row = _find(rt, schedule_id, queue)
    event = kind(event_id=str(uuid.uuid4()), queue=row["definition"]["queue"], occurred_at=now_ms(),
                 actor=actor(principal), schedule_id=schedule_id)
    return await _write(rt, event)


@router.post("/v1/schedules/{schedule_id}/pause", response_model=ScheduleResult,
             responses={404: {"description": "unknown"}, 409: {"description": "already paused"}})
async def pause_schedule(schedule_id: ScheduleIdPath, principal: AdminDep, rt: RuntimeDep,
                         queue: QueueQuery = None) -> JSONResponse:
    """Stop a schedule firing until it is resumed."""
    return await _change(SchedulePaused, schedule_id, principal, rt, queue)


@router.post("/v1/schedules/{schedule_id}/resume", response_model=ScheduleResult,
             responses={404: {"description": "unknown"}, 409: {"description": "not paused"}})
async def resume_schedule(schedule_id: ScheduleIdPath, principal: AdminDep, rt: RuntimeDep,
                          queue: QueueQuery = None) -> JSONResponse:
    """Fire a paused schedule again, from its next slot (the slots of the pause never fire)."""
    return await _change(ScheduleResumed, schedule_id, principal, rt, queue)


@router.delete("/v1/schedules/{schedule_id}", response_model=ScheduleResult,
               responses={404: {"description": "unknown"}})
async def delete_schedule(schedule_id: ScheduleIdPath, principal: AdminDep, rt: RuntimeDep,
                          queue: QueueQuery = None) -> JSONResponse:
    """Delete a schedule: it never fires again."""
    return await _change(ScheduleDeleted, schedule_id, principal, rt, queue)

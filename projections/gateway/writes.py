"""Writes: submit (one or a batch), cancel and redrive, each answered with the fold's verdict.

Read-your-write protocol, for every write:
1. Validate the whole request and build every event (`taskfold.core.requests`), so a bad field is
   a 422 naming it and nothing is appended; a batch is built whole before any append.
   Submits are then checked against this gateway's fold (`admission`): an unknown
   dependency (422) or an idempotency key reused for a different request (409) appends
   nothing.
2. Append the events and learn their positions (broker unreachable: 503 with the cause).
3. Wait until this gateway's projection has applied those positions, at most
   `write_timeout_s`; past that, a 503 with Retry-After says the event WAS appended, where,
   and how to find its outcome. A write never hangs.
4. Answer with the verdict the fold gave the event: accepted, duplicate (an idempotency
   key already used: the ORIGINAL task, `duplicate: true`) or rejected (409 with the fold's
   reason; 422 when the reason names a field of the request).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from projections import queries
from projections.gateway.admission import conflict_after, refuse_before_append
from projections.gateway.deps import AdminDep, Principal, Runtime, RuntimeDep, SubmitterDep
from projections.gateway.errors import ApiError
from projections.view import Change
from taskfold.core.requests import InvalidRequest, build, submission
from taskfold.core.events import (INT_MAX, LONG_MAX, Backoff, DependencyFailurePolicy, Event, Millis, Priority, QueueName,
                             TaskCancelRequested, TaskRedriven, TaskSubmitted)
from taskfold.core.state import Task
from taskfold.core.foldrows import plain

router = APIRouter(tags=["writes"])

RETRY_AFTER_S = 1  # a pending write is usually applied within a second of the timeout


def _utf8(value: str) -> str:
    # JSON may carry lone surrogates, which no UTF-8 log record can hold.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_utf8)]
Name = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_utf8)]


class TaskRequest(BaseModel):
    """A task to submit; every field but queue and task_type has a default."""

    model_config = ConfigDict(extra="forbid")

    queue: QueueName
    task_type: Name
    task_id: Name | None = Field(default=None, description="default: a new uuid4")
    payload: JsonValue = Field(default=None, description="any JSON value, handed to the agent as is")
    priority: Priority = Priority.medium
    not_before: Millis | None = Field(default=None, description="epoch ms before which it does not start")
    timeout_ms: Annotated[int, Field(gt=0, le=LONG_MAX)] = 300_000
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3
    backoff: Backoff | None = None
    depends_on: list[Name] = Field(default_factory=list, description="task ids (any queue) this task waits for; "
                                   "each must exist unless dependencies_may_follow")
    on_dependency_failure: DependencyFailurePolicy = Field(
        default=DependencyFailurePolicy.cancel, description="when a dependency fails: cancel this task, or run it")
    dependencies_may_follow: bool = Field(default=False, description="depends_on may name tasks not submitted yet")
    session_id: Text | None = None
    correlation_id: Text | None = None
    concurrency_key: Text | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=INT_MAX)] = 1
    labels: dict[Text, Text] = Field(default_factory=dict, description="labels an agent must carry")
    required_capabilities: list[Text] = Field(default_factory=list)
    idempotency_key: Text | None = Field(default=None, description="or the Idempotency-Key header")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskRequest] = Field(min_length=1)


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text | None = None


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    extra_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    reason: Text | None = None


class WriteResult(BaseModel):
    """A write's outcome: the task (as GET /v1/tasks/{id} shows it, this event applied), where the
    event is, and the verdict."""

    task: dict[str, Any] | None
    position: str
    event_id: str
    verdict: str
    duplicate: bool = False
    reason: str | None = None


class BatchItem(WriteResult):
    index: int
    status: int


class BatchResult(BaseModel):
    results: list[BatchItem]


IdempotencyHeader = Annotated[Text | None, Header(alias="Idempotency-Key", max_length=1024)]
TaskIdPath = Annotated[str, Path(min_length=1, max_length=1024)]
QueueQuery = Annotated[str | None, Query(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._#:-]+$",
                                         description="the task's queue, when its id is in several")]


@router.post("/v1/tasks", status_code=201, response_model=WriteResult,
             responses={200: {"model": WriteResult, "description": "a duplicate: the original task"},
                        409: {"description": "rejected by the fold, or idempotency_conflict: the key was used "
                                              "for a different request"},
                        422: {"description": "a field is not valid, or depends_on names an unknown task"},
                        503: {"description": "not yet applied"}})
async def submit_task(body: TaskRequest, principal: SubmitterDep, rt: RuntimeDep,
                      idempotency_key: IdempotencyHeader = None) -> JSONResponse:
    """Submit a task and answer with the verdict once this gateway's projection applied it."""
    event = _submission(body, idempotency_key, principal)
    given = body.task_id is not None
    refuse_before_append(rt, [(event, given)])  # type: ignore[list-item]
    (change,) = await commit(rt, [event])
    late = conflict_after(rt, change, event, given)  # type: ignore[arg-type]
    if late is not None:
        raise late
    status, result = judge(change, event.task_id, shower(rt))
    return JSONResponse(result.model_dump(), status_code=status)


@router.post("/v1/tasks/batch", response_model=BatchResult,
             responses={409: {"description": "idempotency_conflict: an item reuses a key for a different request; "
                                              "nothing appended"},
                        503: {"description": "appended, not yet applied"}})
async def submit_batch(body: BatchRequest, principal: SubmitterDep, rt: RuntimeDep,
                       idempotency_key: IdempotencyHeader = None) -> BatchResult:
    """Submit many tasks at once: all are validated before any is appended; a verdict per task."""
    limit = rt.batch_max
    if len(body.tasks) > limit:
        raise ApiError(422, "invalid_request", f"a batch holds at most {limit} tasks, not {len(body.tasks)}",
                       [("tasks", f"at most {limit} items")])
    events, problems = [], []
    for index, item in enumerate(body.tasks):
        key = f"{idempotency_key}/{index}" if idempotency_key and not item.idempotency_key else None
        try:
            events.append(_submission(item, key, principal))
        except ApiError as exc:
            problems += [(f"tasks.{index}.{p['field']}", p["reason"]) for p in exc.problems]
    if problems:
        raise ApiError(422, "invalid_request", "nothing was appended: "
                       + ", ".join(sorted({field for field, _ in problems})) + " not valid", problems)
    given = [item.task_id is not None for item in body.tasks]
    refuse_before_append(rt, list(zip(events, given, strict=True)), prefix="tasks.")  # type: ignore[arg-type]
    changes = await commit(rt, events)
    results, show = [], shower(rt)
    for index, (event, change) in enumerate(zip(events, changes, strict=True)):
        status, result = judge(change, event.task_id, show, raising=False)
        late = conflict_after(rt, change, event, given[index])  # type: ignore[arg-type]
        if late is not None:
            status, result = late.status, result.model_copy(update={"reason": late.problems[0]["reason"]})
        results.append(BatchItem(index=index, status=status, **result.model_dump()))
    return BatchResult(results=results)


@router.post("/v1/tasks/{task_id}/cancel", response_model=WriteResult,
             responses={404: {"description": "unknown task"}, 409: {"description": "rejected by the fold"}})
async def cancel_task(task_id: TaskIdPath, principal: SubmitterDep, rt: RuntimeDep,
                      body: CancelRequest | None = None, queue: QueueQuery = None) -> WriteResult:
    """Ask for a task to be cancelled: at once if it waits, through its agent if one holds it."""
    name = queue_of(rt, task_id, queue)
    try:
        event = build(TaskCancelRequested, queue=name, task_id=task_id, reason=body.reason if body else None,
                      actor=actor(principal))
    except InvalidRequest as exc:
        raise ApiError(422, "invalid_request", str(exc), exc.problems) from None
    (change,) = await commit(rt, [event])
    return judge(change, task_id, shower(rt))[1]


@router.post("/v1/dead-letters/{task_id}/redrive", response_model=WriteResult,
             responses={404: {"description": "unknown task"}, 409: {"description": "not dead-lettered"}})
async def redrive_task(task_id: TaskIdPath, principal: AdminDep, rt: RuntimeDep,
                       body: RedriveRequest | None = None, queue: QueueQuery = None) -> WriteResult:
    """Put a dead-lettered task back in its queue with more attempts (admin only)."""
    name = queue_of(rt, task_id, queue)
    body = body or RedriveRequest()
    try:
        event = build(TaskRedriven, queue=name, task_id=task_id, extra_attempts=body.extra_attempts,
                      reason=body.reason, actor=actor(principal))
    except InvalidRequest as exc:
        raise ApiError(422, "invalid_request", str(exc), exc.problems) from None
    (change,) = await commit(rt, [event])
    return judge(change, task_id, shower(rt))[1]


def actor(principal: Principal) -> str:
    """Who the event says appended it: the gateway, on behalf of the token's name."""
    return f"gateway/{principal.name}"


def _submission(body: TaskRequest, header_key: str | None, principal: Principal) -> Event:
    """The TaskSubmitted of a request; ApiError(422) naming the fields otherwise."""
    key = body.idempotency_key
    if header_key is not None and key is not None and header_key != key:
        raise ApiError(422, "invalid_request", "two different idempotency keys",
                       [("idempotency_key", "differs from the Idempotency-Key header")])
    try:
        payload = json.dumps(body.payload, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ApiError(422, "invalid_request", "payload is not JSON",
                       [("payload", "NaN and Infinity are not JSON")]) from None
    options = body.model_dump(exclude={"queue", "task_type", "payload", "idempotency_key", "backoff"})
    if body.backoff is not None:
        options["backoff"] = body.backoff
    try:
        return submission(body.queue, body.task_type, payload=payload, idempotency_key=key or header_key,
                          actor=actor(principal), **options)
    except InvalidRequest as exc:
        raise ApiError(422, "invalid_request", str(exc), exc.problems) from None


def queue_of(rt: Runtime, task_id: str, queue: str | None = None) -> str:
    """The queue holding `task_id`, from the fold this gateway keeps; 404 if none does.

    Task ids are unique per queue, so when two queues hold the same id the caller must
    name the queue (`?queue=`).
    """
    projector = getattr(rt.live, "projector", None)
    if projector is None:
        raise read_only_error()
    if queue is not None:
        if projector.task(queue, task_id) is None:
            raise ApiError(404, "not_found", f"queue {queue} has no task {task_id}")
        return queue
    holders = sorted(name for name in projector.queues if projector.task(name, task_id) is not None)
    if not holders:
        raise ApiError(404, "not_found", f"no task {task_id}")
    if len(holders) > 1:
        raise ApiError(409, "ambiguous_task", f"task id {task_id} exists in queues {', '.join(holders)}; "
                       "name one with ?queue=", [("queue", "required: the task id is in several queues")])
    return holders[0]


def read_only_error() -> ApiError:
    """The answer of a write to a gateway serving a prebuilt store."""
    return ApiError(405, "read_only", "read-only gateway: it serves a prebuilt store and appends nothing",
                    headers={"Allow": "GET, HEAD"})


async def commit(rt: Runtime, events: Sequence[Event]) -> list[Change]:
    """Append `events`, then wait until the projection applied each (steps 2 and 3 above)."""
    try:
        positions = await asyncio.wait_for(rt.log.append(list(events)), rt.write_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ApiError(503, "log_unavailable", f"the log did not confirm the write ({cause}); it may not have "
                       "been appended, and retrying with the same Idempotency-Key is safe (a write that did land "
                       "is then answered as a duplicate)", headers={"Retry-After": "5"}) from None
    waits = [rt.live.wait_applied(p.partition, p.offset, timeout=rt.write_timeout_s) for p in positions]
    outcomes = await asyncio.gather(*waits, return_exceptions=True)
    failed = [(p, o) for p, o in zip(positions, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        raise _pending(rt, events, positions, failed)
    return list(outcomes)  # type: ignore[arg-type]


def _pending(rt: Runtime, events: Sequence[Event], positions: Sequence[Any],
             failed: Sequence[tuple[Any, BaseException]]) -> ApiError:
    """The 503 of events that were appended but whose verdicts this gateway does not have yet."""
    where = [str(p) for p in positions]
    task_ids = [getattr(e, "task_id", None) for e in events]
    first, exc = failed[0]
    if isinstance(exc, TimeoutError):
        why = f"this gateway's projection did not apply it within {rt.write_timeout_s:g} s"
    else:
        why = f"this gateway cannot tell its verdict ({exc})"
    lookup = f"GET /v1/tasks/{task_ids[0]}" if len(events) == 1 else "GET /v1/tasks/{task_id}"
    appended = (f"the event was appended at {where[0]}" if len(events) == 1
                else f"all {len(events)} events were appended (at {', '.join(where)})")
    return ApiError(503, "write_pending", f"{appended}, but {why}; it will be judged like any other event: "
                    f"{lookup} shows the outcome once applied, and retrying with the same Idempotency-Key "
                    "is safe", headers={"Retry-After": str(RETRY_AFTER_S)},
                    extra={"positions": where, "task_ids": task_ids, "event_ids": [e.event_id for e in events]})


Show = Callable[[Task | None], dict[str, Any] | None]


def judge(change: Change, task_id: str, show: Show | None = None, *,
          raising: bool = True) -> tuple[int, WriteResult]:
    """(HTTP status, body) of an applied event's verdict; a rejection raises unless `raising` is off."""
    show = show or task_body
    verdict = change.verdict
    state = change.after.state
    common = {"position": change.position, "event_id": change.event.event_id, "verdict": verdict.outcome,
              "reason": verdict.reason}
    if verdict.outcome == "accepted":
        status = 201 if isinstance(change.event, TaskSubmitted) else 200
        return status, WriteResult(task=show(state.task(task_id)), **common)
    if verdict.outcome == "duplicate":
        original = state.task(verdict.ref or task_id)
        return 200, WriteResult(task=show(original), duplicate=True, **common)
    field, _, rest = (verdict.reason or "").partition(": ")
    in_request = field in TaskRequest.model_fields and rest
    status = 422 if in_request else 409
    if raising:
        problems = [(field, rest)] if in_request else []
        raise ApiError(status, "rejected", f"rejected: {verdict.reason}", problems,
                       extra={"position": change.position, "event_id": change.event.event_id})
    return status, WriteResult(task=show(state.task(task_id)), **common)



def _json_text(text: str | None) -> Any:
    return None if text is None else json.loads(text)


HIDDEN = {"event_ids"}  # the fold's duplicate bookkeeping, not a fact about the task


def shower(rt: Runtime) -> Show:
    """How a write shows a task: as GET /v1/tasks/{id} does (the stored row, which the
    projection committed before the write's wait ended), or from the fold without a tasks view."""
    def show(task: Task | None) -> dict[str, Any] | None:
        if task is None:
            return None
        row = queries.get_task(rt.live.store, task.task_id, task.queue)
        if row is None:
            return task_body(task)
        return {**row, "payload": _json_text(row.get("payload")), "result": _json_text(row.get("result"))}
    return show


def task_body(task: Task | None) -> dict[str, Any] | None:
    """A task from the fold: payload and result as JSON values, labels as an object."""
    if task is None:
        return None
    body = {f.name: plain(getattr(task, f.name)) for f in fields(task) if f.name not in HIDDEN}
    body["labels"] = dict(task.labels)
    body["payload"] = _json_text(task.payload)
    body["result"] = _json_text(task.result)
    return body

"""Reads: the GET routes over the projections (`projections.queries` does the work).

Who may read: submitters and auditors (admins always). The audit reads, rejections and
`as_of` views of the past, are for auditors only. Lists are paged: pass the body's
`next_cursor` back as `cursor` until it is null. Payloads and results are JSON values
(the log carries them as JSON text).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query

from projections import queries
from projections.gateway.deps import AuditorDep, ReaderDep, Role, StoreDep
from projections.gateway.errors import ApiError
from projections.gateway.readmodels import (AgentList, AgentOut, AgentTaskPage, AnalyticsOut, DeadLetterPage,
                                            HistoryPage, QueueList, QueueOut, RejectionPage, ResultOut, TaskOut,
                                            TaskPage)
from taskfold.core.edge import now_ms
from taskfold.core.state import TaskState

router = APIRouter(tags=["reads"])

Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
QueueFilter = Annotated[str | None, Query(min_length=1, max_length=249, description="only this queue")]


# helpers


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _task_out(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A stored task row as the API shows it: payload and result as JSON values."""
    return {**row, "payload": _json(row["payload"]), "result": _json(row["result"]), **extra}


def _history_out(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "task": _task_out(row["task"]) if row["task"] is not None else None}


def _unknown_task(task_id: str) -> ApiError:
    return ApiError(404, "not_found", f"unknown task {task_id}")


def _bad_query(field: str, reason: str) -> ApiError:
    return ApiError(422, "invalid_request", f"the request is not valid: {field}", [(field, reason)])


def _paged(call: Any, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return call(*args, **kwargs)
    except queries.BadCursor as exc:
        raise _bad_query("cursor", str(exc)) from None


def parse_as_of(text: str) -> int:
    """Epoch ms of an `as_of` value: an integer (epoch ms) or an ISO-8601 time (UTC unless it says)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad_query("as_of", "not epoch milliseconds or an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


# tasks


@router.get("/v1/tasks/{task_id}", response_model=TaskOut, responses={404: {"description": "unknown task"}})
async def get_task(
    task_id: str, principal: ReaderDep, store: StoreDep,
    as_of: Annotated[str | None, Query(description="epoch ms or ISO-8601: the task as it was then (auditors)")] = None,
    queue: QueueFilter = None,
) -> dict[str, Any]:
    """A task now, or as it was at `as_of` (the fold of the log up to that moment)."""
    if as_of is None:
        row = queries.get_task(store, task_id, queue)
        if row is None:
            raise _unknown_task(task_id)
        return _task_out(row)
    if not principal.can(Role.auditor):
        raise ApiError(403, "forbidden", "as_of reads are for auditors")
    moment = parse_as_of(as_of)
    row = queries.task_at(store, task_id, moment, queue=queue)
    if row is None:
        raise ApiError(404, "not_found", f"task {task_id} did not exist at {moment} (epoch ms)")
    return _task_out(row, as_of=moment)


@router.get("/v1/tasks/{task_id}/history", response_model=HistoryPage,
            responses={404: {"description": "unknown task"}})
async def task_history(
    task_id: str, principal: ReaderDep, store: StoreDep, limit: Limit = 100,
    cursor: Annotated[str | None, Query(description="a position (partition:offset): rows after it")] = None,
    queue: QueueFilter = None,
) -> dict[str, Any]:
    """Every event about a task (rejected and duplicate ones too), its verdict and the task after it."""
    if cursor is not None:
        try:
            queries.parse_position(cursor)
        except ValueError as exc:
            raise _bad_query("cursor", str(exc)) from None
    rows = queries.task_history(store, task_id, after=cursor, queue=queue, limit=limit + 1)
    if not rows and cursor is None:
        raise _unknown_task(task_id)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"task_id": task_id, "events": [_history_out(r) for r in rows],
            "next_cursor": rows[-1]["position"] if more else None}


@router.get("/v1/tasks/{task_id}/result", response_model=ResultOut,
            responses={404: {"description": "unknown task, or not finished yet (code `not_finished`)"}})
async def task_result(task_id: str, principal: ReaderDep, store: StoreDep,
                      queue: QueueFilter = None) -> dict[str, Any]:
    """What a finished task ended with: its result, or its error and why."""
    result = queries.task_result(store, task_id, queue)
    if result is None:
        raise _unknown_task(task_id)
    if not result["finished"]:
        raise ApiError(404, "not_finished", f"task {task_id} is {result['state']}: it has not finished yet",
                       extra={"state": result["state"]})
    return {**result, "result": _json(result["result"])}


@router.get("/v1/tasks", response_model=TaskPage)
async def list_tasks(
    principal: ReaderDep, store: StoreDep, queue: QueueFilter = None, state: TaskState | None = None,
    session_id: Annotated[str | None, Query(min_length=1)] = None,
    correlation_id: Annotated[str | None, Query(min_length=1)] = None,
    limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    """Tasks matching every filter given, a page at a time."""
    rows, after = _paged(queries.list_tasks, store, queue=queue,
                         state=state.value if state else None, session_id=session_id,
                         correlation_id=correlation_id, limit=limit, cursor=cursor)
    return {"tasks": [_task_out(r) for r in rows], "next_cursor": after}


# agents


@router.get("/v1/agents", response_model=AgentList)
async def list_agents(principal: ReaderDep, store: StoreDep) -> dict[str, Any]:
    """Every agent: seats per queue, load, performance, last heartbeat."""
    return {"agents": queries.list_agents(store)}


@router.get("/v1/agents/{agent_id}", response_model=AgentOut, responses={404: {"description": "unknown agent"}})
async def get_agent(agent_id: str, principal: ReaderDep, store: StoreDep) -> dict[str, Any]:
    """One agent: its seats, EWMA success and latency, quarantine, heartbeat, task counts."""
    agent = queries.get_agent(store, agent_id)
    if agent is None:
        raise ApiError(404, "not_found", f"unknown agent {agent_id}")
    return agent


@router.get("/v1/agents/{agent_id}/tasks", response_model=AgentTaskPage)
async def agent_tasks(
    agent_id: str, principal: ReaderDep, store: StoreDep,
    held: Annotated[bool, Query(description="true: only the tasks it holds now")] = False,
    limit: Limit = 50, cursor: Cursor = None,
) -> dict[str, Any]:
    """Tasks an agent holds now, or has ever held."""
    rows, after = _paged(queries.agent_tasks, store, agent_id, held=held, limit=limit, cursor=cursor)
    return {"tasks": rows, "next_cursor": after}


# queues and analytics


@router.get("/v1/queues", response_model=QueueList)
async def list_queues(principal: ReaderDep, store: StoreDep) -> dict[str, Any]:
    """Every queue: depth by state and priority, oldest waiting task, totals."""
    return {"queues": queries.list_queues(store, now_ms())}


@router.get("/v1/queues/{queue}", response_model=QueueOut, responses={404: {"description": "unknown queue"}})
async def get_queue(queue: str, principal: ReaderDep, store: StoreDep) -> dict[str, Any]:
    """One queue, with its agents' seats."""
    row = queries.get_queue(store, queue, now_ms())
    if row is None:
        raise ApiError(404, "not_found", f"unknown queue {queue} (no event of it has been applied)")
    return row


@router.get("/v1/analytics", response_model=AnalyticsOut)
async def analytics(
    principal: ReaderDep, store: StoreDep, queue: QueueFilter = None,
    minutes: Annotated[int, Query(ge=1, le=7 * 24 * 60, description="window length, ending at the newest event")] = 60,
) -> dict[str, Any]:
    """Throughput per minute, error rate, wait and run time p50/p95/p99 per queue and type, utilization."""
    return queries.analytics(store, queue=queue, minutes=minutes)


# audit


@router.get("/v1/rejections", response_model=RejectionPage)
async def rejections(principal: AuditorDep, store: StoreDep, limit: Limit = 50,
                     cursor: Cursor = None) -> dict[str, Any]:
    """Every event the fold rejected, with the reason (auditors)."""
    rows, after = _paged(queries.rejections, store, limit=limit, cursor=cursor)
    return {"rejections": rows, "next_cursor": after}


@router.get("/v1/dead-letters", response_model=DeadLetterPage)
async def dead_letters(principal: ReaderDep, store: StoreDep, queue: QueueFilter = None, limit: Limit = 50,
                       cursor: Cursor = None) -> dict[str, Any]:
    """Tasks dead-lettered now, with why (redrive with POST /v1/dead-letters/{task_id}/redrive)."""
    rows, after = _paged(queries.dead_letters, store, queue=queue, limit=limit, cursor=cursor)
    return {"dead_letters": rows, "next_cursor": after}

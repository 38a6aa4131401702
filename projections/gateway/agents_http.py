"""HTTP agents: join, heartbeat, long-poll for assignments, report, stream progress and leave,
so an agent in any language needs no Kafka client (`examples/http_agent.sh` is one in shell).

The gateway appends what the Python SDK appends, built by the same `Reporter`: reports carry
ids derived from the attempt (`taskfold.core.reports.report_id`), so a retried POST folds
as a duplicate, never as a second report. Only a token bound to the agent, or an admin,
may act as it.

A report (started, completed, failed, cancelled) goes through these steps:
1. Find the task in a queue the agent has a seat in (404 if none).
2. An attempt newer than this gateway's projection knows: wait (bounded by the write
   timeout) until the projection has applied the events log up to its end as of now.
   The agent can only know attempts the log holds, so after that wait the projection
   knows every attempt the agent may report on.
3. Refuse, without appending, a report the fold would reject as things stand, by the
   fold's own fence rules: the current attempt held by another agent (403 not_holder);
   then, unless the log already holds this very report (a retry, appended again to fold
   as a duplicate), a task completed or cancelled, an attempt older than the current one
   or one never assigned (409 stale_attempt), or one that is over (409 attempt_over).
4. Append it (key = queue), wait until the projection has applied it, answer the fold's
   verdict: accepted or duplicate is 200, rejected is 409 with the fold's reason (a report
   that passed step 3 but lost a race, say to a cancel or a lease expiry that landed
   first), and a projection that does not catch up in time is 503 (the retry is safe).
   If the wait of step 2 runs out, the report is appended and the fold decides.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from projections.gateway.auth import ensure_agent
from projections.gateway.deps import Principal, Role, Runtime, require, runtime
from projections.gateway.errors import ApiError, ErrorBody
from projections.gateway.fences import current, refusal
from projections.gateway.writes import Text, actor, commit, read_only_error
from projections.view import Change
from taskfold.core.reports import MAX_ERROR_CHARS, AttemptEnd, AttemptKey, Reporter
from taskfold.core.requests import size_problem
from taskfold.core.events import LeaveReason, QueueName
from taskfold.core.fold.attempts import AttemptEvent
from taskfold.log.records import Position, RawRecord
from taskfold.core.state import Task, TaskState
from taskfold.core.telemetry import ChunkKind
from taskfold.log.wire import encode_record

router = APIRouter(tags=["agents"])

MAX_WAIT_S = 30.0  # a long-poll never holds a request longer
Slots = Annotated[int, Field(ge=1, le=10_000)]
Attempt = Annotated[int, Field(ge=1, le=2**31 - 1, description="the attempt this report is about (fencing token)")]
AgentId = Annotated[str, Path(min_length=1, max_length=249)]
TaskId = Annotated[str, Path(min_length=1, max_length=1000)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JoinRequest(Body):
    queues: list[QueueName] | dict[QueueName, Slots] = Field(
        min_length=1, description="queue names (each gets `slots`), or {queue: slots}")
    slots: Slots = 1
    capabilities: list[Annotated[Text, Field(min_length=1)]] = Field(default_factory=list)
    labels: dict[Text, Text] = Field(default_factory=dict)


class HeartbeatRequest(Body):
    draining: bool = False


class ReportRequest(Body):
    attempt: Attempt
    queue: QueueName | None = Field(None, description="the task's queue, if its id is used in several")


class CompletedRequest(ReportRequest):
    result: JsonValue = None


class FailedRequest(ReportRequest):
    error: Annotated[Text, Field(min_length=1, max_length=MAX_ERROR_CHARS)] = "failed"
    retryable: bool = True


class ChunkIn(Body):
    seq: Annotated[int, Field(ge=0, le=2**31 - 1, description="numbers the attempt's chunks from 0; "
                                                                "a chunk sent again keeps its chunk_id")]
    kind: ChunkKind = ChunkKind.text
    content: Text


class ProgressRequest(ReportRequest):
    chunks: list[ChunkIn] = Field(min_length=1, max_length=500)


class LeaveRequest(Body):
    queues: list[QueueName] | None = Field(None, description="default: every queue the agent is seated in")


class VerdictOut(BaseModel):
    outcome: str
    reason: str | None = None


class Written(BaseModel):
    queue: str
    position: str
    event_id: str
    verdict: VerdictOut


class MembershipOut(BaseModel):
    agent_id: str
    queues: list[Written]


class ReportOut(Written):
    task_id: str
    attempt: int
    state: str | None = Field(description="the task's state once the report was applied")


class Assignment(BaseModel):
    task_id: str
    queue: str
    attempt: int
    task_type: str
    priority: str
    payload: JsonValue
    state: str
    timeout_ms: int
    lease_ms: int | None
    assigned_at: int | None
    cancel_requested: bool
    session_id: str | None
    correlation_id: str | None
    labels: dict[str, str]


class HeartbeatOut(BaseModel):
    agent_id: str
    position: str
    sent_at: int
    slots: dict[str, int]
    held: list[Assignment] = Field(description="attempts the agent holds (watch `cancel_requested`)")


class ProgressOut(BaseModel):
    task_id: str
    positions: list[str]


def _agent(rt: Runtime, principal: Principal, agent_id: str) -> Reporter:
    """The reporter of an agent the caller may act as (403 otherwise), on a live gateway (405 otherwise)."""
    ensure_agent(principal, agent_id)
    if getattr(rt.live, "projector", None) is None:
        raise read_only_error()
    return Reporter(agent_id, actor=actor(principal))


def _verdict(change: Change) -> VerdictOut:
    return VerdictOut(outcome=change.verdict.outcome, reason=change.verdict.reason)


def _seats(rt: Runtime, agent_id: str, active: bool = True) -> dict[str, Any]:
    """{queue: seat} of the agent (only active seats unless `active` is False)."""
    out = {}
    for name, queue in sorted(rt.live.projector.queues.items()):
        seat = queue.state.member(agent_id)
        if seat is not None and (seat.active or not active):
            out[name] = seat
    return out


def _assignment(task: Task) -> Assignment:
    return Assignment(task_id=task.task_id, queue=task.queue, attempt=task.attempt, task_type=task.task_type,
                      priority=task.priority.value, payload=json.loads(task.payload), state=task.state.value,
                      timeout_ms=task.timeout_ms, lease_ms=task.lease_ms, assigned_at=task.assigned_at,
                      cancel_requested=task.cancel_requested, session_id=task.session_id,
                      correlation_id=task.correlation_id, labels=dict(task.labels))


ASSIGNED = frozenset({TaskState.assigned})


def held(rt: Runtime, agent_id: str, states: frozenset[TaskState] = ASSIGNED) -> list[Assignment]:
    """The attempts the agent holds in the given states, by queue then assignment time."""
    out = []
    for name, seat in _seats(rt, agent_id, active=False).items():
        state = rt.live.projector.queue(name).state
        tasks = [state.task(t) for t in seat.holding]
        out += [_assignment(t) for t in sorted(filter(None, tasks), key=lambda t: (t.assigned_at or 0, t.task_id))
                if t.state in states and t.agent_id == agent_id]
    return out


def _locate(rt: Runtime, agent_id: str, task_id: str, queue: str | None) -> Task:
    names = [queue] if queue is not None else list(_seats(rt, agent_id, active=False))
    for name in names:
        task = rt.live.projector.queue(name).state.task(task_id)
        if task is not None:
            return task
    where = f"queue {queue}" if queue else f"any queue agent {agent_id} has joined"
    raise ApiError(404, "not_found", f"unknown task {task_id} in {where}")


async def _report(rt: Runtime, principal: Principal, agent_id: str, task_id: str, body: ReportRequest,
                  build: Callable[[Reporter, AttemptKey, str | None], AttemptEvent]) -> ReportOut:
    reporter = _agent(rt, principal, agent_id)
    task, caught_up = await current(rt, lambda: _locate(rt, agent_id, task_id, body.queue), body.attempt)
    event = build(reporter, AttemptKey(task.queue, task_id, body.attempt), task.correlation_id)
    refused = refusal(task, event, retry=True, caught_up=caught_up)
    if refused is not None:
        raise refused
    [change] = await commit(rt, [event])
    if change.verdict.outcome == "rejected":
        raise ApiError(409, "rejected", f"the fold rejected the report: {change.verdict.reason}",
                       extra={"position": change.position, "event_id": event.event_id})
    after = change.after.state.task(task_id)
    return ReportOut(queue=task.queue, position=change.position, event_id=event.event_id, verdict=_verdict(change),
                     task_id=task_id, attempt=body.attempt, state=after.state.value if after else None)


AGENT = require(Role.agent)


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    403: _error("the token is not bound to this agent (forbidden), or another agent holds the attempt (not_holder)"),
    405: _error("a read-only gateway"),
    503: _error("appended, but not applied in time (write_pending): retrying is safe"),
}
REPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: _error("no such task in the agent's queues"),
    409: _error("stale_attempt, attempt_over, or rejected by the fold: the reason says why"),
}


@router.post("/v1/agents/{agent_id}/join", response_model=MembershipOut, responses=ERRORS)
async def join(agent_id: AgentId, body: JoinRequest, request: Request, principal: Principal = AGENT) -> MembershipOut:
    """Seat the agent in its queues (one AgentJoined per queue) and record a first heartbeat."""
    rt = runtime(request)
    reporter = _agent(rt, principal, agent_id)
    slots = body.queues if isinstance(body.queues, dict) else {q: body.slots for q in body.queues}
    events = [reporter.joined(q, n, body.capabilities, body.labels) for q, n in sorted(slots.items())]
    changes = await commit(rt, events)
    await _beat(rt, reporter, agent_id, draining=False)
    return _membership(agent_id, changes)


async def _beat(rt: Runtime, reporter: Reporter, agent_id: str, draining: bool) -> tuple[Position, Any]:
    seats = _seats(rt, agent_id)
    beat = reporter.heartbeat({q: s.slots for q, s in seats.items()},
                              {q: len(s.holding) for q, s in seats.items()}, draining)
    value, headers = encode_record(beat)
    [position] = await _append_raw(rt, rt.log.topics.heartbeats, [RawRecord(agent_id, value, headers)])
    return position, beat


async def _append_raw(rt: Runtime, topic: str, records: list[RawRecord]) -> list[Position]:
    """Append telemetry records (heartbeats, chunks): nothing to wait for, the fold never sees them."""
    try:
        return await asyncio.wait_for(rt.log.writer.append(topic, records), rt.write_timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise ApiError(503, "log_unavailable", f"the log did not take the records ({type(exc).__name__}: {exc}); "
                       "retrying is safe", headers={"Retry-After": "5"}) from None


@router.post("/v1/agents/{agent_id}/heartbeat", response_model=HeartbeatOut, responses=ERRORS)
async def heartbeat(agent_id: AgentId, request: Request, body: HeartbeatRequest | None = None,
                    principal: Principal = AGENT) -> HeartbeatOut:
    """The agent is alive: append a Heartbeat (its slots and load from the fold); list what it holds."""
    rt = runtime(request)
    reporter = _agent(rt, principal, agent_id)
    position, beat = await _beat(rt, reporter, agent_id, draining=body.draining if body else False)
    return HeartbeatOut(agent_id=agent_id, position=str(position), sent_at=beat.sent_at, slots=beat.slots,
                        held=held(rt, agent_id, frozenset({TaskState.assigned, TaskState.running})))


@router.get("/v1/agents/{agent_id}/assignments", response_model=list[Assignment], responses=ERRORS)
async def assignments(agent_id: AgentId, request: Request, principal: Principal = AGENT,
                      wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for one")] = 0,
                      ) -> list[Assignment]:
    """Accepted assignments to the agent it has not reported on yet; waits up to `wait` s for one."""
    rt = runtime(request)
    _agent(rt, principal, agent_id)
    if wait > 0 and not held(rt, agent_id):
        try:
            await rt.live.wait_for(lambda: bool(held(rt, agent_id)), min(wait, MAX_WAIT_S))
        except TimeoutError:
            return []
    return held(rt, agent_id)


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/started", response_model=ReportOut, responses=REPORT_ERRORS)
async def started(agent_id: AgentId, task_id: TaskId, body: ReportRequest, request: Request,
                  principal: Principal = AGENT) -> ReportOut:
    """TaskStarted for the attempt the agent holds."""
    return await _report(runtime(request), principal, agent_id, task_id, body, Reporter.started)


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/completed", response_model=ReportOut, responses=REPORT_ERRORS)
async def completed(agent_id: AgentId, task_id: TaskId, body: CompletedRequest, request: Request,
                    principal: Principal = AGENT) -> ReportOut:
    """TaskCompleted with a JSON result."""
    try:
        outcome = AttemptEnd("completed", result=json.dumps(body.result, allow_nan=False))
    except ValueError:
        raise ApiError(422, "invalid_request", "result is not JSON",
                       [("result", "NaN and Infinity are not JSON")]) from None
    too_large = size_problem("result", outcome.result)
    if too_large is not None:
        raise ApiError(422, "invalid_request", too_large, [("result", too_large)])
    return await _report(runtime(request), principal, agent_id, task_id, body,
                         lambda reporter, key, correlation: reporter.outcome(key, outcome, correlation))


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/failed", response_model=ReportOut, responses=REPORT_ERRORS)
async def failed(agent_id: AgentId, task_id: TaskId, body: FailedRequest, request: Request,
                 principal: Principal = AGENT) -> ReportOut:
    """TaskFailed: retried with backoff when `retryable`, else dead-lettered."""
    outcome = AttemptEnd("failed", error=body.error, retryable=body.retryable)
    return await _report(runtime(request), principal, agent_id, task_id, body,
                         lambda reporter, key, correlation: reporter.outcome(key, outcome, correlation))


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/cancelled", response_model=ReportOut, responses=REPORT_ERRORS)
async def cancelled(agent_id: AgentId, task_id: TaskId, body: ReportRequest, request: Request,
                    principal: Principal = AGENT) -> ReportOut:
    """TaskCancelled: the agent stopped an attempt whose cancel was requested."""
    return await _report(runtime(request), principal, agent_id, task_id, body, Reporter.cancelled)


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/progress", response_model=ProgressOut, responses=REPORT_ERRORS)
async def progress(agent_id: AgentId, task_id: TaskId, body: ProgressRequest, request: Request,
                   principal: Principal = AGENT) -> ProgressOut:
    """Progress chunks of an attempt the agent holds, appended in order to `progress` (key = queue)."""
    rt = runtime(request)
    reporter = _agent(rt, principal, agent_id)
    task, caught_up = await current(rt, lambda: _locate(rt, agent_id, task_id, body.queue), body.attempt)
    key = AttemptKey(task.queue, task_id, body.attempt)
    refused = refusal(task, reporter.started(key), retry=False, caught_up=caught_up)  # chunks need what a start needs
    if refused is not None:
        raise refused
    records = []
    for chunk in body.chunks:
        value, headers = encode_record(reporter.chunk(key, chunk.seq, chunk.kind, chunk.content))
        records.append(RawRecord(task.queue, value, headers))
    positions = await _append_raw(rt, rt.log.topics.progress, records)
    return ProgressOut(task_id=task_id, positions=[str(p) for p in positions])


@router.post("/v1/agents/{agent_id}/leave", response_model=MembershipOut, responses=ERRORS)
async def leave(agent_id: AgentId, request: Request, body: LeaveRequest | None = None,
                principal: Principal = AGENT) -> MembershipOut:
    """AgentLeft (drained) per queue: attempts still held go back to their queues without charge."""
    rt = runtime(request)
    reporter = _agent(rt, principal, agent_id)
    queues = body.queues if body is not None and body.queues else list(_seats(rt, agent_id))
    if not queues:
        raise ApiError(409, "not_joined", f"agent {agent_id} is not seated in any queue")
    events = [reporter.left(q, LeaveReason.drained) for q in sorted(set(queues))]
    return _membership(agent_id, await commit(rt, events))


def _membership(agent_id: str, changes: Sequence[Change]) -> MembershipOut:
    return MembershipOut(agent_id=agent_id, queues=[
        Written(queue=c.event.queue, position=c.position, event_id=c.event.event_id, verdict=_verdict(c))
        for c in changes])

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
from fastapi import APIRouter, Path, Query

from projections.gateway.agentmodels import (AppendedEvent, Assignment, CompletedRequest, FailedRequest,
                                             HeartbeatOut, HeartbeatRequest, JoinRequest, LeaveRequest,
                                             MembershipOut, ProgressOut, ProgressRequest, ReportOut, ReportRequest)
from projections.gateway.auth import ensure_agent
from projections.gateway.deps import AgentDep, Principal, Runtime, RuntimeDep
from projections.gateway.errors import ApiError, ErrorBody
from projections.gateway.fences import current, refusal
from projections.gateway.readmodels import Verdict
from projections.gateway.writes import actor, commit, read_only_error
from projections.view import Change
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.core.requests import size_problem
from taskfold.core.events import LeaveReason
from taskfold.core.fold.attempts import AttemptEvent
from taskfold.log.records import Position, RawRecord
from taskfold.core.state import Task, TaskState
from taskfold.log.wire import encode_record

router = APIRouter(tags=["agents"])

MAX_WAIT_S = 30.0  # a long-poll never holds a request longer
AgentId = Annotated[str, Path(min_length=1, max_length=249)]
TaskId = Annotated[str, Path(min_length=1, max_length=1000)]


def _agent(rt: Runtime, principal: Principal, agent_id: str) -> Reporter:
    """The reporter of an agent the caller may act as (403 otherwise), on a live gateway (405 otherwise)."""
    ensure_agent(principal, agent_id)
    if getattr(rt.live, "projector", None) is None:
        raise read_only_error()
    return Reporter(agent_id, actor=actor(principal))


def _verdict(change: Change) -> Verdict:
    return Verdict(outcome=change.verdict.outcome, reason=change.verdict.reason, ref=change.verdict.ref)


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
        task = rt.live.projector.task(name, task_id)
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
async def join(agent_id: AgentId, body: JoinRequest, principal: AgentDep, rt: RuntimeDep) -> MembershipOut:
    """Seat the agent in its queues (one AgentJoined per queue) and record a first heartbeat."""
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
async def heartbeat(agent_id: AgentId, principal: AgentDep, rt: RuntimeDep,
                    body: HeartbeatRequest | None = None) -> HeartbeatOut:
    """The agent is alive: append a Heartbeat (its slots and load from the fold); list what it holds."""
    reporter = _agent(rt, principal, agent_id)
    position, beat = await _beat(rt, reporter, agent_id, draining=body.draining if body else False)
    return HeartbeatOut(agent_id=agent_id, position=str(position), sent_at=beat.sent_at, slots=beat.slots,
                        held=held(rt, agent_id, frozenset({TaskState.assigned, TaskState.running})))


@router.get("/v1/agents/{agent_id}/assignments", response_model=list[Assignment], responses=ERRORS)
async def assignments(agent_id: AgentId, principal: AgentDep, rt: RuntimeDep,
                      wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for one")] = 0,
                      ) -> list[Assignment]:
    """Accepted assignments to the agent it has not reported on yet; waits up to `wait` s for one."""
    _agent(rt, principal, agent_id)
    if wait > 0 and not held(rt, agent_id):
        try:
            await rt.live.wait_for(lambda: bool(held(rt, agent_id)), min(wait, MAX_WAIT_S))
        except TimeoutError:
            return []
    return held(rt, agent_id)


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/started", response_model=ReportOut, responses=REPORT_ERRORS)
async def started(agent_id: AgentId, task_id: TaskId, body: ReportRequest, principal: AgentDep,
                  rt: RuntimeDep) -> ReportOut:
    """TaskStarted for the attempt the agent holds."""
    return await _report(rt, principal, agent_id, task_id, body, Reporter.started)


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/completed", response_model=ReportOut, responses=REPORT_ERRORS)
async def completed(agent_id: AgentId, task_id: TaskId, body: CompletedRequest, principal: AgentDep,
                    rt: RuntimeDep) -> ReportOut:
    """TaskCompleted with a JSON result."""
    try:
        outcome = AttemptEnd("completed", result=json.dumps(body.result, allow_nan=False))
    except ValueError:
        raise ApiError(422, "invalid_request", "result is not JSON",
                       [("result", "NaN and Infinity are not JSON")]) from None
    too_large = size_problem("result", outcome.result)
    if too_large is not None:
        raise ApiError(422, "invalid_request", too_large, [("result", too_large)])
    return await _report(rt, principal, agent_id, task_id, body,
                         lambda reporter, key, correlation: reporter.outcome(key, outcome, correlation))


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/failed", response_model=ReportOut, responses=REPORT_ERRORS)
async def failed(agent_id: AgentId, task_id: TaskId, body: FailedRequest, principal: AgentDep,
                 rt: RuntimeDep) -> ReportOut:
    """TaskFailed: retried with backoff when `retryable`, else dead-lettered."""
    outcome = AttemptEnd("failed", error=body.error, retryable=body.retryable)
    return await _report(rt, principal, agent_id, task_id, body,
                         lambda reporter, key, correlation: reporter.outcome(key, outcome, correlation))


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/cancelled", response_model=ReportOut, responses=REPORT_ERRORS)
async def cancelled(agent_id: AgentId, task_id: TaskId, body: ReportRequest, principal: AgentDep,
                    rt: RuntimeDep) -> ReportOut:
    """TaskCancelled: the agent stopped an attempt whose cancel was requested."""
    return await _report(rt, principal, agent_id, task_id, body, Reporter.cancelled)


@router.post("/v1/agents/{agent_id}/tasks/{task_id}/progress", response_model=ProgressOut, responses=REPORT_ERRORS)
async def progress(agent_id: AgentId, task_id: TaskId, body: ProgressRequest, principal: AgentDep,
                   rt: RuntimeDep) -> ProgressOut:
    """Progress chunks of an attempt the agent holds, appended in order to `progress` (key = queue)."""
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
async def leave(agent_id: AgentId, principal: AgentDep, rt: RuntimeDep,
                body: LeaveRequest | None = None) -> MembershipOut:
    """AgentLeft (drained) per queue: attempts still held go back to their queues without charge."""
    reporter = _agent(rt, principal, agent_id)
    queues = body.queues if body is not None and body.queues else list(_seats(rt, agent_id))
    if not queues:
        raise ApiError(409, "not_joined", f"agent {agent_id} is not seated in any queue")
    events = [reporter.left(q, LeaveReason.drained) for q in sorted(set(queues))]
    return _membership(agent_id, await commit(rt, events))


def _membership(agent_id: str, changes: Sequence[Change]) -> MembershipOut:
    return MembershipOut(agent_id=agent_id, queues=[
        AppendedEvent(queue=c.event.queue, position=c.position, event_id=c.event.event_id, verdict=_verdict(c))
        for c in changes])

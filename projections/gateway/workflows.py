"""Workflows over HTTP: submit one whole, read its state and critical path, follow it as SSE.

Submitting is the write protocol of `writes`, for all the nodes at once:
1. Check the spec whole (`taskfold.workflows`): a bad field, a duplicate name, an unknown
   node reference or a cycle is a 422 naming the nodes, and nothing is appended. A node
   whose submit this gateway already holds from a different spec (same workflow id, same
   node, changed fields) is a 409, and nothing is appended.
2. Append every node's TaskSubmitted (in dependency order) and wait until this gateway's
   projection applied them (503 with where they are, past the write timeout).
3. Answer with each node's verdict: 201 when a node was admitted, 200 when every node was
   a duplicate (the same workflow submitted again), 409 when the fold rejected one.

The stream of a workflow sends one `node` message per node state change. Its nodes may
live in several partitions, so its id is a cursor of every partition it has delivered
from, `p:o,p:o`; `Last-Event-ID` resumes after it on any gateway. It ends with `end` once
every node has ended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel

from projections.gateway.admission import refuse_before_append
from projections.gateway.deps import ReaderDep, Runtime, RuntimeDep, StoreDep, SubmitterDep
from projections.gateway.errors import ApiError, ErrorBody
from projections.gateway.hub import KEEPALIVE
from projections.gateway.writes import actor, commit
from projections.views.workflows import read_changes, read_workflow
from taskfold.core.requests import InvalidRequest
from taskfold.workflows.spec import NAME_PATTERN, WorkflowSpec, graph_problems, node_of, workflow_events

router = APIRouter(tags=["workflows"])
WorkflowIdPath = Annotated[str, Path(min_length=1, max_length=200, pattern=NAME_PATTERN)]


class WorkflowNodeVerdict(BaseModel):
    """What the fold made of one node's submit."""

    node: str
    task_id: str
    queue: str
    position: str
    verdict: str
    reason: str | None = None


class WorkflowSubmitResult(BaseModel):
    """A submitted workflow: each node's verdict, and where to follow it."""

    workflow_id: str
    nodes: list[WorkflowNodeVerdict]
    url: str


class WorkflowNodeState(BaseModel):
    """One node of a workflow as the workflows view holds it; depends_on by node name."""

    node: str
    task_id: str
    queue: str
    task_type: str
    depends_on: list[str]
    state: str
    attempt: int
    agent_id: str | None
    submitted_at: int
    started_at: int | None
    finished_at: int | None
    reason: str | None
    error: str | None


class CriticalStep(BaseModel):
    """A node on the critical path: how long it waited once ready, and how long it ran."""

    node: str
    queue: str
    state: str
    waited_ms: int
    ran_ms: int


class CriticalPath(BaseModel):
    nodes: list[CriticalStep]
    total_ms: int | None


class WorkflowState(BaseModel):
    """A workflow: completed, failed (every node ended, not all completed), running or pending."""

    workflow_id: str
    state: str
    submitted_at: int
    finished_at: int | None
    node_count: int
    states: dict[str, int]
    nodes: list[WorkflowNodeState]
    critical_path: CriticalPath


@router.post("/v1/workflows", status_code=201, response_model=WorkflowSubmitResult, responses={
    200: {"model": WorkflowSubmitResult, "description": "every node was a duplicate: submitted before"},
    409: {"model": ErrorBody, "description": "a node differs from the one already submitted, or the fold rejected one"},
    422: {"model": ErrorBody, "description": "a field, a duplicate name, an unknown node reference or a cycle"},
    503: {"model": ErrorBody, "description": "appended, not yet applied"}})
async def submit_workflow(body: WorkflowSpec, principal: SubmitterDep, rt: RuntimeDep) -> JSONResponse:
    """Submit a workflow whole: every node becomes a task, in its own queue, waiting for its dependencies."""
    problems = graph_problems(body)
    if problems:
        raise ApiError(422, "invalid_workflow", "nothing was appended: " + "; ".join(r for _, r in problems), problems)
    try:
        events = workflow_events(body, actor=actor(principal))
    except InvalidRequest as exc:
        raise ApiError(422, "invalid_workflow", f"nothing was appended: {exc}", exc.problems) from None
    refuse_before_append(rt, [(e, True) for e in events])
    changes = await commit(rt, events)
    verdicts = [WorkflowNodeVerdict(node=node_of(e.task_id, e.correlation_id, e.idempotency_key) or e.task_id, task_id=e.task_id, queue=e.queue, position=c.position,
                                    verdict=c.verdict.outcome, reason=c.verdict.reason)
                for e, c in zip(events, changes, strict=True)]
    result = WorkflowSubmitResult(workflow_id=body.workflow_id, nodes=verdicts,
                                  url=f"/v1/workflows/{body.workflow_id}")
    return JSONResponse(result.model_dump(), status_code=_status(verdicts))


def _status(verdicts: Sequence[WorkflowNodeVerdict]) -> int:
    outcomes = {v.verdict for v in verdicts}
    if "rejected" in outcomes:
        return 409
    return 201 if "accepted" in outcomes else 200


@router.get("/v1/workflows/{workflow_id}", response_model=WorkflowState,
            responses={404: {"model": ErrorBody, "description": "unknown workflow"}})
async def get_workflow(workflow_id: WorkflowIdPath, principal: ReaderDep, store: StoreDep) -> dict[str, Any]:
    """A workflow's state, each node's state, and the critical path of what has finished."""
    found = read_workflow(store, workflow_id)
    if found is None:
        raise ApiError(404, "not_found", f"no workflow {workflow_id}")
    return found


def parse_cursor(text: str | None) -> dict[int, int]:
    """{partition: last delivered offset} of a `p:o,p:o` cursor; 400 when it is not one."""
    if not text:
        return {}
    try:
        pairs = [part.split(":") for part in text.split(",") if part]
        cursor = {int(p): int(o) for p, o in pairs}
    except ValueError:
        reason = f"not a workflow stream cursor (p:o,p:o,...): {text[:80]!r}"
        raise ApiError(400, "bad_last_event_id", reason, [("Last-Event-ID", reason)]) from None
    return cursor


def cursor_text(cursor: dict[int, int]) -> str:
    """The cursor as an SSE id."""
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


def unsent(rt: Runtime, workflow_id: str, cursor: dict[int, int]) -> list[dict[str, Any]]:
    """The stored node changes past the cursor, merged by time."""
    out = []
    for row in read_changes(rt.live.store, workflow_id):
        partition, offset = map(int, row["position"].split(":"))
        if offset > cursor.get(partition, -1):
            out.append(row)
    return out


class Wakeups:
    """Projector listener: wakes each stream of a workflow when a batch touched the workflow's tasks."""

    def __init__(self) -> None:
        self.waiting: dict[str, set[asyncio.Event]] = {}

    def watch(self, workflow_id: str) -> asyncio.Event:
        """A flag of one stream's own, set by every batch that touches the workflow."""
        flag = asyncio.Event()
        self.waiting.setdefault(workflow_id, set()).add(flag)
        return flag

    def release(self, workflow_id: str, flag: asyncio.Event) -> None:
        """The stream ended: forget its flag."""
        flags = self.waiting.get(workflow_id, set())
        flags.discard(flag)
        if not flags:
            self.waiting.pop(workflow_id, None)

    def __call__(self, items: Sequence[Any]) -> None:
        for item in items:
            for task in getattr(item, "tasks", ()):
                for flag in self.waiting.get(task.correlation_id or "", ()):
                    flag.set()


def wakeups(rt: Runtime) -> Wakeups:
    """The runtime's Wakeups, registered as a projector listener on first use."""
    found = rt.workflow_wakeups
    if found is None:
        found = rt.workflow_wakeups = Wakeups()
        projector = getattr(rt.live, "projector", None)
        if projector is not None:
            projector.listeners.append(found)
    return found


async def stream(rt: Runtime, workflow_id: str, cursor: dict[int, int], follow: bool,
                 heartbeat_s: float = 15.0) -> AsyncIterator[bytes]:
    """The SSE bytes: stored changes past the cursor, then each new batch's, until every node ended."""
    watch = wakeups(rt)
    flag = watch.watch(workflow_id)
    try:
        async for chunk in _frames(rt, workflow_id, cursor, follow, heartbeat_s, flag):
            yield chunk
    finally:
        watch.release(workflow_id, flag)


async def _frames(rt: Runtime, workflow_id: str, cursor: dict[int, int], follow: bool, heartbeat_s: float,
                  flag: asyncio.Event) -> AsyncIterator[bytes]:
    while True:
        flag.clear()  # before reading the store: a batch committed after the read sets it again
        for row in unsent(rt, workflow_id, cursor):
            partition, offset = map(int, row["position"].split(":"))
            cursor[partition] = max(offset, cursor.get(partition, -1))
            yield format_sse_event(data_str=json.dumps(row, separators=(",", ":")), event="node",
                                   id=cursor_text(cursor))
        found = read_workflow(rt.live.store, workflow_id)
        if found is not None and found["state"] in ("completed", "failed"):
            yield format_sse_event(data_str=json.dumps({"state": found["state"]}), event="end")
            return
        if not follow:
            return
        try:
            await asyncio.wait_for(flag.wait(), heartbeat_s)
        except TimeoutError:
            yield KEEPALIVE


@router.get("/v1/workflows/{workflow_id}/events", response_class=Response, responses={
    200: {"description": "a text/event-stream of node state changes; each id is a resumable cursor",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    400: {"model": ErrorBody, "description": "Last-Event-ID is not a cursor of a workflow stream"},
    404: {"model": ErrorBody, "description": "unknown workflow"}})
async def workflow_events_stream(
    workflow_id: WorkflowIdPath, principal: ReaderDep, rt: RuntimeDep,
    last_event_id: Annotated[str | None, Header(description="resume after this cursor")] = None,
    resume: Annotated[str | None, Query(alias="last_event_id", description="like the Last-Event-ID header")] = None,
    follow: Annotated[bool, Query(description="false: send what is stored, then end")] = True,
) -> Response:
    """Every node state change of a workflow (with its reason), from the start or the cursor."""
    if read_workflow(rt.live.store, workflow_id) is None:
        raise ApiError(404, "not_found", f"no workflow {workflow_id}")
    cursor = parse_cursor(last_event_id or resume)
    hub = rt.hub
    beat = hub.heartbeat_s if hub is not None else 15.0
    return EventSourceResponse(stream(rt, workflow_id, cursor, follow, beat),
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

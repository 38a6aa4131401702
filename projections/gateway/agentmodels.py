"""The request and response bodies of the HTTP-agent routes (`projections.gateway.agents_http`).

Kept apart from the routes so OpenAPI describes every field an agent in another language
sends and gets, and from the events themselves, which the routes build from these.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from projections.gateway.readmodels import Verdict
from projections.gateway.writes import Text
from taskfold.core.reports import MAX_ERROR_CHARS
from taskfold.core.events import QueueName
from taskfold.core.telemetry import ChunkKind

Slots = Annotated[int, Field(ge=1, le=10_000)]
Attempt = Annotated[int, Field(ge=1, le=2**31 - 1, description="the attempt this report is about (fencing token)")]


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


class AppendedEvent(BaseModel):
    """An event the gateway appended for the agent, and the fold's verdict on it."""

    queue: str
    position: str
    event_id: str
    verdict: Verdict


class MembershipOut(BaseModel):
    agent_id: str
    queues: list[AppendedEvent]


class ReportOut(AppendedEvent):
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

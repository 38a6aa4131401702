"""The response models of the read routes (`projections.gateway.reads`), kept apart from the
stored rows so OpenAPI at /docs describes every field a client gets."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from taskfold.core.events import Backoff, Priority
from taskfold.core.state import TaskState


class Timings(BaseModel):
    submitted_at: int
    queued_at: int | None = Field(description="when it first became ready to run")
    ready_at: int | None = Field(description="since when it has been waiting to be placed, if it is")
    first_assigned_at: int | None
    first_started_at: int | None
    finished_at: int | None
    queue_wait_ms: int = Field(description="ready to assigned, summed over attempts")
    run_time_ms: int = Field(description="started (or assigned) to the end, summed over attempts")
    attempts: int


class Chunks(BaseModel):
    chunks: int = Field(description="progress chunks streamed, all attempts")
    by_attempt: dict[str, int]
    last_position: str | None


class TaskOut(BaseModel):
    """A task as the fold sees it, with its timings."""

    task_id: str
    queue: str
    task_type: str
    priority: Priority
    state: TaskState
    payload: Any = None
    arrival: int = Field(description="its place in the queue's submissions")
    submitted_at: int
    timeout_ms: int
    max_attempts: int
    backoff: Backoff
    not_before: int | None
    due_at: int | None
    waiting_on: list[str]
    depends_on: list[str]
    session_id: str | None
    correlation_id: str | None
    concurrency_key: str | None
    concurrency_limit: int
    labels: dict[str, str]
    required_capabilities: list[str]
    idempotency_key: str | None
    attempt: int
    free_attempts: int
    lost_attempts: int = Field(0, description="attempts whose holder was lost: not charged to max_attempts")
    agent_id: str | None
    lease_ms: int | None
    assigned_at: int | None
    started_at: int | None
    finished_at: int | None
    cancel_requested: bool
    result: Any = None
    error: str | None
    reason: str | None
    timings: Timings | None = None
    position: str | None = Field(None, description="the last event that changed it (partition:offset)")
    updated_at: int | None = None
    chunks: Chunks | None = None
    as_of: int | None = Field(None, description="for an as_of read: the moment it answers for")


class TaskPage(BaseModel):
    tasks: list[TaskOut]
    next_cursor: str | None


class Verdict(BaseModel):
    """What the fold concluded about an event: accepted, duplicate (`ref`: the original) or rejected (`reason`)."""

    outcome: str
    reason: str | None
    ref: str | None


class HistoryRow(BaseModel):
    position: str
    partition: int
    offset: int
    event: dict[str, Any] = Field(description="the event's fields and its `type`")
    verdict: Verdict
    task: TaskOut | None = Field(description="the task right after this event")


class HistoryPage(BaseModel):
    task_id: str
    events: list[HistoryRow]
    next_cursor: str | None = Field(description="the last row's position: pass it as `cursor`")


class ResultOut(BaseModel):
    task_id: str
    queue: str
    state: TaskState
    result: Any = None
    error: str | None
    reason: str | None
    attempt: int
    finished_at: int | None


class Seat(BaseModel):
    agent_id: str
    queue: str
    slots: int
    active: bool
    capabilities: list[str]
    labels: dict[str, str]
    joined_at: int | None
    left_at: int | None
    load: int = Field(description="attempts it holds in this queue now")
    success_ewma: float | None
    latency_ewma_ms: float | None
    consecutive_failures: int
    quarantined_until: int | None
    probe_task: str | None
    quarantine_reason: str | None = Field(None, description="what tripped the circuit breaker, while it is open")
    completed: int
    failed: int


class Beat(BaseModel):
    agent_id: str
    sent_at: int
    queues: list[str]
    load: dict[str, int]
    slots: dict[str, int]
    draining: bool
    position: str


class AgentOut(BaseModel):
    agent_id: str
    queues: list[Seat]
    heartbeat: Beat | None
    active: bool
    slots: int
    load: int
    held_now: int
    held_ever: int
    attempts: int


class AgentList(BaseModel):
    agents: list[AgentOut]


class AgentTask(BaseModel):
    task_id: str
    queue: str
    task_state: str
    attempt: int | None = Field(None, description="held now: the attempt it holds")
    assigned_at: int | None = None
    first_attempt: int | None = None
    last_attempt: int | None = None
    attempts: int | None = None
    first_assigned_at: int | None = None
    outcome: str | None = Field(None, description="how its last attempt of the task ended")
    updated_at: int | None = None


class AgentTaskPage(BaseModel):
    tasks: list[AgentTask]
    next_cursor: str | None


class Waiting(BaseModel):
    task_id: str
    submitted_at: int
    priority: Priority
    state: TaskState


class QueueOut(BaseModel):
    queue: str
    states: dict[str, int] = Field(description="tasks per state now")
    waiting_by_priority: dict[str, int]
    depth: int = Field(description="tasks waiting to be placed")
    oldest_waiting: Waiting | None
    oldest_waiting_age_ms: int | None
    submitted: int
    completed: int
    failed: int = Field(description="attempts that failed, timed out or lost their lease")
    dead_lettered: int
    cancelled: int
    events: int
    accepted: int
    duplicate: int
    rejected: int
    first_event_at: int | None
    last_event_at: int | None
    last_position: str | None
    agents: list[Seat] | None = None


class QueueList(BaseModel):
    queues: list[QueueOut]


class Percentiles(BaseModel):
    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class Counts(BaseModel):
    submitted: int
    completed: int
    failed: int
    dead_lettered: int
    cancelled: int
    rejected: int


class Minute(Counts):
    minute: int = Field(description="start of the minute, epoch ms")


class TypeStats(BaseModel):
    queue_wait_ms: Percentiles
    run_time_ms: Percentiles


class Utilization(BaseModel):
    agent_id: str
    queue: str
    busy_ms: int
    slots: int
    utilization: float | None


class AnalyticsOut(BaseModel):
    queue: str | None
    minutes: int
    from_ms: int | None
    until_ms: int | None
    totals: Counts
    error_rate: float | None = Field(description="failed / (completed + failed) attempts")
    throughput: list[Minute]
    queue_wait_ms: Percentiles
    run_time_ms: Percentiles
    by_type: dict[str, TypeStats]
    agents: list[Utilization]


class Rejection(BaseModel):
    position: str
    partition: int
    offset: int
    event_type: str
    event_id: str
    queue: str
    task_id: str | None
    agent_id: str | None
    actor: str
    occurred_at: int
    reason: str | None


class RejectionPage(BaseModel):
    rejections: list[Rejection]
    next_cursor: str | None


class DeadLetter(BaseModel):
    task_id: str
    queue: str
    task_type: str
    priority: Priority
    reason: str | None
    error: str | None
    attempts: int
    lost_attempts: int = Field(0, description="attempts whose holder was lost (not charged)")
    max_attempts: int
    agent_id: str | None
    dead_lettered_at: int
    position: str


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetter]
    next_cursor: str | None

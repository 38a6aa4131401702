"""The event contract as pydantic models: one class per Avro schema in `schemas/avro/`.

Every event is an envelope (identity, queue, time, actor, causality) plus the fact it
records. `tests/unit/test_contract.py` keeps these classes equal to the `.avsc` files.
JSON values (payloads, results) travel as JSON text, so the contract stays one Avro type.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

QueueName = Annotated[str, Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._#:-]+$")]
# Avro int is 32-bit and long 64-bit: bounds here keep every valid event encodable.
INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
Millis = Annotated[int, Field(ge=0, le=LONG_MAX)]
Attempt = Annotated[int, Field(ge=1, le=INT_MAX)]


class Priority(str, Enum):
    """Scheduling priority; strict, highest first."""

    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low: smaller is served first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.critical: 0, Priority.high: 1, Priority.medium: 2, Priority.low: 3}


class DependencyOutcome(str, Enum):
    satisfied = "satisfied"
    failed = "failed"


class DependencyEnd(str, Enum):
    """The terminal state a dependency reached (relayed with its outcome)."""

    completed = "completed"
    dead_lettered = "dead_lettered"
    cancelled = "cancelled"


class DependencyFailurePolicy(str, Enum):
    """What a dependent does when a dependency is dead-lettered or cancelled."""

    cancel = "cancel"
    run = "run"


class LeaveReason(str, Enum):
    drained = "drained"
    lost = "lost"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Backoff(_Record):
    """Retry delay policy: initial * multiplier^(attempt-1), capped, with deterministic jitter."""

    initial_ms: Millis = 1000
    multiplier: Annotated[float, Field(ge=1.0, le=100.0)] = 2.0
    max_ms: Millis = 60_000
    jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2


class Candidate(_Record):
    """One agent the scheduler considered for an assignment, with its score."""

    agent_id: str
    score: Annotated[float, Field(allow_inf_nan=False)]
    load: Annotated[int, Field(ge=0, le=INT_MAX)] = 0
    slots: Annotated[int, Field(ge=0, le=INT_MAX)] = 0
    eligible: bool = True
    reason: str | None = None


class WorkflowNode(_Record):
    """One node of a workflow DAG; it becomes a task with id uuid5(workflow_id, node)."""

    node: Annotated[str, Field(min_length=1)]
    task_type: Annotated[str, Field(min_length=1)]
    priority: Priority = Priority.medium
    payload: str = "null"
    depends_on: list[str] = Field(default_factory=list)
    timeout_ms: Annotated[int, Field(gt=0, le=LONG_MAX)] = 300_000
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3

    @field_validator("payload")
    @classmethod
    def _payload_is_json(cls, value: str) -> str:
        return _require_json(value, "payload")


def _require_json(value: str, field: str) -> str:
    try:
        json.loads(value)
    except ValueError as exc:
        raise ValueError(f"{field} must be JSON text: {exc}") from None
    return value


class Event(_Record):
    """The envelope every event carries."""

    event_type: ClassVar[str]
    event_id: Annotated[str, Field(min_length=1)]
    queue: QueueName
    occurred_at: Millis
    actor: Annotated[str, Field(min_length=1)]
    causation_id: str | None = None
    correlation_id: str | None = None

    @property
    def task(self) -> str | None:
        """The task this event is about, if any (the `task` header)."""
        return getattr(self, "task_id", None)

    @property
    def agent(self) -> str | None:
        """The agent this event is about or from, if any (the `agent` header)."""
        return getattr(self, "agent_id", None)


class TaskSubmitted(Event):
    event_type: ClassVar[str] = "TaskSubmitted"
    task_id: Annotated[str, Field(min_length=1)]
    task_type: Annotated[str, Field(min_length=1)]
    priority: Priority = Priority.medium
    payload: str = "null"
    not_before: Millis | None = None
    timeout_ms: Annotated[int, Field(gt=0, le=LONG_MAX)] = 300_000
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3
    backoff: Backoff = Field(default_factory=Backoff)
    depends_on: list[str] = Field(default_factory=list)
    session_id: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=INT_MAX)] = 1
    labels: dict[str, str] = Field(default_factory=dict)
    required_capabilities: list[str] = Field(default_factory=list)
    idempotency_key: str | None = None
    on_dependency_failure: DependencyFailurePolicy = DependencyFailurePolicy.cancel
    dependencies_may_follow: bool = False

    @field_validator("payload")
    @classmethod
    def _payload_is_json(cls, value: str) -> str:
        return _require_json(value, "payload")


class DependencyResolved(Event):
    event_type: ClassVar[str] = "DependencyResolved"
    task_id: str
    dependency_id: str
    outcome: DependencyOutcome
    dependency_state: DependencyEnd | None = None


class TaskAssigned(Event):
    event_type: ClassVar[str] = "TaskAssigned"
    task_id: str
    attempt: Attempt
    agent_id: str
    lease_ms: Annotated[int, Field(gt=0, le=LONG_MAX)]
    strategy: str
    candidates: list[Candidate] = Field(default_factory=list)


class TaskStarted(Event):
    event_type: ClassVar[str] = "TaskStarted"
    task_id: str
    attempt: Attempt
    agent_id: str
    seen: Annotated[int, Field(ge=0)] | None = None  # v2: offset of the last record its agent had read


class TaskCompleted(Event):
    event_type: ClassVar[str] = "TaskCompleted"
    task_id: str
    attempt: Attempt
    agent_id: str
    result: str = "null"

    @field_validator("result")
    @classmethod
    def _result_is_json(cls, value: str) -> str:
        return _require_json(value, "result")


class TaskFailed(Event):
    event_type: ClassVar[str] = "TaskFailed"
    task_id: str
    attempt: Attempt
    agent_id: str
    error: str
    retryable: bool = True
    handed_back: bool = False  # v2: an unstarted attempt given back by its holder, uncharged


class TaskLeaseExpired(Event):
    event_type: ClassVar[str] = "TaskLeaseExpired"
    task_id: str
    attempt: Attempt
    agent_id: str


class TaskTimedOut(Event):
    event_type: ClassVar[str] = "TaskTimedOut"
    task_id: str
    attempt: Attempt
    agent_id: str


class TaskCancelRequested(Event):
    event_type: ClassVar[str] = "TaskCancelRequested"
    task_id: str
    reason: str | None = None


class TaskCancelled(Event):
    event_type: ClassVar[str] = "TaskCancelled"
    task_id: str
    attempt: Attempt
    agent_id: str


class TaskRedriven(Event):
    event_type: ClassVar[str] = "TaskRedriven"
    task_id: str
    extra_attempts: Annotated[int, Field(ge=1, le=1000)] = 1
    reason: str | None = None


class AgentJoined(Event):
    event_type: ClassVar[str] = "AgentJoined"
    agent_id: Annotated[str, Field(min_length=1)]
    slots: Annotated[int, Field(ge=1, le=10_000)]
    capabilities: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    prefetch: Annotated[int, Field(ge=0, le=10_000)] = 0  # v2: attempts held beyond slots, not yet started


class AgentLeft(Event):
    event_type: ClassVar[str] = "AgentLeft"
    agent_id: str
    reason: LeaveReason = LeaveReason.drained


class WorkflowSubmitted(Event):
    event_type: ClassVar[str] = "WorkflowSubmitted"
    workflow_id: Annotated[str, Field(min_length=1)]
    nodes: Annotated[list[WorkflowNode], Field(min_length=1)]


class MisfirePolicy(str, Enum):
    """What a schedule does with slots missed by more than its grace (downtime)."""

    skip = "skip"
    run_once = "run_once"


class ScheduleCreated(Event):
    """A recurring schedule: a cron expression (in a timezone) or an interval, and the task it submits."""

    event_type: ClassVar[str] = "ScheduleCreated"
    schedule_id: Annotated[str, Field(min_length=1)]
    cron: str | None = None
    timezone: str = "UTC"
    interval_ms: Annotated[int, Field(ge=1000, le=LONG_MAX)] | None = None
    start_at: Millis | None = None
    misfire: MisfirePolicy = MisfirePolicy.skip
    misfire_grace_ms: Millis = 60_000
    task_type: Annotated[str, Field(min_length=1)]
    priority: Priority = Priority.medium
    payload: str = "null"
    timeout_ms: Annotated[int, Field(gt=0, le=LONG_MAX)] = 300_000
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 3
    concurrency_key: str | None = None
    concurrency_limit: Annotated[int, Field(ge=1, le=INT_MAX)] = 1
    labels: dict[str, str] = Field(default_factory=dict)
    required_capabilities: list[str] = Field(default_factory=list)

    @field_validator("payload")
    @classmethod
    def _payload_is_json(cls, value: str) -> str:
        return _require_json(value, "payload")


class SchedulePaused(Event):
    event_type: ClassVar[str] = "SchedulePaused"
    schedule_id: Annotated[str, Field(min_length=1)]


class ScheduleResumed(Event):
    event_type: ClassVar[str] = "ScheduleResumed"
    schedule_id: Annotated[str, Field(min_length=1)]


class ScheduleDeleted(Event):
    event_type: ClassVar[str] = "ScheduleDeleted"
    schedule_id: Annotated[str, Field(min_length=1)]


ScheduleEvent = (ScheduleCreated, SchedulePaused, ScheduleResumed, ScheduleDeleted)


AnyEvent = Union[
    TaskSubmitted,
    DependencyResolved,
    TaskAssigned,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskTimedOut,
    TaskCancelRequested,
    TaskCancelled,
    TaskRedriven,
    AgentJoined,
    AgentLeft,
    WorkflowSubmitted,
    ScheduleCreated,
    SchedulePaused,
    ScheduleResumed,
    ScheduleDeleted,
]

EVENT_CLASSES: dict[str, type[Event]] = {
    cls.event_type: cls for cls in AnyEvent.__args__  # type: ignore[attr-defined]
}


class UnknownEventType(ValueError):
    """An event type name that is not part of the contract."""


def event_class(event_type: str) -> type[Event]:
    """The pydantic class for an event type name, or UnknownEventType naming it."""
    try:
        return EVENT_CLASSES[event_type]
    except KeyError:
        known = ", ".join(sorted(EVENT_CLASSES))
        raise UnknownEventType(f"unknown event type {event_type!r}; known types: {known}") from None

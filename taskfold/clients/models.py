"""Typed answers of the client, the same whichever transport produced them."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfold.core.state import Member, Task, TaskState, Verdict
from taskfold.core.foldrows import plain


class _Answer(BaseModel):
    # Ignore what a newer gateway adds, so an older client keeps working.
    model_config = ConfigDict(frozen=True, extra="ignore")


class TaskView(_Answer):
    """A task as the fold sees it; payload and result are JSON values."""

    task_id: str
    queue: str
    task_type: str
    state: TaskState
    priority: str
    payload: Any = None
    result: Any = None
    error: str | None = None
    reason: str | None = None
    attempt: int = 0
    max_attempts: int = 0
    agent_id: str | None = None
    submitted_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    depends_on: list[str] = Field(default_factory=list)
    waiting_on: list[str] = Field(default_factory=list)
    idempotency_key: str | None = None
    correlation_id: str | None = None
    session_id: str | None = None
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        """True once the task is completed, dead-lettered or cancelled."""
        return self.state.terminal

    @classmethod
    def of_task(cls, task: Task) -> TaskView:
        """The view of a folded task."""
        body = {f.name: plain(getattr(task, f.name)) for f in fields(task)}
        body["payload"] = _json(task.payload)
        body["result"] = _json(task.result)
        return cls.model_validate(body)


class VerdictView(_Answer):
    """The fold's verdict on one event."""

    outcome: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    ref: str | None = None

    @classmethod
    def of(cls, verdict: Verdict) -> VerdictView:
        return cls(outcome=verdict.outcome, reason=verdict.reason, ref=verdict.ref)


class Receipt(_Answer):
    """A write's outcome: where its event landed, the verdict, and the task with it applied.

    `duplicate` is True when an idempotent retry found the original: `task` is then that
    original task.
    """

    task: TaskView | None
    position: str
    event_id: str
    verdict: str
    duplicate: bool = False
    reason: str | None = None

    @property
    def task_id(self) -> str | None:
        return self.task.task_id if self.task is not None else None


class StreamItem(_Answer):
    """One message of a task's stream: an event with its verdict, a progress chunk, or the end.

    `cursor` resumes the stream right after this item (`stream(task_id, after=cursor)`),
    on either transport.
    """

    kind: Literal["event", "progress", "end"]
    cursor: str | None = None
    event_type: str | None = None
    event: dict[str, Any] | None = None
    verdict: VerdictView | None = None
    chunk: dict[str, Any] | None = None
    state: TaskState | None = Field(None, description="the end: the terminal state")


class SeatView(_Answer):
    """An agent's seat in one queue."""

    queue: str
    slots: int
    active: bool
    load: int = 0


class AgentView(_Answer):
    """An agent: its seats per queue, and its last heartbeat (epoch ms) when known."""

    agent_id: str
    seats: list[SeatView] = Field(default_factory=list)
    last_heartbeat_at: int | None = None
    draining: bool = False

    @property
    def active(self) -> bool:
        return any(seat.active for seat in self.seats)

    @property
    def slots(self) -> int:
        return sum(seat.slots for seat in self.seats if seat.active)

    @property
    def load(self) -> int:
        return sum(seat.load for seat in self.seats)


class QueueView(_Answer):
    """A queue now: tasks per state, how many wait to be placed, its agents' slots and load."""

    queue: str
    states: dict[str, int] = Field(default_factory=dict)
    depth: int = 0
    oldest_waiting_age_ms: int | None = None
    agents: int = 0
    slots: int = 0
    load: int = 0

    def count(self, state: str) -> int:
        """Tasks in that state."""
        return self.states.get(state, 0)


def seat_of(queue: str, member: Member) -> SeatView:
    """The view of an agent's folded seat."""
    return SeatView(queue=queue, slots=member.slots, active=member.active, load=len(member.holding))



def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class WorkflowNodeReceipt(_Answer):
    """What the fold made of one workflow node's submit."""

    node: str
    task_id: str
    queue: str
    position: str
    verdict: str
    reason: str | None = None


class WorkflowReceipt(_Answer):
    """A submitted workflow: each node's verdict, in the order the nodes were appended."""

    workflow_id: str
    nodes: list[WorkflowNodeReceipt]

    def task_id(self, node: str) -> str:
        """The task id of a node (KeyError for a name the workflow does not have)."""
        for found in self.nodes:
            if found.node == node:
                return found.task_id
        raise KeyError(node)

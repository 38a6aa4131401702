"""Event builders for tests, fault scenarios and benchmarks: terse, deterministic events."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

from taskfold.core.events import (
    AgentJoined,
    AgentLeft,
    DependencyResolved,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskRedriven,
    TaskStarted,
    TaskSubmitted,
    TaskTimedOut,
)

_NAMESPACE = uuid.UUID("0b9f7c56-41a2-4f0e-b3c1-5e8a2d7f9c30")


@dataclass
class Events:
    """Makes events of one queue with sequential ids and a clock that ticks 1 ms per event."""

    queue: str = "q"
    now: int = 1_000
    seed: str = "t"
    _counter: itertools.count = field(default_factory=itertools.count)

    def _envelope(self, at: int | None) -> dict:
        if at is None:
            self.now += 1
            at = self.now
        event_id = str(uuid.uuid5(_NAMESPACE, f"{self.seed}/{next(self._counter)}"))
        return {"event_id": event_id, "queue": self.queue, "occurred_at": at, "actor": "test"}

    def submit(self, task: str, at: int | None = None, **fields) -> TaskSubmitted:
        fields.setdefault("task_type", "echo")
        return TaskSubmitted(**self._envelope(at), task_id=task, **fields)

    def join(self, agent: str, slots: int = 1, at: int | None = None, **fields) -> AgentJoined:
        return AgentJoined(**self._envelope(at), agent_id=agent, slots=slots, **fields)

    def leave(self, agent: str, reason: str = "drained", at: int | None = None) -> AgentLeft:
        return AgentLeft(**self._envelope(at), agent_id=agent, reason=reason)

    def assign(self, task: str, agent: str, attempt: int = 1, at: int | None = None, **fields) -> TaskAssigned:
        fields.setdefault("lease_ms", 30_000)
        fields.setdefault("strategy", "least_loaded")
        return TaskAssigned(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt, **fields)

    def start(self, task: str, agent: str, attempt: int = 1, at: int | None = None) -> TaskStarted:
        return TaskStarted(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt)

    def complete(self, task: str, agent: str, attempt: int = 1, result: str = "null", at: int | None = None) -> TaskCompleted:
        return TaskCompleted(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt, result=result)

    def fail(self, task: str, agent: str, attempt: int = 1, retryable: bool = True, error: str = "boom",
             at: int | None = None) -> TaskFailed:
        return TaskFailed(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt,
                          error=error, retryable=retryable)

    def expire(self, task: str, agent: str, attempt: int = 1, at: int | None = None) -> TaskLeaseExpired:
        return TaskLeaseExpired(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt)

    def time_out(self, task: str, agent: str, attempt: int = 1, at: int | None = None) -> TaskTimedOut:
        return TaskTimedOut(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt)

    def cancel(self, task: str, reason: str | None = None, at: int | None = None) -> TaskCancelRequested:
        return TaskCancelRequested(**self._envelope(at), task_id=task, reason=reason)

    def cancelled(self, task: str, agent: str, attempt: int = 1, at: int | None = None) -> TaskCancelled:
        return TaskCancelled(**self._envelope(at), task_id=task, agent_id=agent, attempt=attempt)

    def redrive(self, task: str, extra_attempts: int = 1, at: int | None = None) -> TaskRedriven:
        return TaskRedriven(**self._envelope(at), task_id=task, extra_attempts=extra_attempts)

    def resolved(self, task: str, dependency: str, outcome: str = "satisfied", at: int | None = None,
                 **fields) -> DependencyResolved:
        return DependencyResolved(**self._envelope(at), task_id=task, dependency_id=dependency, outcome=outcome,
                                  **fields)

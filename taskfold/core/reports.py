"""What an agent appends, through the SDK or the gateway, built from what it knows: reports, membership, telemetry.

Reports about an attempt get ids derived from the attempt (`queue/task/attempt`) and the
step, so a report sent again (after a retry or a restart) folds as a duplicate
(ARCHITECTURE §1). Joins and leaves get fresh ids: each run of an agent is a new
membership decision.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from taskfold.core.edge import now_ms
from taskfold.core.events import (
    AgentJoined, AgentLeft, Event, LeaveReason, TaskCancelled, TaskCompleted, TaskFailed, TaskStarted,
)
from taskfold.core.policies import derived_event_id
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk

# The index of each report in derived_event_id(attempt, index). An attempt ends with
# one outcome (completed or failed); TaskCancelled has its own index because it can
# follow a completion the fold rejected.
STARTED, OUTCOME, CANCELLED = 0, 1, 2
MAX_ERROR_CHARS = 4000  # a runaway exception message must not make a huge event


@dataclass(frozen=True, slots=True, order=True)
class AttemptKey:
    """One attempt of one task in one queue: what the fencing token names."""

    queue: str
    task_id: str
    attempt: int

    def __str__(self) -> str:
        return f"{self.queue}/{self.task_id}/{self.attempt}"


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended locally; `revoked` means the log took it away, so nothing is reported."""

    kind: Literal["completed", "failed", "cancelled", "revoked"]
    result: str = "null"
    error: str | None = None
    retryable: bool = True


def report_id(key: AttemptKey, step: int) -> str:
    """The derived event id of report `step` (STARTED, OUTCOME, CANCELLED) about an attempt."""
    # "/report" keeps these ids apart from the scheduler's ids for the same attempt
    # (TaskAssigned, TaskLeaseExpired, TaskTimedOut use the bare attempt key).
    return derived_event_id(f"{key}/report", step)


def chunk_id(key: AttemptKey, seq: int) -> str:
    """The derived id of the seq-th progress chunk of an attempt."""
    return derived_event_id(f"{key}/progress", seq)


def result_text(value: Any) -> str:
    """A handler's return value as JSON text; TypeError or ValueError if it is not JSON."""
    return json.dumps(value, allow_nan=False)


def error_text(exc: BaseException) -> str:
    """`Type: message` of an exception, clipped to MAX_ERROR_CHARS."""
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class Reporter:
    """Builds the events and records of one agent, stamped with its id, actor and clock."""

    def __init__(self, agent_id: str, actor: str | None = None, clock: Callable[[], int] = now_ms) -> None:
        self.agent_id = agent_id
        self.actor = actor or f"agent:{agent_id}"
        self.clock = clock

    def _envelope(self, queue: str, event_id: str, correlation_id: str | None = None) -> dict[str, Any]:
        return {"event_id": event_id, "queue": queue, "occurred_at": self.clock(), "actor": self.actor,
                "correlation_id": correlation_id}

    def _attempt(self, key: AttemptKey, step: int, correlation_id: str | None) -> dict[str, Any]:
        return {**self._envelope(key.queue, report_id(key, step), correlation_id),
                "task_id": key.task_id, "attempt": key.attempt, "agent_id": self.agent_id}

    def started(self, key: AttemptKey, correlation_id: str | None = None, seen: int | None = None) -> TaskStarted:
        """TaskStarted for an attempt this agent holds; `seen`: the offset of the last record
        of the queue's partition the agent had read when it chose to start it."""
        return TaskStarted(**self._attempt(key, STARTED, correlation_id), seen=seen)

    def outcome(self, key: AttemptKey, outcome: AttemptEnd, correlation_id: str | None = None) -> Event | None:
        """The report that ends an attempt (completed, failed or cancelled); None when revoked."""
        if outcome.kind == "completed":
            return TaskCompleted(**self._attempt(key, OUTCOME, correlation_id), result=outcome.result)
        if outcome.kind == "failed":
            return TaskFailed(**self._attempt(key, OUTCOME, correlation_id),
                              error=outcome.error or "failed", retryable=outcome.retryable)
        if outcome.kind == "cancelled":
            return self.cancelled(key, correlation_id)
        return None

    def cancelled(self, key: AttemptKey, correlation_id: str | None = None) -> TaskCancelled:
        """TaskCancelled: the agent stopped an attempt whose cancel was requested."""
        return TaskCancelled(**self._attempt(key, CANCELLED, correlation_id))

    def joined(self, queue: str, slots: int, capabilities: Iterable[str], labels: Mapping[str, str],
               prefetch: int = 0) -> AgentJoined:
        """AgentJoined for one queue, with that queue's slots and prefetch depth."""
        return AgentJoined(**self._envelope(queue, str(uuid.uuid4())), agent_id=self.agent_id, slots=slots,
                           capabilities=sorted(set(capabilities)), labels=dict(labels), prefetch=prefetch)

    def handed_back(self, key: AttemptKey, correlation_id: str | None = None) -> TaskFailed:
        """TaskFailed(handed_back) for an attempt this agent holds and never started: not charged."""
        return TaskFailed(**self._attempt(key, OUTCOME, correlation_id), error="agent draining: unstarted attempt "
                          "handed back", retryable=True, handed_back=True)

    def left(self, queue: str, reason: LeaveReason = LeaveReason.drained) -> AgentLeft:
        """AgentLeft for one queue."""
        return AgentLeft(**self._envelope(queue, str(uuid.uuid4())), agent_id=self.agent_id, reason=reason)

    def heartbeat(self, slots: Mapping[str, int], load: Mapping[str, int], draining: bool) -> Heartbeat:
        """A heartbeat with the agent's slots and load per queue."""
        return Heartbeat(agent_id=self.agent_id, queues=sorted(slots), sent_at=self.clock(),
                         load={q: load.get(q, 0) for q in sorted(slots)}, slots=dict(sorted(slots.items())),
                         draining=draining)

    def chunk(self, key: AttemptKey, seq: int, kind: ChunkKind | str, content: str) -> ProgressChunk:
        """The seq-th progress chunk of an attempt."""
        return ProgressChunk(chunk_id=chunk_id(key, seq), task_id=key.task_id, attempt=key.attempt,
                             agent_id=self.agent_id, queue=key.queue, seq=seq, kind=ChunkKind(kind),
                             content=content, occurred_at=self.clock())

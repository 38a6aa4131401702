"""The JSON shapes the views store and the API returns: tasks, events, verdicts, and keys.

Built by hand rather than through `dataclasses.asdict` or `foldrows`: they run several times
for every event of a million-event rebuild. A task's `event_ids` are left out (they only
serve the fold's duplicate check and grow with every event).
"""

from __future__ import annotations

from typing import Any

from taskfold.core.events import Event
from taskfold.core.state import Task, Verdict

SEP = "\x00"  # queue names cannot hold it (QueueName pattern); keys join their parts with it


def join(*parts: object) -> str:
    """A key made of parts."""
    return SEP.join(map(str, parts))


def task_key(task_id: str, queue: str) -> str:
    """The key of a task's row: task ids are unique per queue, not across queues."""
    return f"{task_id}{SEP}{queue}"


def arrival_key(arrival: int) -> str:
    """A task's arrival number (its place in its queue) as a sortable key part."""
    return f"{arrival:012d}"


def task_json(task: Task) -> dict[str, Any]:
    """A task as stored and served: every field of the fold's Task but its event ids."""
    backoff = task.backoff
    return {
        "task_id": task.task_id, "queue": task.queue, "task_type": task.task_type,
        "priority": task.priority.value, "state": task.state.value, "payload": task.payload,
        "arrival": task.arrival, "submitted_at": task.submitted_at, "timeout_ms": task.timeout_ms,
        "max_attempts": task.max_attempts,
        "backoff": {"initial_ms": backoff.initial_ms, "multiplier": backoff.multiplier,
                    "max_ms": backoff.max_ms, "jitter": backoff.jitter},
        "not_before": task.not_before, "due_at": task.due_at,
        "waiting_on": sorted(task.waiting_on), "depends_on": list(task.depends_on),
        "session_id": task.session_id, "correlation_id": task.correlation_id,
        "concurrency_key": task.concurrency_key, "concurrency_limit": task.concurrency_limit,
        "labels": dict(task.labels), "required_capabilities": sorted(task.required_capabilities),
        "idempotency_key": task.idempotency_key, "attempt": task.attempt, "free_attempts": task.free_attempts,
        "lost_attempts": task.lost_attempts,
        "agent_id": task.agent_id, "lease_ms": task.lease_ms, "assigned_at": task.assigned_at,
        "started_at": task.started_at, "finished_at": task.finished_at,
        "cancel_requested": task.cancel_requested, "result": task.result, "error": task.error,
        "reason": task.reason,
    }


FOLD_FIELDS = (
    "task_id", "queue", "task_type", "priority", "state", "payload", "arrival", "submitted_at", "timeout_ms",
    "max_attempts", "backoff", "not_before", "due_at", "waiting_on", "depends_on", "session_id",
    "correlation_id", "concurrency_key", "concurrency_limit", "labels", "required_capabilities",
    "idempotency_key", "attempt", "free_attempts", "lost_attempts", "agent_id", "lease_ms", "assigned_at", "started_at",
    "finished_at", "cancel_requested", "result", "error", "reason",
)


def fold_part(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of a stored task row that come from the fold (what `task_json` wrote)."""
    return {name: row[name] for name in FOLD_FIELDS}


def event_json(event: Event) -> dict[str, Any]:
    """An event as stored in history and sent in streams: its type, then its fields."""
    return {"type": event.event_type, **event.model_dump(mode="json")}


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """A verdict as JSON."""
    return {"outcome": verdict.outcome, "reason": verdict.reason, "ref": verdict.ref}

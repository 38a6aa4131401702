"""Pure policies the fold and the scheduler share: retry delays, derived ids, due times."""

from __future__ import annotations

import uuid
from hashlib import blake2b

from taskfold.core.events import Backoff
from taskfold.core.state import Task, TaskState

# Fixed namespace so workflow task ids are the same on every machine, forever.
WORKFLOW_NAMESPACE = uuid.UUID("6f1c3f2e-8a43-5d0b-9a7e-2f4f3c1d7b10")


def jitter_fraction(task_id: str, attempt: int) -> float:
    """A deterministic number in [0, 1) drawn from the task id and the attempt."""
    digest = blake2b(f"{task_id}\x00{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def retry_delay_ms(policy: Backoff, attempt: int, task_id: str) -> int:
    """Delay before the retry that follows failed `attempt`: exponential, capped, jittered down."""
    base = float(policy.initial_ms)
    for _ in range(max(0, attempt - 1)):
        # Multiply step by step so a large attempt caps instead of overflowing a float.
        base *= policy.multiplier
        if base >= policy.max_ms:
            break
    base = min(base, float(policy.max_ms))
    return int(base * (1.0 - policy.jitter * jitter_fraction(task_id, attempt)))


def workflow_task_id(workflow_id: str, node: str) -> str:
    """The task id of a workflow node: uuid5(uuid5(namespace, workflow_id), node)."""
    return str(uuid.uuid5(uuid.uuid5(WORKFLOW_NAMESPACE, workflow_id), node))


def derived_event_id(cause_event_id: str, index: int = 0) -> str:
    """The id of the index-th event a processor appends because of `cause_event_id`."""
    return str(uuid.uuid5(WORKFLOW_NAMESPACE, f"{cause_event_id}/{index}"))


def is_due(task: Task, now_ms: int) -> bool:
    """True when a waiting task may be assigned at `now_ms`."""
    if task.state == TaskState.queued:
        return True
    if task.state in (TaskState.scheduled, TaskState.retry_wait):
        return task.due_at is None or task.due_at <= now_ms
    return False

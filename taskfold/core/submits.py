"""What a submitter is told before and after a TaskSubmitted lands, the same in the gateway and the CLI.

Two checks, both pure (no I/O): whether a submit that reuses an idempotency key asks
for the same task as the one that first used it, and which dependencies name no known
task.

"The same request" means the same submitted fields: task_type, payload (compared as
JSON values, so spacing and key order do not matter), priority, not_before, timeout_ms,
max_attempts, backoff, depends_on (as a set), session_id, correlation_id,
concurrency_key, concurrency_limit, labels, required_capabilities, and the dependency
options; task_id only when the request gives one. What is generated or says who and
when (event_id, occurred_at, actor, a task_id left to default) never makes two requests
differ. The key is scoped to its queue, as the fold's idempotency index is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from taskfold.core.events import TaskSubmitted
from taskfold.core.state import Task

COMPARED = ("task_type", "payload", "priority", "not_before", "timeout_ms", "max_attempts", "backoff", "depends_on",
            "session_id", "correlation_id", "concurrency_key", "concurrency_limit", "labels",
            "required_capabilities", "on_dependency_failure", "dependencies_may_follow")


def _submitted(event: TaskSubmitted, name: str) -> Any:
    value = getattr(event, name)
    if name == "payload":
        return json.loads(value)
    if name == "depends_on" or name == "required_capabilities":
        return frozenset(value)
    if name == "labels":
        return tuple(sorted(value.items()))
    return value


def _kept(task: Task | TaskSubmitted, name: str, event: TaskSubmitted) -> Any:
    if isinstance(task, TaskSubmitted):
        return _submitted(task, name)
    if name == "payload":
        return json.loads(task.payload)
    if name == "depends_on":
        return frozenset(task.depends_on)
    if not hasattr(task, name):
        # A field the folded task does not keep (yet) cannot tell two requests apart.
        return _submitted(event, name)
    return getattr(task, name)


def request_differences(event: TaskSubmitted, original: Task | TaskSubmitted, *, task_id_given: bool) -> list[str]:
    """The submitted fields in which `event` differs from the task (or the submit) that first used its key."""
    differ = [name for name in COMPARED if _submitted(event, name) != _kept(original, name, event)]
    if task_id_given and event.task_id != original.task_id:
        differ.insert(0, "task_id")
    return differ


def conflict_reason(key: str, original: str, differences: Iterable[str]) -> str:
    """The one sentence a conflicting reuse of an idempotency key is answered with."""
    return (f"idempotency key {key!r} was already used by task {original} for a different request "
            f"({', '.join(differences)} differ)")


def duplicate_reason(key: str, original: str) -> str:
    """What a retry with the same key and the same request is told."""
    return f"idempotency key {key!r} was already used by task {original}"


def unknown_dependencies(depends_on: Iterable[str], known: Callable[[str], bool]) -> list[str]:
    """The dependency ids for which `known(id)` is false, sorted, each once."""
    return sorted({dependency for dependency in depends_on if not known(dependency)})


def unknown_reason(unknown: Iterable[str]) -> str:
    """Why a submit naming unknown dependencies is refused, and how to say they may come later."""
    names = ", ".join(unknown)
    return (f"unknown task id(s) {names}: no queue has such a task; submit them first, or declare "
            "dependencies_may_follow")

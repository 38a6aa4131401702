"""Hard size limits the fold applies to what a task carries, the same for every reader.

Our writers refuse a payload over `TASKFOLD_MAX_PAYLOAD_BYTES` before appending it. A
writer we do not control can still append a bigger record, as large as the broker takes.
The fold cannot read that setting (it differs between processes, and a verdict must not),
so it rejects a submit over these fixed constants instead. The setting may not exceed
PAYLOAD_HARD_MAX_BYTES, so nothing our writers accept is rejected here.

The second bound keeps every task row a processor persists small: a task row holds all
of a submit's scheduling fields (ids, labels, capabilities, dependencies), and the
scheduler writes each row as one changelog record.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskfold.core.events import TaskSubmitted, WorkflowSubmitted

PAYLOAD_HARD_MAX_BYTES = 786_432  # 768 KiB of JSON text: a whole TaskSubmitted stays under 1 MB records
FIELDS_HARD_MAX_BYTES = 65_536  # every other string a submit gives its task, together


def text_bytes(text: str | None) -> int:
    """Bytes of a text in UTF-8 (what the log stores); 0 for None."""
    if text is None:
        return 0
    return len(text.encode("utf-8", "surrogatepass")) if not text.isascii() else len(text)


def over(field: str, size: int, limit: int, name: str) -> str:
    """`<field> is 921,600 bytes, over the limit of 524,288 (<name>)`."""
    return f"{field} is {size:,} bytes, over the limit of {limit:,} ({name})"


def _strings(event: TaskSubmitted) -> Iterable[str | None]:
    yield from (event.task_id, event.task_type, event.session_id, event.correlation_id,
                event.concurrency_key, event.idempotency_key)
    yield from event.depends_on
    yield from event.required_capabilities
    for label, value in event.labels.items():
        yield label
        yield value


# A character is at most 4 bytes of UTF-8 (a lone surrogate, passed through, is 3).
MAX_BYTES_PER_CHAR = 4


def _chars(event: TaskSubmitted) -> int:
    """Characters in the strings `_strings` yields, counted without encoding them."""
    named = (event.task_id, event.task_type, event.session_id, event.correlation_id,
             event.concurrency_key, event.idempotency_key)
    labels = event.labels
    return (sum(map(len, filter(None, named))) + sum(map(len, event.depends_on))
            + sum(map(len, event.required_capabilities)) + sum(map(len, labels)) + sum(map(len, labels.values())))


def submit_problem(event: TaskSubmitted) -> str | None:
    """Why a submit is too large to admit, or None."""
    size = text_bytes(event.payload)
    if size > PAYLOAD_HARD_MAX_BYTES:
        return over("payload", size, PAYLOAD_HARD_MAX_BYTES, "the fold's hard maximum")
    if _chars(event) * MAX_BYTES_PER_CHAR <= FIELDS_HARD_MAX_BYTES:
        return None  # under the limit whatever the characters: no need to count bytes
    fields = sum(text_bytes(s) for s in _strings(event))
    if fields > FIELDS_HARD_MAX_BYTES:
        return over("the sum of the task's ids, labels, capabilities and dependencies", fields, FIELDS_HARD_MAX_BYTES,
                    "the fold's hard maximum")
    return None


def workflow_problem(event: WorkflowSubmitted) -> str | None:
    """Why a workflow has a node too large to admit, or None (node fields are checked like a submit's)."""
    for node in event.nodes:
        size = text_bytes(node.payload)
        if size > PAYLOAD_HARD_MAX_BYTES:
            return f"node {node.node}: " + over("payload", size, PAYLOAD_HARD_MAX_BYTES, "the fold's hard maximum")
        fields = text_bytes(node.node) + text_bytes(node.task_type) + sum(text_bytes(d) for d in node.depends_on)
        if fields > FIELDS_HARD_MAX_BYTES:
            return f"node {node.node[:64]}: " + over("the sum of its name, type and dependencies", fields,
                                                    FIELDS_HARD_MAX_BYTES, "the fold's hard maximum")
    return None

"""`AsyncClient`: submit, read, wait for, cancel, redrive and stream tasks, over Kafka or HTTP.

    async with AsyncClient.kafka() as client:          # TASKFOLD_BOOTSTRAP or `taskfold dev`
        receipt = await client.submit("emails", "send", payload={"to": "ada@example.com"})
        task = await client.wait(receipt.task_id, timeout=30)

Requests are validated here, before either transport sees them: a bad field is `Refused`
naming it, and nothing is appended.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from taskfold.core.requests import InvalidRequest, submission
from taskfold.core.events import TaskSubmitted
from taskfold.workflows.spec import WorkflowSpec, graph_problems, parse_spec, workflow_events

from taskfold.clients.errors import Refused
from taskfold.clients.models import AgentView, QueueView, Receipt, StreamItem, TaskView, WorkflowReceipt
from taskfold.clients.transport import Transport


class AsyncClient:
    """The taskfold client for asyncio code; see `Client` for blocking code."""

    def __init__(self, transport: Transport, *, actor: str | None = None) -> None:
        self.transport = transport
        self.actor = actor  # recorded on the events this client appends (Kafka; the gateway records its token)
        self._started = False

    @classmethod
    def kafka(cls, bootstrap: str | None = None, *, actor: str | None = None, **options: Any) -> AsyncClient:
        """A client that appends to the log itself: `bootstrap`, else TASKFOLD_BOOTSTRAP, else `taskfold dev`."""
        from taskfold.clients.kafka import KafkaTransport

        return cls(KafkaTransport(bootstrap, **options), actor=actor)

    @classmethod
    def http(cls, url: str, token: str | None = None, **options: Any) -> AsyncClient:
        """A client of the gateway at `url`, with its bearer token."""
        from taskfold.clients.http import HttpTransport

        return cls(HttpTransport(url, token, **options))

    async def start(self) -> AsyncClient:
        """Connect (the `async with` block does this)."""
        if not self._started:
            await self.transport.start()
            self._started = True
        return self

    async def close(self) -> None:
        """Disconnect."""
        if self._started:
            self._started = False
            await self.transport.close()

    async def __aenter__(self) -> AsyncClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # writes

    async def submit(self, queue: str, task_type: str, payload: Any = None, **options: Any) -> Receipt:
        """Submit one task; the Receipt has the fold's verdict (an idempotent retry: `duplicate`, the original).

        Options are TaskSubmitted's fields: task_id, priority, timeout_ms, max_attempts,
        not_before, backoff, depends_on, on_dependency_failure, dependencies_may_follow,
        session_id, correlation_id, concurrency_key, concurrency_limit, labels,
        required_capabilities, idempotency_key. Raises Refused (naming the fields),
        Duplicate (the task id is taken, or the key was used for another request).
        """
        (outcome,) = await self.submit_many([{"queue": queue, "task_type": task_type, "payload": payload,
                                              **options}])
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    async def submit_many(self, tasks: Iterable[Mapping[str, Any]]) -> list[Receipt | Refused]:
        """Submit several tasks in one append; per task, its Receipt or the error it met.

        Each mapping has queue, task_type, payload and any option of `submit`. Every task is
        validated first: one bad field refuses the whole batch (Refused naming `tasks.<i>.<field>`)
        and nothing is appended.
        """
        items = _validated(list(tasks), self.actor)
        await self.start()
        return await self.transport.submit(items)

    async def submit_workflow(self, spec: WorkflowSpec | Mapping[str, Any]) -> WorkflowReceipt:
        """Submit a workflow whole (the spec of `taskfold workflow submit`); each node's verdict.

        Cycles, unknown node references, duplicate names and bad fields are Refused naming
        the nodes, before anything is appended. Submitting the same workflow again is
        harmless: its nodes fold as duplicates.
        """
        checked, events = _workflow(spec, self.actor)
        await self.start()
        return await self.transport.submit_workflow(checked, events)

    async def cancel(self, task_id: str, *, reason: str | None = None, queue: str | None = None) -> Receipt:
        """Ask for the task to be cancelled; NotFound, or Refused with the fold's reason (already finished)."""
        await self.start()
        return await self.transport.cancel(task_id, queue, reason, self.actor)

    async def redrive(self, task_id: str, *, extra_attempts: int = 1, reason: str | None = None,
                      queue: str | None = None) -> Receipt:
        """Put a dead-lettered task back in its queue with more attempts; Refused if it is not dead-lettered."""
        if not 1 <= extra_attempts <= 1000:
            raise Refused("extra_attempts must be from 1 to 1000", [("extra_attempts", "must be from 1 to 1000")])
        await self.start()
        return await self.transport.redrive(task_id, queue, extra_attempts, reason, self.actor)

    # reads

    async def get(self, task_id: str, *, queue: str | None = None) -> TaskView:
        """The task now; NotFound if no queue has it."""
        await self.start()
        return await self.transport.get(task_id, queue)

    async def wait(self, task_id: str, *, timeout: float | None = None, queue: str | None = None) -> TaskView:
        """The task once it is completed, dead-lettered or cancelled; TimedOut after `timeout` seconds."""
        if timeout is not None and timeout < 0:
            raise Refused("timeout must be 0 or more seconds", [("timeout", "must be 0 or more")])
        await self.start()
        return await self.transport.wait(task_id, queue, timeout)

    async def stream(self, task_id: str, *, after: str | None = None, follow: bool = True,
                     queue: str | None = None) -> AsyncIterator[StreamItem]:
        """The task's events (with verdicts) and progress chunks, from its first event or after `after`.

        Each item's `cursor` resumes right after it. Following, the stream ends with an
        item of kind `end` once the task is terminal; with follow=False it ends at the log's end.
        """
        await self.start()
        async for item in self.transport.stream(task_id, queue, after, follow):
            yield item

    async def queues(self) -> list[QueueView]:
        """Every queue: tasks per state, how many wait, its agents' slots and load."""
        await self.start()
        return await self.transport.queues()

    async def agents(self) -> list[AgentView]:
        """Every agent: its seats per queue and its last heartbeat."""
        await self.start()
        return await self.transport.agents()


def _validated(tasks: list[Mapping[str, Any]], actor: str | None) -> list[tuple[TaskSubmitted, bool]]:
    """(event, task id given) per task; Refused naming every bad field, before anything is appended."""
    if not tasks:
        raise Refused("no tasks to submit", [("tasks", "give at least one task")])
    items, problems = [], []
    for index, spec in enumerate(tasks):
        prefix = f"tasks.{index}." if len(tasks) > 1 else ""
        try:
            items.append((_submission(spec, actor), spec.get("task_id") is not None))
        except InvalidRequest as exc:
            problems += [(prefix + field, reason) for field, reason in exc.problems]
    if problems:
        fields = ", ".join(sorted({field for field, _ in problems}))
        raise Refused(f"not valid: {fields}; nothing was submitted", problems)
    return items


def _submission(spec: Mapping[str, Any], actor: str | None) -> TaskSubmitted:
    options = dict(spec)
    missing = [name for name in ("queue", "task_type") if not options.get(name)]
    if missing:
        raise InvalidRequest([(name, "required") for name in missing])
    queue, task_type = options.pop("queue"), options.pop("task_type")
    try:
        payload = json.dumps(options.pop("payload", None), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest([("payload", f"not JSON: {exc}")]) from None
    if actor:
        options.setdefault("actor", actor)
    return submission(queue, task_type, payload=payload, **options)


def _workflow(spec: WorkflowSpec | Mapping[str, Any], actor: str | None) -> tuple[WorkflowSpec, list[TaskSubmitted]]:
    """The checked spec and its node submits; Refused naming the nodes or fields, nothing appended."""
    try:
        checked = spec if isinstance(spec, WorkflowSpec) else parse_spec(dict(spec))
        problems = graph_problems(checked)
        if problems:
            raise InvalidRequest(problems)
        return checked, workflow_events(checked, actor=actor)
    except InvalidRequest as exc:
        raise Refused(f"the workflow is not valid: {exc}; nothing was submitted", exc.problems) from None

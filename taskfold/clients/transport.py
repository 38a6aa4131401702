"""What a transport offers the clients: the same calls over Kafka (`kafka`) and HTTP (`http`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from taskfold.core.events import TaskSubmitted
from taskfold.workflows.spec import WorkflowSpec

from taskfold.clients.errors import Refused
from taskfold.clients.models import AgentView, QueueView, Receipt, StreamItem, TaskView, WorkflowReceipt


class Transport(Protocol):
    """Validated requests in, typed answers or client errors out."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, items: Sequence[tuple[TaskSubmitted, bool]]) -> list[Receipt | Refused]: ...

    async def submit_workflow(self, spec: WorkflowSpec, events: Sequence[TaskSubmitted]) -> WorkflowReceipt: ...

    async def cancel(self, task_id: str, queue: str | None, reason: str | None, actor: str | None) -> Receipt: ...

    async def redrive(self, task_id: str, queue: str | None, extra_attempts: int, reason: str | None,
                      actor: str | None) -> Receipt: ...

    async def get(self, task_id: str, queue: str | None) -> TaskView: ...

    async def wait(self, task_id: str, queue: str | None, timeout: float | None) -> TaskView: ...

    def stream(self, task_id: str, queue: str | None, after: str | None,
               follow: bool) -> AsyncIterator[StreamItem]: ...

    async def queues(self) -> list[QueueView]: ...

    async def agents(self) -> list[AgentView]: ...

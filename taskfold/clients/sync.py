"""`Client`: the blocking face of `AsyncClient`, for scripts, notebooks and threads.

It runs an `AsyncClient` on an event loop of its own, in a daemon thread, and waits for
each call's result. No loop of the caller is touched, so it works where a loop is already
running (Jupyter) and from several threads at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from taskfold.clients.asyncclient import AsyncClient
from taskfold.clients.errors import Refused
from taskfold.clients.models import AgentView, QueueView, Receipt, StreamItem, TaskView, WorkflowReceipt

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="taskfold-client", daemon=True)
        self.thread.start()

    def run(self, work: Awaitable[T]) -> T:
        """Run a coroutine on the loop and wait for it; an interrupt (Ctrl-C) cancels it."""
        if threading.current_thread() is self.thread:
            raise RuntimeError("a blocking Client call from inside its own loop would wait forever; "
                               "use AsyncClient in async code")
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self.loop)  # type: ignore[arg-type]
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and wait for the thread."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class Client:
    """The taskfold client for blocking code; every method is `AsyncClient`'s, waited for."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._loop = _LoopThread()

    @classmethod
    def kafka(cls, bootstrap: str | None = None, **options: Any) -> Client:
        """A client that appends to the log itself: `bootstrap`, else TASKFOLD_BOOTSTRAP, else `taskfold dev`."""
        return cls(AsyncClient.kafka(bootstrap, **options))

    @classmethod
    def http(cls, url: str, token: str | None = None, **options: Any) -> Client:
        """A client of the gateway at `url`, with its bearer token."""
        return cls(AsyncClient.http(url, token, **options))

    def close(self) -> None:
        """Disconnect and stop the client's loop."""
        if self._loop.loop.is_closed():
            return
        try:
            self._loop.run(self._client.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> Client:
        self._loop.run(self._client.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, queue: str, task_type: str, payload: Any = None, **options: Any) -> Receipt:
        """See `AsyncClient.submit`."""
        return self._loop.run(self._client.submit(queue, task_type, payload, **options))

    def submit_many(self, tasks: Iterable[Mapping[str, Any]]) -> list[Receipt | Refused]:
        """See `AsyncClient.submit_many`."""
        return self._loop.run(self._client.submit_many(list(tasks)))

    def submit_workflow(self, spec: Any) -> WorkflowReceipt:
        """See `AsyncClient.submit_workflow`."""
        return self._loop.run(self._client.submit_workflow(spec))

    def cancel(self, task_id: str, *, reason: str | None = None, queue: str | None = None) -> Receipt:
        """See `AsyncClient.cancel`."""
        return self._loop.run(self._client.cancel(task_id, reason=reason, queue=queue))

    def redrive(self, task_id: str, *, extra_attempts: int = 1, reason: str | None = None,
                queue: str | None = None) -> Receipt:
        """See `AsyncClient.redrive`."""
        return self._loop.run(self._client.redrive(task_id, extra_attempts=extra_attempts, reason=reason,
                                                   queue=queue))

    def get(self, task_id: str, *, queue: str | None = None) -> TaskView:
        """See `AsyncClient.get`."""
        return self._loop.run(self._client.get(task_id, queue=queue))

    def wait(self, task_id: str, *, timeout: float | None = None, queue: str | None = None) -> TaskView:
        """See `AsyncClient.wait`."""
        return self._loop.run(self._client.wait(task_id, timeout=timeout, queue=queue))

    def stream(self, task_id: str, *, after: str | None = None, follow: bool = True,
               queue: str | None = None) -> Iterator[StreamItem]:
        """See `AsyncClient.stream`; leaving the loop early closes the stream."""
        items = self._client.stream(task_id, after=after, follow=follow, queue=queue)

        async def next_item() -> StreamItem:
            return await anext(items)  # a coroutine, as run_coroutine_threadsafe requires

        try:
            while True:
                try:
                    yield self._loop.run(next_item())
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.loop.is_closed():
                self._loop.run(items.aclose())

    def queues(self) -> list[QueueView]:
        """See `AsyncClient.queues`."""
        return self._loop.run(self._client.queues())

    def agents(self) -> list[AgentView]:
        """See `AsyncClient.agents`."""
        return self._loop.run(self._client.agents())

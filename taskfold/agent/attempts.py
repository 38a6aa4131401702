"""Running one attempt: the handler's view of its task, and how a run becomes an outcome.

A handler is an `async def handler(task: TaskContext) -> <JSON value>`. It runs as its
own asyncio task so that a cancel, a timeout or a drain can stop it while the agent
still reports. Whatever the handler does, the result is an `AttemptEnd`, never an agent
crash: an exception is a failed attempt carrying its text.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter, error_text, result_text
from taskfold.agent.results import DependencyResults, DependencyUnknown
from taskfold.core.requests import size_problem
from taskfold.core.state import Task
from taskfold.core.telemetry import ChunkKind, ProgressChunk

log = logging.getLogger(__name__)

StopReason = Literal["cancel", "revoked", "drain", "timeout"]
Handler = Callable[["TaskContext"], Awaitable[Any]]
Emit = Callable[[ProgressChunk], Awaitable[None]]
DRAINING_ERROR = "agent draining: attempt handed back"


class NonRetryable(Exception):
    """Raise (or subclass) in a handler to fail the attempt with no retry: the task dead-letters."""


class TaskContext:
    """What a handler sees of its attempt: the task, progress streaming, and cancellation."""

    def __init__(self, key: AttemptKey, task: Task, agent_id: str, reporter: Reporter, emit: Emit,
                 results: DependencyResults | None = None) -> None:
        self.key = key
        self.task_id, self.queue, self.attempt = key.task_id, key.queue, key.attempt
        self.task_type = task.task_type
        self.payload_text = task.payload
        self.timeout_ms = task.timeout_ms
        self.correlation_id = task.correlation_id
        self.session_id = task.session_id
        self.depends_on = task.depends_on
        self._task, self._results = task, results
        self.agent_id = agent_id
        self.stop_reason: StopReason | None = None
        self._reporter, self._emit = reporter, emit
        self._seq = 0
        self._job: asyncio.Task[Any] | None = None

    @property
    def payload(self) -> Any:
        """The task's payload, parsed from its JSON text."""
        return json.loads(self.payload_text)

    async def dependency_results(self) -> dict[str, Any]:
        """{node name (workflow) or task id: result} of the task's dependencies, read from the log."""
        if self._results is None:
            raise DependencyUnknown(f"task {self.task_id}: this agent cannot read dependency results")
        return await self._results.of(self._task)

    @property
    def cancelled(self) -> bool:
        """True once the attempt should stop (cancel requested, timeout, drain, or taken away)."""
        return self.stop_reason is not None

    async def progress(self, kind: ChunkKind | str, content: Any) -> None:
        """Stream one chunk (text, tool_call, tool_result, message, log); non-text content is sent as JSON."""
        text = content if isinstance(content, str) else json.dumps(content)
        chunk = self._reporter.chunk(self.key, self._seq, kind, text)  # ValueError for an unknown kind
        self._seq += 1
        await self._emit(chunk)

    def stop(self, reason: StopReason) -> None:
        """Ask the handler to stop (it is cancelled); the first reason given is the one reported."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._job is not None:
            self._job.cancel()


async def run_attempt(handler: Handler, ctx: TaskContext, *, grace_s: float = 5.0) -> AttemptEnd:
    """Run the handler under the task's timeout and turn whatever happens into an AttemptEnd."""
    if ctx.stop_reason is not None:  # stopped before it began
        return _stopped(ctx)
    job = asyncio.ensure_future(handler(ctx))
    ctx._job = job
    try:
        done, _ = await asyncio.wait({job}, timeout=ctx.timeout_ms / 1000)
        if not done:
            ctx.stop("timeout")
        if not job.done():
            await asyncio.wait({job}, timeout=grace_s)
    except asyncio.CancelledError:
        job.cancel()  # the agent itself is being torn down
        raise
    if not job.done():
        # A handler that swallows cancellation cannot be stopped; report and move on.
        log.warning("attempt %s ignored cancellation for %.1f s; reporting without it", ctx.key, grace_s)
    if ctx.stop_reason is not None:
        if job.done() and not job.cancelled():
            job.exception()  # retrieved, so asyncio does not log it as never retrieved
        return _stopped(ctx)
    return _finished(job)


def _stopped(ctx: TaskContext) -> AttemptEnd:
    if ctx.stop_reason == "cancel":
        return AttemptEnd("cancelled")
    if ctx.stop_reason == "revoked":
        return AttemptEnd("revoked")
    if ctx.stop_reason == "timeout":
        return AttemptEnd("failed", error=f"timed out after {ctx.timeout_ms} ms", retryable=True)
    return AttemptEnd("failed", error=DRAINING_ERROR, retryable=True)


def _finished(job: asyncio.Task[Any]) -> AttemptEnd:
    if job.cancelled():
        return AttemptEnd("failed", error="handler was cancelled", retryable=True)
    exc = job.exception()
    if exc is not None:
        return AttemptEnd("failed", error=error_text(exc), retryable=not isinstance(exc, NonRetryable))
    try:
        result = result_text(job.result())
    except (TypeError, ValueError) as exc:
        return AttemptEnd("failed", error=f"result is not JSON: {error_text(exc)}", retryable=False)
    # The same result would be too large on every retry: fail for good, naming the limit.
    too_large = size_problem("result", result)
    if too_large is not None:
        return AttemptEnd("failed", error=too_large, retryable=False)
    return AttemptEnd("completed", result=result)

"""Running one attempt without a broker: every way a handler ends becomes an AttemptEnd."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from taskfold.agent import Agent, NonRetryable, TaskContext
from taskfold.agent.attempts import DRAINING_ERROR, run_attempt
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.core.fold import Ledger
from taskfold.core.telemetry import ProgressChunk
from taskfold.core.testing import Events


def context(timeout_ms: int = 5_000, payload: str = '{"n": 3}') -> tuple[TaskContext, list[ProgressChunk]]:
    e = Events()
    ledger = Ledger()
    for event in (e.join("a"), e.submit("t1", payload=payload, timeout_ms=timeout_ms), e.assign("t1", "a")):
        ledger.apply(event)
    sent: list[ProgressChunk] = []

    async def emit(chunk: ProgressChunk) -> None:
        sent.append(chunk)

    task = ledger.state("q").task("t1")
    return TaskContext(AttemptKey("q", "t1", 1), task, "a", Reporter("a"), emit), sent


async def test_a_return_value_is_the_result_as_json() -> None:
    async def handler(task: TaskContext) -> Any:
        return {"doubled": task.payload["n"] * 2}

    ctx, _ = context()
    assert await run_attempt(handler, ctx) == AttemptEnd("completed", result='{"doubled": 6}')


@pytest.mark.parametrize(("exc", "error", "retryable"), [
    (ValueError("bad"), "ValueError: bad", True),
    (NonRetryable("never"), "NonRetryable: never", False),
    (type("Invalid", (NonRetryable,), {})("schema"), "Invalid: schema", False),
])
async def test_exceptions_are_failed_attempts(exc: Exception, error: str, retryable: bool) -> None:
    async def handler(task: TaskContext) -> None:
        raise exc

    ctx, _ = context()
    assert await run_attempt(handler, ctx) == AttemptEnd("failed", error=error, retryable=retryable)


async def test_a_result_that_is_not_json_fails_without_retry() -> None:
    async def handler(task: TaskContext) -> Any:
        return {1, 2}

    ctx, _ = context()
    outcome = await run_attempt(handler, ctx)
    assert outcome.kind == "failed" and not outcome.retryable and outcome.error.startswith("result is not JSON")


async def test_the_timeout_cancels_the_handler() -> None:
    cancelled = asyncio.Event()

    async def handler(task: TaskContext) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ctx, _ = context(timeout_ms=20)
    assert await run_attempt(handler, ctx) == AttemptEnd("failed", error="timed out after 20 ms", retryable=True)
    assert cancelled.is_set() and ctx.cancelled


@pytest.mark.parametrize(("reason", "expected"), [
    ("cancel", AttemptEnd("cancelled")),
    ("revoked", AttemptEnd("revoked")),
    ("drain", AttemptEnd("failed", error=DRAINING_ERROR, retryable=True)),
])
async def test_a_stop_cancels_the_handler_and_names_the_outcome(reason: str, expected: AttemptEnd) -> None:
    started = asyncio.Event()

    async def handler(task: TaskContext) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed the cancel"  # the stop reason still decides the outcome

    ctx, _ = context()
    running = asyncio.create_task(run_attempt(handler, ctx))
    await started.wait()
    ctx.stop(reason)
    ctx.stop("timeout")  # a later reason does not replace the first
    assert await running == expected


async def test_stopped_before_it_began_never_runs() -> None:
    ran = []

    async def handler(task: TaskContext) -> None:
        ran.append(task.task_id)

    ctx, _ = context()
    ctx.stop("cancel")
    assert await run_attempt(handler, ctx) == AttemptEnd("cancelled") and ran == []


async def test_progress_numbers_chunks_and_sends_non_text_as_json() -> None:
    async def handler(task: TaskContext) -> None:
        await task.progress("log", "one")
        await task.progress("tool_call", {"tool": "x"})

    ctx, sent = context()
    await run_attempt(handler, ctx)
    assert [(c.seq, c.kind.value, c.content) for c in sent] == [(0, "log", "one"), (1, "tool_call", '{"tool": "x"}')]
    assert json.loads(ctx.payload_text) == {"n": 3}


def test_agent_configuration_is_validated() -> None:
    agent = Agent("a", ["emails", "reports"])
    assert agent.slots == {"emails": 1, "reports": 1}
    with pytest.raises(ValueError, match="invalid queue name"):
        Agent("a", {"bad queue": 1})
    with pytest.raises(ValueError, match="slots"):
        Agent("a", {"emails": 0})
    with pytest.raises(ValueError, match="at least one queue"):
        Agent("a", {})
    with pytest.raises(TypeError, match="async"):
        agent.handler("sync")(lambda task: None)

"""The demo agent's handlers (echo, sleep, flaky, streaming), run without a broker."""

from __future__ import annotations

import json
import random

from taskfold.agent import Agent, TaskContext
from taskfold.agent.attempts import run_attempt
from taskfold.agent.demo import demo_agent, register_demo_handlers
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.core.fold import Ledger
from taskfold.core.telemetry import ProgressChunk
from taskfold.core.testing import Events


async def run(agent: Agent, task_type: str, payload: str) -> tuple[AttemptEnd, list[ProgressChunk]]:
    e = Events()
    ledger = Ledger()
    for event in (e.join("a"), e.submit("t1", task_type=task_type, payload=payload), e.assign("t1", "a")):
        ledger.apply(event)
    sent: list[ProgressChunk] = []

    async def emit(chunk: ProgressChunk) -> None:
        sent.append(chunk)

    ctx = TaskContext(AttemptKey("q", "t1", 1), ledger.state("q").task("t1"), "a", Reporter("a"), emit)
    return await run_attempt(agent.handlers[task_type], ctx), sent


async def test_echo_sleep_and_streaming() -> None:
    agent = demo_agent("a", {"demo": 2})
    assert sorted(agent.handlers) == ["echo", "flaky", "sleep", "streaming"]
    assert (await run(agent, "echo", '{"x": [1]}'))[0] == AttemptEnd("completed", result='{"x": [1]}')
    assert (await run(agent, "sleep", '{"ms": 5}'))[0] == AttemptEnd("completed", result='{"slept_ms": 5}')
    outcome, chunks = await run(agent, "streaming", '{"chunks": 2, "delay_ms": 0}')
    assert json.loads(outcome.result) == {"chunks": 6}
    assert [c.kind.value for c in chunks] == ["log", "tool_call", "tool_result", "text", "text", "message"]


async def test_flaky_fails_with_its_probability() -> None:
    agent = Agent("a", {"demo": 1})
    register_demo_handlers(agent, random.Random(7))
    always, _ = await run(agent, "flaky", '{"p": 1.0}')
    never, _ = await run(agent, "flaky", '{"p": 0.0}')
    assert always.kind == "failed" and always.retryable and "flaky failure (p=1.0)" in always.error
    assert never == AttemptEnd("completed", result='{"ok": true, "attempt": 1}')

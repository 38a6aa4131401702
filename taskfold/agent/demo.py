"""The demo agent behind `taskfold agent --demo`: handlers echo, sleep, flaky and streaming."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping
from typing import Any

from taskfold.agent.agent import Agent
from taskfold.agent.attempts import TaskContext


def demo_agent(agent_id: str, queues: Mapping[str, int], **options: Any) -> Agent:
    """An Agent with the four demo handlers registered."""
    agent = Agent(agent_id, queues, **options)
    register_demo_handlers(agent)
    return agent


def register_demo_handlers(agent: Agent, rng: random.Random | None = None) -> None:
    """Register echo, sleep, flaky and streaming on an agent."""
    rng = rng or random.Random()

    @agent.handler("echo")
    async def echo(task: TaskContext) -> Any:
        return task.payload

    @agent.handler("sleep")
    async def sleep(task: TaskContext) -> dict:
        ms = int(_field(task.payload, "ms", 1000))
        await asyncio.sleep(ms / 1000)
        return {"slept_ms": ms}

    @agent.handler("flaky")
    async def flaky(task: TaskContext) -> dict:
        p = float(_field(task.payload, "p", 0.5))
        if rng.random() < p:
            raise RuntimeError(f"flaky failure (p={p}) on attempt {task.attempt}")
        return {"ok": True, "attempt": task.attempt}

    @agent.handler("streaming")
    async def streaming(task: TaskContext) -> dict:
        count = int(_field(task.payload, "chunks", 5))
        delay = int(_field(task.payload, "delay_ms", 50)) / 1000
        for chunk in _script(count):
            await task.progress(*chunk)
            await asyncio.sleep(delay)
        return {"chunks": count + 4}


def _field(payload: Any, name: str, default: Any) -> Any:
    return payload.get(name, default) if isinstance(payload, dict) else default


def _script(count: int) -> Iterable[tuple[str, Any]]:
    """A little agent transcript: a log line, a tool call and its result, streamed text, a message."""
    yield "log", "starting"
    yield "tool_call", {"tool": "lookup", "args": {"q": "taskfold"}}
    yield "tool_result", {"tool": "lookup", "result": "an event-sourced task service"}
    for i in range(count):
        yield "text", f"token {i} "
    yield "message", f"streamed {count} tokens"

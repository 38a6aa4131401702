"""An HTTP agent's report that cannot count is refused before anything is appended (the
README's promise): a report for a task that is over, or for an attempt never assigned, is a
409 and the log does not grow; a report for an attempt the gateway's projection has not
applied yet, but the log holds, is let through and accepted. No scheduler: the test appends
the assignments itself, as a worker would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.requests import submission
from taskfold.core.events import TaskAssigned
from tests.integration.test_gateway_sse import Gateway, serve

pytestmark = pytest.mark.integration
AGENT1 = {"Authorization": "Bearer agent-1-tok"}
REPORT = "/v1/agents/http-1/tasks"


@pytest.fixture
async def gateway(broker: Broker, topics: TopicNames, tmp_path: Path) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    async with serve(broker, topics, tmp_path / "store") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        joined = await client.post("/v1/agents/http-1/join", json={"queues": ["web"], "slots": 4}, headers=AGENT1)
        assert joined.status_code == 200, joined.text
        yield gw, client


def assigned(task_id: str, attempt: int) -> TaskAssigned:
    return TaskAssigned(event_id=f"assign-{task_id}-{attempt}", queue="web", occurred_at=1, actor="test",
                        task_id=task_id, attempt=attempt, agent_id="http-1", lease_ms=60_000, strategy="test")


async def append(gw: Gateway, *events, applied: bool = True) -> None:
    positions = await gw.log.append(list(events))
    if applied:
        for position in positions:
            await gw.rt.live.wait_applied(position.partition, position.offset, 10)


async def log_size(gw: Gateway) -> int:
    return sum((await gw.log.end_offsets()).values())


async def test_a_report_on_a_completed_task_for_a_later_attempt_is_409_and_appends_nothing(gateway) -> None:
    gw, client = gateway
    reporter = Reporter("http-1", actor="test")
    key = AttemptKey("web", "done", 1)
    await append(gw, submission("web", "echo", task_id="done"), assigned("done", 1), reporter.started(key),
                 reporter.outcome(key, AttemptEnd("completed", result="{}")))
    before = await log_size(gw)
    late = await client.post(f"{REPORT}/done/completed", json={"attempt": 7, "result": {}}, headers=AGENT1)
    assert late.status_code == 409, late.text
    assert late.json()["error"]["code"] == "attempt_over"
    assert "already completed" in late.json()["error"]["message"]
    assert await log_size(gw) == before


async def test_a_report_for_an_attempt_never_assigned_is_409_and_appends_nothing(gateway) -> None:
    gw, client = gateway
    await append(gw, submission("web", "echo", task_id="busy"), assigned("busy", 1))
    before = await log_size(gw)
    ahead = await client.post(f"{REPORT}/busy/started", json={"attempt": 5}, headers=AGENT1)
    assert ahead.status_code == 409, ahead.text
    error = ahead.json()["error"]
    assert error["code"] == "stale_attempt" and "never assigned" in error["message"]
    assert error["problems"] == [{"field": "attempt", "reason": "must be 1"}]
    chunks = await client.post(f"{REPORT}/busy/progress", headers=AGENT1,
                               json={"attempt": 5, "chunks": [{"seq": 0, "content": "x"}]})
    assert chunks.status_code == 409 and chunks.json()["error"]["code"] == "stale_attempt"
    assert await log_size(gw) == before


async def test_an_attempt_the_log_holds_but_the_projection_has_not_applied_is_accepted(gateway) -> None:
    gw, client = gateway
    await append(gw, submission("web", "echo", task_id="fresh"))
    await append(gw, assigned("fresh", 1), applied=False)  # the agent heard of it before this gateway did
    started = await client.post(f"{REPORT}/fresh/started", json={"attempt": 1}, headers=AGENT1)
    assert started.status_code == 200, started.text
    assert started.json()["verdict"]["outcome"] == "accepted" and started.json()["state"] == "running"

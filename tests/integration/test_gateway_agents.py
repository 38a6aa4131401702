"""HTTP agents end to end: a real scheduler worker (a separate process) assigns tasks to
agents that speak only HTTP to the gateway: join, long-poll, report, stream progress, leave."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.requests import submission
from taskfold.cli.cluster import LocalCluster
from taskfold.core.events import Backoff
from taskfold.core.state import TaskState
from tests.integration.test_gateway_sse import Gateway, Reader, serve, until

pytestmark = pytest.mark.integration
FAST = ("--fast-rebalance", "--tick-ms", "50")
AGENT1 = {"Authorization": "Bearer agent-1-tok"}
AGENT2 = {"Authorization": "Bearer agent-2-tok"}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "http_agent.sh"


@pytest.fixture
async def running(broker: Broker, topics: TopicNames,
                  tmp_path: Path) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """A gateway, a scheduler worker, and an HTTP client of the gateway."""
    cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, tmp_path / "state", log_dir=tmp_path)
    async with serve(broker, topics, tmp_path / "store") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=40) as client:
        cluster.worker("worker-1", *FAST)
        try:
            yield gw, client
        finally:
            cluster.stop_all(timeout=20)


@pytest.fixture
async def gateway_only(broker: Broker, topics: TopicNames, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(broker, topics, tmp_path / "store") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        yield client


async def submit(gw: Gateway, queue: str, task_id: str, **options) -> None:
    [position] = await gw.log.append([submission(queue, "echo", task_id=task_id, **options)])
    await gw.rt.live.wait_applied(position.partition, position.offset, 10)


async def test_an_http_agent_runs_a_task_end_to_end_and_stale_or_foreign_reports_are_refused(
        running: tuple[Gateway, httpx.AsyncClient]) -> None:
    gw, client = running
    joined = await client.post("/v1/agents/http-1/join", json={"queues": ["web"], "slots": 1}, headers=AGENT1)
    assert joined.status_code == 200, joined.text
    assert [(q["queue"], q["verdict"]["outcome"]) for q in joined.json()["queues"]] == [("web", "accepted")]
    started_at = time.monotonic()
    assert (await client.get("/v1/agents/http-1/assignments?wait=0.3", headers=AGENT1)).json() == []
    assert time.monotonic() - started_at < 3, "an empty long-poll returns at its wait"

    await submit(gw, "web", "job-1", payload='{"n": 1}')
    watcher = Reader(gw, "/v1/tasks/job-1/events")
    polled = (await client.get("/v1/agents/http-1/assignments?wait=25", headers=AGENT1)).json()
    assert [(a["task_id"], a["attempt"], a["payload"]) for a in polled] == [("job-1", 1, {"n": 1})]
    report = "/v1/agents/http-1/tasks/job-1"
    started = await client.post(f"{report}/started", json={"attempt": 1}, headers=AGENT1)
    assert started.status_code == 200 and started.json()["state"] == "running", started.text
    assert (await client.get("/v1/agents/http-1/assignments", headers=AGENT1)).json() == [], "reported on"
    beat = await client.post("/v1/agents/http-1/heartbeat", headers=AGENT1)
    assert beat.status_code == 200 and [h["task_id"] for h in beat.json()["held"]] == ["job-1"]
    chunks = [{"seq": n, "kind": "text", "content": f"step {n}"} for n in range(3)]
    progress = await client.post(f"{report}/progress", json={"attempt": 1, "chunks": chunks}, headers=AGENT1)
    assert progress.status_code == 200 and len(progress.json()["positions"]) == 3
    completed = await client.post(f"{report}/completed", json={"attempt": 1, "result": {"ok": True}}, headers=AGENT1)
    assert completed.status_code == 200 and completed.json()["state"] == "completed", completed.text
    assert completed.json()["verdict"]["outcome"] == "accepted"

    retried = await client.post(f"{report}/completed", json={"attempt": 1, "result": {"ok": True}}, headers=AGENT1)
    assert retried.status_code == 200 and retried.json()["verdict"]["outcome"] == "duplicate"
    assert retried.json()["event_id"] == completed.json()["event_id"], "a retried report has the same derived id"
    other = await client.post(f"{report}/failed", json={"attempt": 1, "error": "late"}, headers=AGENT1)
    assert other.json()["verdict"]["outcome"] == "duplicate" and other.json()["state"] == "completed", \
        "an attempt has one outcome id: a second, different outcome is that outcome's duplicate"
    over = await client.post(f"{report}/progress", json={"attempt": 1, "chunks": chunks}, headers=AGENT1)
    assert over.status_code == 409 and over.json()["error"]["code"] == "attempt_over"
    assert "already completed" in over.json()["error"]["message"]
    foreign_token = await client.post(f"{report}/completed", json={"attempt": 1}, headers=AGENT2)
    assert foreign_token.status_code == 403 and foreign_token.json()["error"]["code"] == "forbidden"
    assert (await client.post("/v1/agents/http-2/join", json={"queues": ["web"]}, headers=AGENT2)).status_code == 200
    not_holder = await client.post("/v1/agents/http-2/tasks/job-1/completed", json={"attempt": 1}, headers=AGENT2)
    assert not_holder.status_code == 403 and not_holder.json()["error"]["code"] == "not_holder"
    assert (await client.post("/v1/agents/http-2/leave", headers=AGENT2)).status_code == 200

    messages = await watcher.finished()
    # The retried report (a duplicate) may reach the stream while it drains progress before
    # its end: every event about the task is streamed with its verdict, so count the others.
    names = [m["event"] for m in messages
             if m["event"] in ("end", "progress") or json.loads(m["data"])["verdict"]["outcome"] != "duplicate"]
    assert names[-1] == "end" and sorted(names[:-1]) == sorted(
        ["TaskSubmitted", "TaskAssigned", "TaskStarted", "progress", "progress", "progress", "TaskCompleted"])
    assert [json.loads(m["data"])["chunk"]["content"] for m in messages if m["event"] == "progress"] == [
        "step 0", "step 1", "step 2"]

    await submit(gw, "web", "job-2", backoff=Backoff(initial_ms=1, jitter=0.0))  # retried at once
    [first] = (await client.get("/v1/agents/http-1/assignments?wait=20", headers=AGENT1)).json()
    assert (first["task_id"], first["attempt"]) == ("job-2", 1)
    failed = await client.post("/v1/agents/http-1/tasks/job-2/failed", json={"attempt": 1, "error": "flaky"},
                               headers=AGENT1)
    assert failed.status_code == 200 and failed.json()["state"] in ("retry_wait", "queued", "assigned")
    [second] = (await client.get("/v1/agents/http-1/assignments?wait=20", headers=AGENT1)).json()
    assert (second["task_id"], second["attempt"]) == ("job-2", 2)
    stale = await client.post("/v1/agents/http-1/tasks/job-2/started", json={"attempt": 1}, headers=AGENT1)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_attempt"
    done = await client.post("/v1/agents/http-1/tasks/job-2/completed", json={"attempt": 2}, headers=AGENT1)
    assert done.status_code == 200 and done.json()["state"] == "completed"

    left = await client.post("/v1/agents/http-1/leave", headers=AGENT1)
    assert left.status_code == 200 and left.json()["queues"][0]["verdict"]["outcome"] == "accepted"
    seat = gw.rt.live.projector.queue("web").state.member("http-1")
    assert seat is not None and not seat.active


async def test_agent_requests_are_validated_field_by_field(gateway_only: httpx.AsyncClient) -> None:
    client = gateway_only
    bad_join = await client.post("/v1/agents/http-1/join", json={"queues": [], "slots": 0}, headers=AGENT1)
    assert bad_join.status_code == 422
    assert {p["field"] for p in bad_join.json()["error"]["problems"]} >= {"slots"}
    too_long = await client.get("/v1/agents/http-1/assignments?wait=31", headers=AGENT1)
    assert too_long.status_code == 422 and too_long.json()["error"]["problems"][0]["field"] == "query.wait"
    bad_chunk = await client.post("/v1/agents/http-1/tasks/x/progress", headers=AGENT1,
                                  json={"attempt": 1, "chunks": [{"seq": -1, "kind": "shout", "content": "x"}]})
    assert {p["field"] for p in bad_chunk.json()["error"]["problems"]} == {"chunks.0.seq", "chunks.0.kind"}
    unknown = await client.post("/v1/agents/http-1/tasks/nope/started", json={"attempt": 1}, headers=AGENT1)
    assert unknown.status_code == 404
    submitter = await client.post("/v1/agents/http-1/heartbeat", headers={"Authorization": "Bearer sub-tok"})
    assert submitter.status_code == 403


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the shell agent needs curl and jq")
async def test_the_shell_agent_example_serves_tasks_with_curl_alone(running: tuple[Gateway, httpx.AsyncClient]) -> None:
    gw, _ = running
    env = {**os.environ, "TASKFOLD_URL": gw.url, "TASKFOLD_TOKEN": "shell-tok", "TASKFOLD_MAX_TASKS": "2",
           "TASKFOLD_WAIT": "2"}
    agent = await asyncio.create_subprocess_exec("bash", str(EXAMPLE), "shell-1", "shellq", env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await until(lambda: gw.rt.live.projector.queue("shellq").state.member("shell-1") is not None, 15, "joined")
        await submit(gw, "shellq", "s-1", payload='{"greet": "hello"}')
        await submit(gw, "shellq", "s-2", payload='[1, 2]')
        out, _ = await asyncio.wait_for(agent.communicate(), 40)
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
    assert agent.returncode == 0, out.decode()
    projector = gw.rt.live.projector
    state = projector.queue("shellq").state
    results = {t: json.loads(projector.task("shellq", t).result) for t in ("s-1", "s-2")
               if projector.task("shellq", t).state == TaskState.completed}
    assert results == {"s-1": {"echo": {"greet": "hello"}, "agent": "shell-1"},
                       "s-2": {"echo": [1, 2], "agent": "shell-1"}}, out.decode()
    assert not state.member("shell-1").active, "it left the queue on the way out"

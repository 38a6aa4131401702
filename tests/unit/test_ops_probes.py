"""Health, readiness and metrics of the worker and the agents, without a broker.

The probe server answers on a real socket inside the test's loop; the worker's probe reads
a topology built by the same `streams.app.build` as `taskfold worker` (memory store,
recording outbox); the agent's probe reads an Agent that has not started.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streams.app import WorkerOptions, build
from streams.metrics import WorkerProbe
from streams.processor import Always
from taskfold.agent import Agent
from taskfold.agent.metrics import AgentProbe
from taskfold.broker.topics import TopicNames, queue_partition
from taskfold.core.events import Event
from taskfold.core.reports import AttemptKey
from taskfold.core.testing import Events
from taskfold.log.wire import encode_event
from taskfold.ops.probes import ProbeServer, Readiness, bind, gauge

TOPICS = TopicNames("unit.")
QUEUE = "q"


async def get(url: str, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, headers, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, list[Readiness | Exception]]]:
    """A probe server on a free port; the readiness it answers is the last item of the list."""
    answers: list[Readiness | Exception] = [Readiness(False, "still joining")]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(type("C", (), {"collect": lambda self: iter([gauge("taskfold_unit_answer", "x", 42)])})())

    def readiness() -> Readiness:
        if isinstance(answers[-1], Exception):
            raise answers[-1]
        return answers[-1]

    server = ProbeServer(bind("127.0.0.1", 0), registry, readiness)
    task = asyncio.create_task(server.serve())
    try:
        yield server.url, answers
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_probe_server_answers_health_readiness_and_metrics(served) -> None:
    url, answers = served
    assert (await get(url, "/healthz"))[::2] == (200, b'{"status": "ok"}')
    status, headers, body = await get(url, "/readyz")
    assert status == 503 and headers["retry-after"] == "1"
    assert json.loads(body) == {"ready": False, "why_not": "still joining"}
    answers.append(Readiness(True, "joined", {"queues": ["q"]}))
    status, _, body = await get(url, "/readyz?verbose=1")
    assert status == 200 and json.loads(body) == {"ready": True, "why": "joined", "queues": ["q"]}
    status, headers, body = await get(url, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert "taskfold_unit_answer 42.0" in body.decode()


async def test_probe_server_names_what_it_refuses_and_a_failing_check(served) -> None:
    url, answers = served
    status, _, body = await get(url, "/nowhere")
    assert status == 404 and "/healthz" in json.loads(body)["error"]
    assert (await get(url, "/readyz", "POST"))[0] == 405
    head = await get(url, "/healthz", "HEAD")
    assert head[0] == 200 and head[2] == b"" and head[1]["content-length"] == "16"
    answers.append(RuntimeError("the table is gone"))
    status, _, body = await get(url, "/readyz")
    assert status == 503
    assert json.loads(body)["why_not"] == "the readiness check failed: RuntimeError: the table is gone"


async def test_probe_server_survives_a_client_that_sends_garbage(served) -> None:
    url, _ = served
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00\x01garbage\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # dropped, nothing answered
    writer.close()
    assert (await get(url, "/healthz"))[0] == 200


def test_a_port_in_use_is_refused_naming_the_cause() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def metrics(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of everything a registry serves."""
    from prometheus_client import generate_latest

    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


@dataclass
class Worker:
    probe: WorkerProbe
    agent: object
    events: Events

    async def read(self, event: Event) -> None:
        value, headers = encode_event(event)
        await self.agent.put(value, key=QUEUE.encode(), partition=queue_partition(QUEUE, 4), headers=headers)


async def nowhere(events: list) -> None:
    pass


OUTBOX = type("Outbox", (), {"append": staticmethod(nowhere), "quarantine": None})()


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    options = WorkerOptions(store="memory://", read_heartbeats=False)
    topology = build("127.0.0.1:1", TOPICS, tansu=False, partitions=4, options=options, outbox=OUTBOX,
                     catch_up=Always(), clock_ms=lambda: 10_000)
    probe = WorkerProbe(topology, TOPICS.events, "w1")
    async with topology.agent.test_context() as agent:
        yield Worker(probe, agent, Events(queue=QUEUE, now=9_000))


async def test_worker_readiness_follows_assignment_and_recovery(worker: Worker) -> None:
    probe = worker.probe
    assert "no partitions of unit.events assigned yet" in probe.readiness().why
    await probe._on_assigned(None, {TopicPartition(TOPICS.events, 1), TopicPartition("other", 0)})
    assert probe.readiness() == Readiness(False, "recovering the table rows of partitions [1]")
    await probe._on_recovered()
    assert probe.readiness() == Readiness(True, "partitions [1] assigned and caught up",
                                          {"partitions": [1], "worker": "w1"})
    await probe._on_revoked(None, {TopicPartition(TOPICS.events, 1)})
    assert not probe.readiness().ready
    await probe._on_assigned(None, set())
    await probe._on_recovered()
    assert probe.readiness().ready and probe.readiness().why.startswith("standby: no partition")


async def test_worker_readiness_names_the_partitions_behind() -> None:
    options = WorkerOptions(store="memory://", read_heartbeats=False)
    topology = build("127.0.0.1:1", TOPICS, tansu=False, partitions=4, options=options,
                     outbox=OUTBOX, clock_ms=lambda: 0)  # the real CatchUp: nothing fetched yet
    probe = WorkerProbe(topology, TOPICS.events, "w1")
    await probe._on_assigned(None, {TopicPartition(TOPICS.events, 2), TopicPartition(TOPICS.events, 0)})
    await probe._on_recovered()
    assert probe.readiness() == Readiness(False, "partitions [0, 2] of unit.events not caught up with the log yet",
                                          {"lag": {}})


async def test_worker_metrics_count_verdicts_rejections_and_decisions(worker: Worker) -> None:
    e = worker.events
    for event in (e.join("a1", slots=1), e.submit("t1"), e.submit("t1"), e.complete("t1", "a1", attempt=3),
                  e.assign("t9", "a1")):
        await worker.read(event)
    seen = metrics(worker.probe.registry)
    assert seen[("taskfold_worker_records_total", ())] == 5
    assert seen[("taskfold_worker_events_folded_total", (("outcome", "accepted"),))] == 2
    assert seen[("taskfold_worker_events_folded_total", (("outcome", "rejected"),))] == 3
    assert seen[("taskfold_worker_rejections_total", (("event_type", "TaskSubmitted"),
                                                      ("reason", "already_submitted")))] == 1
    assert seen[("taskfold_worker_rejections_total", (("event_type", "TaskAssigned"),
                                                      ("reason", "unknown_task")))] == 1
    assert seen[("taskfold_worker_rejections_total", (("event_type", "TaskCompleted"),
                                                      ("reason", "stale_attempt")))] == 1
    assert seen[("taskfold_worker_appended_events_total", (("what", "decisions"),))] == 1  # t1 to a1
    assert seen[("taskfold_worker_appends_total", ())] == 1
    assert seen[("taskfold_worker_slots", (("queue", QUEUE),))] == 1
    assert seen[("taskfold_worker_agents", (("queue", QUEUE),))] == 1
    assert seen[("taskfold_worker_ready", ())] == 0


async def test_worker_metrics_count_waiting_tasks_by_priority(worker: Worker) -> None:
    e = worker.events
    for task, priority in (("c1", "critical"), ("c2", "critical"), ("l1", "low")):
        await worker.read(e.submit(task, priority=priority))
    seen = metrics(worker.probe.registry)
    waiting = {labels: n for (name, labels), n in seen.items() if name == "taskfold_worker_waiting_tasks"}
    assert waiting == {(("priority", "critical"), ("queue", QUEUE), ("state", "queued")): 2,
                       (("priority", "low"), ("queue", QUEUE), ("state", "queued")): 1}


def demo_agent() -> Agent:
    agent = Agent("a1", {"q": 2, "r": 1})

    @agent.handler("ok")
    async def ok(task) -> int:  # noqa: ANN001
        return 1

    @agent.handler("boom")
    async def boom(task) -> int:  # noqa: ANN001
        raise ValueError("boom")

    return agent


async def test_agent_readiness_is_joined_and_not_draining() -> None:
    agent = demo_agent()
    probe = AgentProbe(agent)
    assert probe.readiness().why == "agent a1 has not joined ['q', 'r'] yet (folding them up to the end of the " \
                                    "log, then AgentJoined)"
    agent.ready.set()
    assert probe.readiness() == Readiness(True, "agent a1 joined ['q', 'r'] and caught up",
                                          {"agent": "a1", "slots": {"q": 2, "r": 1}})
    agent.draining = True
    assert probe.readiness() == Readiness(False, "agent a1 is draining: it takes no new work")


async def test_agent_metrics_time_handlers_and_read_seats_and_reports() -> None:
    agent = demo_agent()
    probe = AgentProbe(agent)
    AgentProbe(agent)  # a second probe does not time the handlers twice
    task = type("Ctx", (), {"queue": "q", "task_type": "ok"})()
    assert await agent.handlers["ok"](task) == 1
    with pytest.raises(ValueError):
        await agent.handlers["boom"](type("Ctx", (), {"queue": "r", "task_type": "boom"})())
    agent.stats.update({"completed": 1, "failed": 1, "heartbeats": 7})
    agent._attempts[AttemptKey("q", "t1", 1)] = object()  # one attempt running in q
    seen = metrics(probe.registry)
    count = "taskfold_agent_attempt_duration_seconds_count"
    assert seen[(count, (("outcome", "completed"), ("queue", "q"), ("task_type", "ok")))] == 1
    assert seen[(count, (("outcome", "failed"), ("queue", "r"), ("task_type", "boom")))] == 1
    assert seen[("taskfold_agent_slots", (("agent", "a1"), ("queue", "q")))] == 2
    assert seen[("taskfold_agent_running_attempts", (("agent", "a1"), ("queue", "q")))] == 1
    assert seen[("taskfold_agent_running_attempts", (("agent", "a1"), ("queue", "r")))] == 0
    assert seen[("taskfold_agent_held_attempts", (("agent", "a1"), ("queue", "q")))] == 0
    assert seen[("taskfold_agent_attempts_total", (("agent", "a1"), ("outcome", "completed")))] == 1
    assert seen[("taskfold_agent_heartbeats_total", ())] == 7

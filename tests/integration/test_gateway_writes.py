"""Writes through the gateway on the real broker: read-your-write verdicts (accepted, duplicate,
rejected), field-level 422s that append nothing, and 503s that never hang.

The app runs in-process over httpx's ASGI transport with a real runtime: the events are
appended to the broker and judged by the gateway's own projection (no scheduler needed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from projections.gateway.app import GatewayConfig, create_app, open_runtime
from projections.gateway.auth import Auth, parse_env
from projections.gateway.deps import Runtime
from projections.live import LiveProjection
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log.batches import read_batches
from taskfold.log.eventlog import EventLog

TOKENS = "sub-tok:submitter,adm-tok:admin,aud-tok:auditor"
SUBMITTER = {"Authorization": "Bearer sub-tok"}
ADMIN = {"Authorization": "Bearer adm-tok"}


def config_for(broker: Broker, topics: TopicNames, store: Path, **options) -> GatewayConfig:
    return GatewayConfig(store=store, auth=Auth(parse_env(TOKENS)), bootstrap=broker.bootstrap, topics=topics,
                         tansu=broker.is_tansu, **options)


@asynccontextmanager
async def serving(config: GatewayConfig, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=SUBMITTER) as client:
            yield client


@pytest.fixture
async def gateway(broker: Broker, topics: TopicNames, tmp_path: Path):
    """(client, runtime) of a live gateway over fresh topics."""
    config = config_for(broker, topics, tmp_path / "store", batch_max=5)
    async with open_runtime(config) as rt, serving(config, rt) as client:
        yield client, rt


async def records(broker: Broker, topics: TopicNames) -> int:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        return sum((await log.end_offsets()).values())


async def test_accepted_submit_is_201_and_already_applied(gateway) -> None:
    client, rt = gateway
    response = await client.post("/v1/tasks", json={"queue": "emails", "task_type": "send", "task_id": "t-1",
                                                    "payload": {"to": "ada@example.com"}, "priority": "high",
                                                    "labels": {"region": "eu"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["verdict"] == "accepted" and body["duplicate"] is False
    task = body["task"]
    assert (task["task_id"], task["state"], task["priority"]) == ("t-1", "queued", "high")
    assert task["payload"] == {"to": "ada@example.com"} and task["labels"] == {"region": "eu"}
    partition, offset = map(int, body["position"].split(":"))
    # Read-your-write: when the answer arrives, this gateway's projection holds the task.
    assert rt.live.projector.next_offset("events", partition) > offset
    assert rt.live.projector.queue("emails").state.task("t-1").state.value == "queued"


async def test_accepted_submit_is_visible_to_a_get_at_once(gateway) -> None:
    pytest.importorskip("projections.gateway.reads")
    client, _ = gateway
    created = await client.post("/v1/tasks", json={"queue": "emails", "task_type": "send"})
    assert created.status_code == 201, created.text
    task_id = created.json()["task"]["task_id"]
    read = await client.get(f"/v1/tasks/{task_id}")
    assert read.status_code == 200, read.text
    shown = read.json().get("task", read.json())
    assert shown["task_id"] == task_id and shown["state"] == "queued"


async def test_same_idempotency_key_returns_the_original_task(gateway) -> None:
    client, _ = gateway
    first = await client.post("/v1/tasks", json={"queue": "emails", "task_type": "send", "task_id": "w-1"},
                              headers={"Idempotency-Key": "signup-42"})
    again = await client.post("/v1/tasks", json={"queue": "emails", "task_type": "send", "task_id": "w-1"},
                              headers={"Idempotency-Key": "signup-42"})
    by_body = await client.post("/v1/tasks", json={"queue": "emails", "task_type": "send",
                                                   "idempotency_key": "signup-42"})
    assert first.status_code == 201
    for retry in (again, by_body):
        assert retry.status_code == 200, retry.text
        body = retry.json()
        assert body["duplicate"] is True and body["verdict"] == "duplicate"
        assert body["task"]["task_id"] == "w-1"
        assert "signup-42" in body["reason"]


async def test_two_different_idempotency_keys_are_refused(gateway, broker, topics) -> None:
    client, _ = gateway
    response = await client.post("/v1/tasks", json={"queue": "q", "task_type": "t", "idempotency_key": "a"},
                                 headers={"Idempotency-Key": "b"})
    assert response.status_code == 422
    assert response.json()["error"]["problems"][0]["field"] == "idempotency_key"
    assert await records(broker, topics) == 0


async def test_rejections_name_the_fold_reason(gateway) -> None:
    client, _ = gateway
    assert (await client.post("/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "a"})).status_code == 201

    resubmit = await client.post("/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "a"})
    assert resubmit.status_code == 409
    assert resubmit.json()["error"]["message"] == "rejected: task a was already submitted"

    cancel = await client.post("/v1/tasks/a/cancel", json={"reason": "no longer needed"})
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["task"]["state"] == "cancelled"
    again = await client.post("/v1/tasks/a/cancel")
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "rejected" and "already cancelled" in error["message"]
    assert ":" in error["position"]

    redrive = await client.post("/v1/dead-letters/a/redrive", json={"extra_attempts": 2}, headers=ADMIN)
    assert redrive.status_code == 409
    assert "only dead-lettered tasks can be redriven" in redrive.json()["error"]["message"]

    itself = await client.post("/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "b",
                                                  "depends_on": ["b"]})
    assert itself.status_code == 422
    assert itself.json()["error"]["problems"] == [{"field": "depends_on", "reason": "task b cannot depend on itself"}]


async def test_cancel_and_redrive_of_unknown_tasks_are_404_and_redrive_is_admin_only(gateway) -> None:
    client, _ = gateway
    assert (await client.post("/v1/tasks/ghost/cancel")).status_code == 404
    assert (await client.post("/v1/dead-letters/ghost/redrive", headers=ADMIN)).status_code == 404
    denied = await client.post("/v1/dead-letters/ghost/redrive")
    assert denied.status_code == 403 and "admin" in denied.json()["error"]["message"]


async def test_a_task_id_in_two_queues_needs_the_queue_named(gateway) -> None:
    client, _ = gateway
    for queue in ("q1", "q2"):
        assert (await client.post("/v1/tasks", json={"queue": queue, "task_type": "t", "task_id": "same"})).status_code == 201
    ambiguous = await client.post("/v1/tasks/same/cancel")
    assert ambiguous.status_code == 409 and "q1, q2" in ambiguous.json()["error"]["message"]
    named = await client.post("/v1/tasks/same/cancel", params={"queue": "q2"})
    assert named.status_code == 200 and named.json()["task"]["queue"] == "q2"


@pytest.mark.parametrize("body, field", [
    ({"queue": "emails", "task_type": "send", "priority": "urgent"}, "priority"),
    ({"queue": "emails", "task_type": "send", "timeout_ms": -5}, "timeout_ms"),
    ({"queue": "bad queue!", "task_type": "send"}, "queue"),
    ({"queue": "emails"}, "task_type"),
    ({"queue": "emails", "task_type": "send", "backoff": {"multiplier": 0.1}}, "backoff.multiplier"),
    ({"queue": "emails", "task_type": "send", "colour": "red"}, "colour"),
    ({"queue": "emails", "task_type": "send", "labels": {"k": 1}}, "labels.k"),
])
async def test_bad_body_is_422_naming_the_field_and_appends_nothing(gateway, broker, topics, body, field) -> None:
    client, _ = gateway
    response = await client.post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    assert field in [p["field"] for p in response.json()["error"]["problems"]]
    assert await records(broker, topics) == 0


async def test_malformed_json_is_400_naming_where(gateway, broker, topics) -> None:
    client, _ = gateway
    response = await client.post("/v1/tasks", content=b'{"queue": ', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["problems"] == [
        {"field": "body", "reason": "invalid JSON at line 1 column 11: Expecting value"}]
    assert await records(broker, topics) == 0


async def test_batch_with_one_bad_item_appends_nothing(gateway, broker, topics) -> None:
    client, _ = gateway
    tasks = [{"queue": "q", "task_type": "t", "task_id": f"b-{i}"} for i in range(4)]
    tasks[2]["priority"] = "urgent"
    response = await client.post("/v1/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 422
    assert [p["field"] for p in response.json()["error"]["problems"]] == ["tasks.2.priority"]
    too_many = await client.post("/v1/tasks/batch", json={"tasks": [{"queue": "q", "task_type": "t"}] * 6})
    assert too_many.status_code == 422 and "at most 5" in too_many.json()["error"]["message"]
    assert await records(broker, topics) == 0


async def test_batch_answers_a_verdict_per_task(gateway) -> None:
    client, _ = gateway
    assert (await client.post("/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "old"})).status_code == 201
    tasks = [{"queue": "q", "task_type": "t", "task_id": "n-1"}, {"queue": "q", "task_type": "t", "task_id": "old"},
             {"queue": "r", "task_type": "t", "task_id": "n-2", "idempotency_key": "k"},
             {"queue": "r", "task_type": "t", "idempotency_key": "k"}]  # the same request: a duplicate
    response = await client.post("/v1/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["index"], r["status"], r["verdict"]) for r in results] == [
        (0, 201, "accepted"), (1, 409, "rejected"), (2, 201, "accepted"), (3, 200, "duplicate")]
    assert "already submitted" in results[1]["reason"]
    assert results[3]["task"]["task_id"] == "n-2"


async def test_write_timeout_is_503_with_retry_after_and_the_event_is_appended(broker, topics, tmp_path) -> None:
    config = config_for(broker, topics, tmp_path / "store", write_timeout_s=0.3)
    paused = LiveProjection(broker.bootstrap, topics, tmp_path / "store", [], tansu=broker.is_tansu)  # never started
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        rt = Runtime(live=paused, log=log, auth=config.auth, write_timeout_s=config.write_timeout_s)
        try:
            async with serving(config, rt) as client:
                response = await client.post("/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "slow"})
        finally:
            await paused.stop()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    error = response.json()["error"]
    assert error["code"] == "write_pending"
    assert "was appended at" in error["message"] and "GET /v1/tasks/slow" in error["message"]
    assert error["task_ids"] == ["slow"]
    assert await records(broker, topics) == 1


class UnreachableLog:
    """A log whose broker went away: every append fails as aiokafka fails it."""

    def __init__(self, log: EventLog) -> None:
        self.topics = log.topics

    async def append(self, events):
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9)]")


async def test_broker_unreachable_on_append_is_503_with_the_cause(gateway) -> None:
    client, rt = gateway
    rt.log = UnreachableLog(rt.log)
    response = await client.post("/v1/tasks", json={"queue": "q", "task_type": "t"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "log_unavailable" and "KafkaConnectionError" in error["message"]
    assert response.headers["Retry-After"]


async def test_ops_endpoints(gateway) -> None:
    client, _ = gateway
    assert (await client.post("/v1/tasks", json={"queue": "q", "task_type": "t"})).status_code == 201
    anonymous = {"Authorization": ""}
    assert (await client.get("/healthz", headers=anonymous)).json() == {"status": "ok"}
    ready = await client.get("/readyz", headers=anonymous)
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    metrics = (await client.get("/metrics", headers=anonymous)).text
    assert "taskfold_projection_events_total 1.0" in metrics
    assert 'taskfold_projection_verdicts_total{outcome="accepted"} 1.0' in metrics
    assert 'taskfold_queue_tasks{queue="q",state="queued"} 1.0' in metrics
    assert 'taskfold_projection_lag_records{partition="0",topic="events"} 0.0' in metrics
    assert "taskfold_projection_poison_total 0.0" in metrics
    assert 'route="/v1/tasks",status="201"' in metrics


async def test_readyz_is_503_with_the_lag_until_caught_up(broker, topics, tmp_path) -> None:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        config = config_for(broker, topics, tmp_path / "store")
        behind = LiveProjection(broker.bootstrap, topics, tmp_path / "store", [], tansu=broker.is_tansu)
        behind.ends = {"events": {0: 3}}  # as if the log held 3 records at start that are not applied yet
        rt = Runtime(live=behind, log=log, auth=config.auth)
        try:
            async with serving(config, rt) as client:
                response = await client.get("/readyz")
        finally:
            await behind.stop()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert response.json()["error"]["lag"]["events"] == {"0": 3}


async def test_metrics_count_queue_depths_from_the_fold_without_a_queues_view(broker, topics, tmp_path) -> None:
    config = config_for(broker, topics, tmp_path / "store")
    async with open_runtime(config, views=[]) as rt, serving(config, rt) as client:
        for n in range(3):
            assert (await client.post("/v1/tasks", json={"queue": "bare", "task_type": "t"})).status_code == 201
        metrics = (await client.get("/metrics")).text
    assert 'taskfold_queue_tasks{queue="bare",state="queued"} 3.0' in metrics


async def test_concurrent_submits_share_one_append(gateway, broker: Broker, topics: TopicNames) -> None:
    # One produce per append window (taskfold.log.coalesce): a Tansu Fetch lists every batch.
    client, rt = gateway
    bodies = [{"queue": "emails", "task_type": "send", "task_id": f"c-{i}"} for i in range(8)]
    answers = await asyncio.gather(*(client.post("/v1/tasks", json=body) for body in bodies))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    partition = int(answers[0].json()["position"].split(":")[0])
    batches = await read_batches(broker.bootstrap, topics.events, partition)
    submits = [b for b in batches if "TaskSubmitted" in b.types]
    assert sum(b.size for b in submits) == 8 and len(submits) <= 2, [b.types for b in batches]
    assert rt.log.coalescer is not None and rt.log.coalescer.rounds <= 2

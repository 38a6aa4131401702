"""The write API says what happened (issue 10, items 7 and 1), on the real broker:
an idempotency key reused for a different request is a 409 naming the key and the original
task, with nothing appended; a dependency on an unknown task id is a 422 naming it, unless
the submitter says it may follow; the dependency options reach the log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.gateway import writes
from projections.gateway.app import open_runtime
from taskfold.core.reports import AttemptEnd, AttemptKey, Reporter
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import now_ms
from taskfold.core.events import TaskAssigned
from taskfold.log.eventlog import EventLog
from tests.integration.test_gateway_writes import ADMIN, config_for, records, serving


@pytest.fixture
async def gateway(broker: Broker, topics: TopicNames, tmp_path: Path):
    """(client, runtime) of a live gateway over fresh topics."""
    config = config_for(broker, topics, tmp_path / "store", batch_max=10)
    async with open_runtime(config) as rt, serving(config, rt) as client:
        yield client, rt


SIGNUP = {"queue": "emails", "task_type": "send", "payload": {"to": "ada@example.com"}, "priority": "high"}


async def test_same_key_same_request_is_the_duplicate_with_the_original(gateway) -> None:
    client, _ = gateway
    key = {"Idempotency-Key": "signup-42"}
    first = await client.post("/v1/tasks", json={**SIGNUP, "task_id": "welcome-1"}, headers=key)
    assert first.status_code == 201, first.text
    # The same fields, payload keys in another order, the task id left to default: the same request.
    again = await client.post("/v1/tasks", json={**SIGNUP, "payload": {"to": "ada@example.com"}}, headers=key)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True and again.json()["task"]["task_id"] == "welcome-1"


@pytest.mark.parametrize("change, differing", [
    ({"task_id": "welcome-2"}, "task_id"),
    ({"payload": {"to": "bob@example.com"}}, "payload"),
    ({"priority": "low"}, "priority"),
])
async def test_same_key_different_request_is_409_and_appends_nothing(gateway, broker, topics, change,
                                                                     differing) -> None:
    client, _ = gateway
    key = {"Idempotency-Key": "signup-42"}
    assert (await client.post("/v1/tasks", json={**SIGNUP, "task_id": "welcome-1"}, headers=key)).status_code == 201
    before = await records(broker, topics)
    response = await client.post("/v1/tasks", json={**SIGNUP, **change}, headers=key)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["idempotency_key"] == "signup-42" and error["task_id"] == "welcome-1"
    assert "'signup-42' was already used by task welcome-1" in error["message"] and differing in error["message"]
    assert "nothing was appended" in error["message"]
    assert error["problems"][0]["field"] == "idempotency_key"
    assert await records(broker, topics) == before


async def test_a_key_that_lands_concurrently_is_judged_by_the_fold_and_the_body(gateway, monkeypatch) -> None:
    client, _ = gateway
    key = {"Idempotency-Key": "race-1"}
    assert (await client.post("/v1/tasks", json={**SIGNUP, "task_id": "r-1"}, headers=key)).status_code == 201
    # As if the first submit had landed after this gateway looked: only the fold sees the key.
    monkeypatch.setattr(writes, "refuse_before_append", lambda *args, **kwargs: None)
    same = await client.post("/v1/tasks", json={**SIGNUP, "task_id": "r-1"}, headers=key)
    assert same.status_code == 200 and same.json()["task"]["task_id"] == "r-1"
    other = await client.post("/v1/tasks", json={**SIGNUP, "task_id": "r-2"}, headers=key)
    assert other.status_code == 409, other.text
    error = other.json()["error"]
    assert error["code"] == "idempotency_conflict" and error["task_id"] == "r-1" and ":" in error["position"]
    assert "appended but changed nothing" in error["message"]


async def test_batch_items_sharing_a_key_must_be_the_same_request(gateway, broker, topics) -> None:
    client, _ = gateway
    tasks = [{"queue": "r", "task_type": "t", "task_id": "n-1", "idempotency_key": "k"},
             {"queue": "r", "task_type": "t", "task_id": "n-2", "idempotency_key": "k"}]
    response = await client.post("/v1/tasks/batch", json={"tasks": tasks})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["problems"][0]["field"] == "tasks.1.idempotency_key"
    assert await records(broker, topics) == 0


async def test_unknown_dependency_is_422_naming_each_id_and_appends_nothing(gateway, broker, topics) -> None:
    client, _ = gateway
    assert (await client.post("/v1/tasks", json={"queue": "a", "task_type": "t", "task_id": "known"})).status_code == 201
    before = await records(broker, topics)
    response = await client.post("/v1/tasks", json={"queue": "b", "task_type": "t", "task_id": "x",
                                                    "depends_on": ["known", "ghost-2", "ghost-1"]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_dependency"
    [problem] = error["problems"]
    assert problem["field"] == "depends_on" and problem["reason"].startswith("unknown task id(s) ghost-1, ghost-2:")
    assert await records(broker, topics) == before
    batch = await client.post("/v1/tasks/batch", json={"tasks": [
        {"queue": "b", "task_type": "t", "task_id": "y", "depends_on": ["z"]},
        {"queue": "b", "task_type": "t", "task_id": "w", "depends_on": ["nobody"]},
        {"queue": "b", "task_type": "t", "task_id": "z"}]})
    assert batch.status_code == 422 and [p["field"] for p in batch.json()["error"]["problems"]] == ["tasks.1.depends_on"]
    assert await records(broker, topics) == before


async def test_dependencies_that_may_follow_and_known_ones_in_other_queues_are_accepted(gateway, broker,
                                                                                         topics) -> None:
    client, _ = gateway
    later = await client.post("/v1/tasks", json={"queue": "b", "task_type": "t", "task_id": "waits",
                                                 "depends_on": ["later"], "dependencies_may_follow": True,
                                                 "on_dependency_failure": "run"})
    assert later.status_code == 201, later.text
    assert later.json()["task"]["state"] == "blocked"
    assert (await client.post("/v1/tasks", json={"queue": "a", "task_type": "t", "task_id": "first"})).status_code == 201
    across = await client.post("/v1/tasks", json={"queue": "b", "task_type": "t", "depends_on": ["first"]})
    assert across.status_code == 201, across.text
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        submitted = {e.event.task_id: e.event async for e in log.read() if hasattr(e, "event")}
    assert submitted["waits"].dependencies_may_follow is True
    assert submitted["waits"].on_dependency_failure.value == "run"
    bad = await client.post("/v1/tasks", json={"queue": "b", "task_type": "t", "on_dependency_failure": "ignore"})
    assert bad.status_code == 422 and bad.json()["error"]["problems"][0]["field"] == "on_dependency_failure"


def dead_letter_events(queue: str, task_id: str) -> list:
    """An agent joins, takes attempt 1 and fails it for good: the task is dead-lettered."""
    reporter = Reporter("agent-x", actor="test")
    assign = TaskAssigned(event_id=f"assign-{task_id}", queue=queue, occurred_at=now_ms(), actor="test",
                          task_id=task_id, attempt=1, agent_id="agent-x", lease_ms=60_000, strategy="test")
    failed = reporter.outcome(AttemptKey(queue, task_id, 1), AttemptEnd("failed", error="boom", retryable=False))
    return [reporter.joined(queue, 1, [], {}), assign, failed]


async def test_a_retry_after_a_redrive_is_still_the_same_request(gateway) -> None:
    client, rt = gateway
    body, key = {"queue": "jobs", "task_type": "t", "task_id": "j-1", "max_attempts": 1}, {"Idempotency-Key": "j"}
    assert (await client.post("/v1/tasks", json=body, headers=key)).status_code == 201
    for position in await rt.log.append(dead_letter_events("jobs", "j-1")):
        await rt.live.wait_applied(position.partition, position.offset, 10)
    redrive = await client.post("/v1/dead-letters/j-1/redrive", json={"extra_attempts": 2}, headers=ADMIN)
    assert redrive.status_code == 200 and redrive.json()["task"]["max_attempts"] == 3, redrive.text
    again = await client.post("/v1/tasks", json=body, headers=key)
    assert again.status_code == 200, again.text  # the request asked for 1 attempt, as the first did
    assert again.json()["duplicate"] is True

"""Workflows through the gateway on the real broker: submit whole (nodes in two queues), a
second submit is all duplicates, a bad DAG is a 422 naming the nodes with nothing appended,
GET shows the nodes, and the workflow's SSE stream resumes from its cursor."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from projections.gateway.app import open_runtime
from projections.gateway.workflows import parse_cursor, wakeups
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from tests.integration.test_gateway_writes import config_for, records, serving

SPEC = {"workflow_id": "wf-http", "queue": "etl", "nodes": [
    {"name": "extract", "task_type": "extract", "payload": {"source": "s3://bucket/day"}},
    {"name": "transform", "task_type": "transform", "queue": "etl-gpu", "depends_on": ["extract"]},
    {"name": "load", "task_type": "load", "depends_on": ["transform"]}]}


def sse_ids(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line.startswith("id: ")]


@pytest.fixture
async def gateway(broker: Broker, topics: TopicNames, tmp_path: Path):
    config = config_for(broker, topics, tmp_path / "store")
    async with open_runtime(config) as rt, serving(config, rt) as client:
        yield client, rt


async def test_a_workflow_is_submitted_whole_and_again_as_duplicates(gateway, broker, topics) -> None:
    client, _ = gateway
    first = await client.post("/v1/workflows", json=SPEC)
    assert first.status_code == 201, first.text
    nodes = {n["node"]: n for n in first.json()["nodes"]}
    assert [n["verdict"] for n in first.json()["nodes"]] == ["accepted"] * 3
    assert nodes["transform"]["queue"] == "etl-gpu"
    again = await client.post("/v1/workflows", json=SPEC)
    assert again.status_code == 200, again.text
    assert [n["verdict"] for n in again.json()["nodes"]] == ["duplicate"] * 3
    view = (await client.get("/v1/workflows/wf-http")).json()
    assert view["state"] == "pending" and view["node_count"] == 3
    assert {n["node"]: (n["state"], n["depends_on"]) for n in view["nodes"]} == {
        "extract": ("queued", []), "transform": ("blocked", ["extract"]), "load": ("blocked", ["transform"])}
    assert (await client.get("/v1/workflows/nope")).status_code == 404


async def test_a_changed_node_under_the_same_id_is_409_and_appends_nothing(gateway, broker, topics) -> None:
    client, _ = gateway
    assert (await client.post("/v1/workflows", json=SPEC)).status_code == 201
    before = await records(broker, topics)
    changed = {**SPEC, "nodes": [{**SPEC["nodes"][0], "priority": "critical"}, *SPEC["nodes"][1:]]}
    response = await client.post("/v1/workflows", json=changed)
    assert response.status_code == 409, response.text
    assert "workflow:wf-http:extract" in response.text
    assert await records(broker, topics) == before


async def test_cycles_unknown_references_and_duplicate_names_are_422_naming_the_nodes(gateway, broker,
                                                                                         topics) -> None:
    client, _ = gateway
    before = await records(broker, topics)
    cycle = {**SPEC, "nodes": [{**SPEC["nodes"][0], "depends_on": ["load"]}, *SPEC["nodes"][1:]]}
    response = await client.post("/v1/workflows", json=cycle)
    assert response.status_code == 422, response.text
    assert "dependency cycle: extract -> load -> transform -> extract" in response.json()["error"]["message"]
    broken = {**SPEC, "nodes": [*SPEC["nodes"], {"name": "load", "task_type": "x", "depends_on": ["ghost"]}]}
    problems = (await client.post("/v1/workflows", json=broken)).json()["error"]["problems"]
    assert {"field": "nodes.3.name", "reason": "node 'load' appears twice (nodes.2 and nodes.3)"} in problems
    assert {"field": "nodes.3.depends_on", "reason": "node 'load' depends on unknown node 'ghost'"} in problems
    assert await records(broker, topics) == before


async def test_the_stream_sends_node_changes_and_resumes_after_its_cursor(gateway) -> None:
    client, _ = gateway
    assert (await client.post("/v1/workflows", json=SPEC)).status_code == 201
    response = await client.get("/v1/workflows/wf-http/events", params={"follow": "false"})
    assert response.status_code == 200, response.text
    ids = sse_ids(response.text)
    assert len(ids) == 3  # each node admitted: queued or blocked
    assert len(parse_cursor(ids[-1])) == 2  # two queues: a cursor over two partitions
    rest = await client.get("/v1/workflows/wf-http/events", params={"follow": "false"},
                            headers={"Last-Event-ID": ids[0]})
    assert len(sse_ids(rest.text)) == 2
    bad = await client.get("/v1/workflows/wf-http/events", headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 400


async def test_a_live_stream_is_woken_by_the_change_and_ends_when_every_node_ended(gateway) -> None:
    client, rt = gateway
    single = {"workflow_id": "wf-live", "queue": "etl", "nodes": [
        {"name": "a", "task_type": "t"}, {"name": "b", "task_type": "t", "depends_on": ["a"]}]}
    created = (await client.post("/v1/workflows", json=single)).json()
    root = created["nodes"][0]["task_id"]
    rt.hub.heartbeat_s = 120.0  # a stream not woken by the change would wait this long
    following = asyncio.create_task(client.get("/v1/workflows/wf-live/events"))
    deadline = time.monotonic() + 10
    while "wf-live" not in wakeups(rt).waiting:  # the stream is waiting for changes
        assert time.monotonic() < deadline, "the stream never started waiting"
        await asyncio.sleep(0.01)
    assert (await client.post(f"/v1/tasks/{root}/cancel", json={"reason": "not today"})).status_code == 200
    response = await asyncio.wait_for(following, 10)
    states = [json.loads(line[6:])["state"] for line in response.text.splitlines() if line.startswith("data: {\"pos")]
    assert states[-2:] == ["cancelled", "cancelled"]
    assert response.text.rstrip().endswith('data: {"state": "failed"}')
    assert wakeups(rt).waiting == {}  # the ended stream let go of its flag


async def test_node_names_may_hold_colons(gateway) -> None:
    client, _ = gateway
    spec = {"workflow_id": "wf:colons", "queue": "etl", "nodes": [
        {"name": "fetch:eu", "task_type": "t"}, {"name": "merge:all", "task_type": "t", "depends_on": ["fetch:eu"]}]}
    response = await client.post("/v1/workflows", json=spec)
    assert [n["node"] for n in response.json()["nodes"]] == ["fetch:eu", "merge:all"]
    view = (await client.get("/v1/workflows/wf:colons")).json()
    assert {n["node"]: n["depends_on"] for n in view["nodes"]} == {"fetch:eu": [], "merge:all": ["fetch:eu"]}

"""The gateway refuses a payload or a result over TASKFOLD_MAX_PAYLOAD_BYTES with a 422 naming
the field, its size and the limit, and appends nothing; at the limit it accepts (issue 10, item 4).

Same setup as test_gateway_writes.py: the app in-process over httpx's ASGI transport, a real
runtime on the real broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from projections.gateway.app import GatewayConfig, create_app, open_runtime
from projections.gateway.auth import Auth, parse_env
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import payload_limit
from taskfold.log.eventlog import EventLog

pytestmark = pytest.mark.integration

TOKENS = "sub-tok:submitter,agent-tok:agent:http-1"
SUBMITTER = {"Authorization": "Bearer sub-tok"}
AGENT = {"Authorization": "Bearer agent-tok"}


@pytest.fixture
async def client(broker: Broker, topics: TopicNames, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = GatewayConfig(store=tmp_path / "store", auth=Auth(parse_env(TOKENS)), bootstrap=broker.bootstrap,
                           topics=topics, tansu=broker.is_tansu)
    async with open_runtime(config) as rt:
        app = create_app(config, runtime=rt)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway", headers=SUBMITTER) as c:
                yield c


async def records(broker: Broker, topics: TopicNames) -> int:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        return sum((await log.end_offsets()).values())


def value_of(size: int) -> str:
    """A JSON value whose compact text (what the gateway appends) is exactly `size` bytes."""
    return "x" * (size - 2)


def over(field: str, size: int) -> str:
    return f"{field} is {size:,} bytes, over the limit of {payload_limit():,} (TASKFOLD_MAX_PAYLOAD_BYTES)"


@pytest.mark.parametrize("size", [payload_limit() - 1, payload_limit()])
async def test_a_payload_at_or_just_under_the_limit_is_accepted(client, size: int) -> None:
    response = await client.post("/v1/tasks", json={"queue": "files", "task_type": "t", "payload": value_of(size)})
    assert response.status_code == 201, response.text[:300]
    assert len(response.json()["task"]["payload"]) == size - 2


async def test_a_payload_just_over_the_limit_is_422_naming_it_and_appends_nothing(client, broker, topics) -> None:
    size = payload_limit() + 1
    response = await client.post("/v1/tasks", json={"queue": "files", "task_type": "t", "payload": value_of(size)})
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["problems"] == [{"field": "payload", "reason": over("payload", size)}]
    batch = await client.post("/v1/tasks/batch", json={"tasks": [
        {"queue": "files", "task_type": "t"}, {"queue": "files", "task_type": "t", "payload": value_of(size)}]})
    assert batch.status_code == 422
    assert batch.json()["error"]["problems"] == [{"field": "tasks.1.payload", "reason": over("payload", size)}]
    assert await records(broker, topics) == 0


async def test_an_http_agents_result_over_the_limit_is_422_naming_it(client, broker, topics) -> None:
    size = payload_limit() + 1
    response = await client.post("/v1/agents/http-1/tasks/t-1/completed", headers=AGENT,
                                 json={"attempt": 1, "result": value_of(size)})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["error"]["problems"] == [{"field": "result", "reason": over("result", size)}]
    assert await records(broker, topics) == 0

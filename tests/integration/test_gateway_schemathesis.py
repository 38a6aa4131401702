"""Schemathesis against the gateway's own OpenAPI document: no generated request gets a 5xx.

The gateway runs for real (uvicorn on a free loopback port, auth on, a live projection on the
real broker); every operation in /openapi.json gets a bounded number of generated requests
sent with an admin token. Streams (text/event-stream) are left out: a stream that follows a
queue never ends, so it cannot be a bounded example; long polls are cut to a short wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from projections.gateway.app import GatewayConfig
from projections.gateway.auth import Auth, parse_env
from projections.gateway.run import Gateway, bind
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames

EXAMPLES = 10  # per operation: about 300 requests, 15-30 s on two cores
ADMIN = {"Authorization": "Bearer adm-tok"}


@pytest.fixture
def gateway_url(broker: Broker, topics: TopicNames, tmp_path: Path) -> Iterator[str]:
    config = GatewayConfig(store=tmp_path / "store", auth=Auth(parse_env("adm-tok:admin")),
                           bootstrap=broker.bootstrap, topics=topics, tansu=broker.is_tansu,
                           write_timeout_s=5.0, batch_max=50)
    ready = threading.Event()
    gateway = Gateway(config, bind("127.0.0.1", 0), lambda url: ready.set())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(gateway.serve())
        except BaseException as exc:  # reported below instead of dying silently in the thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "the gateway did not start within 60 s"
        assert not failure, failure
        yield gateway.url
    finally:
        gateway.stop()
        thread.join(30)
        gateway.sock.close()
    assert not thread.is_alive(), "the gateway did not stop"


def _streams(operation) -> bool:
    responses = operation.definition.raw.get("responses", {})
    return any("text/event-stream" in (r.get("content") or {}) for r in responses.values() if isinstance(r, dict))


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # from inside schemathesis
def test_no_generated_request_gets_a_5xx(gateway_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/tasks" and op.method.upper() == "POST" for op in operations)
    session = requests.Session()
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    tried = 0
    for operation in operations:
        if _streams(operation):
            continue
        tried += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            if isinstance(case.query, dict) and "wait" in case.query:
                case.query["wait"] = 0.05
            response = case.call(base_url=gateway_url, session=session, headers=ADMIN, timeout=30)
            statuses[response.status_code] += 1
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}")

        try:
            no_server_error()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0] if str(exc) else repr(exc))
    assert tried >= 4
    assert not failures, "\n".join(failures)
    assert statuses[201] > 0 and statuses[422] > 0, statuses  # valid submits were generated, and invalid ones

"""The client pieces that need no broker: request validation, the gateway's errors as client
exceptions, the SSE parser, stream cursors, and the blocking Client inside a running loop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from taskfold.clients import AsyncClient, Client, Duplicate, NotFound, Refused, TimedOut, Unavailable
from taskfold.clients.asyncclient import _validated
from taskfold.clients.http import _error, _messages
from taskfold.clients.kafkastream import Cursor
from taskfold.clients.verdicts import rejection


def error(status: int, code: str, message: str, problems=(), **extra) -> httpx.Response:
    body = {"error": {"code": code, "message": message,
                      "problems": [{"field": f, "reason": r} for f, r in problems], **extra}}
    return httpx.Response(status, json=body)


def test_bad_fields_are_refused_by_name_before_any_transport() -> None:
    with pytest.raises(Refused) as caught:
        _validated([{"queue": "q", "task_type": "t", "priority": "urgent", "max_attempts": 0}], None)
    assert sorted(caught.value.fields) == ["max_attempts", "priority"] and caught.value.position is None
    with pytest.raises(Refused) as batch:
        _validated([{"queue": "q", "task_type": "t"}, {"queue": "bad queue!", "task_type": "t"}], None)
    assert batch.value.fields == ["tasks.1.queue"]
    with pytest.raises(Refused) as payload:
        _validated([{"queue": "q", "task_type": "t", "payload": float("nan")}], None)
    assert payload.value.fields == ["payload"]
    with pytest.raises(Refused, match="task_type"):
        _validated([{"queue": "q"}], None)


def test_gateway_errors_become_client_errors() -> None:
    assert isinstance(_error(error(404, "not_found", "no task x")), NotFound)
    conflict = _error(error(409, "idempotency_conflict", "idempotency key 'k' was already used by task t-1 ...",
                            [("idempotency_key", "...")], idempotency_key="k", task_id="t-1"))
    assert isinstance(conflict, Duplicate) and conflict.task_id == "t-1"
    taken = _error(error(409, "rejected", "rejected: task t-2 was already submitted", position="1:4"))
    assert isinstance(taken, Duplicate) and (taken.task_id, taken.position) == ("t-2", "1:4")
    field = _error(error(422, "rejected", "rejected: depends_on: task a cannot depend on itself", position="0:1"))
    assert type(field) is Refused and field.problems == [("depends_on", "task a cannot depend on itself")]
    invalid = _error(error(422, "invalid_request", "the request is not valid: priority", [("priority", "bad")]))
    assert type(invalid) is Refused and invalid.fields == ["priority"] and invalid.position is None
    pending = _error(error(503, "write_pending", "the event was appended at 0:3, but ...", task_ids=["t-3"]))
    assert isinstance(pending, TimedOut) and pending.task_id == "t-3"
    assert isinstance(_error(error(503, "log_unavailable", "the log did not confirm")), Unavailable)
    assert _error(error(401, "unauthenticated", "no token")).fields == ["token"]
    assert isinstance(_error(httpx.Response(502, text="<html>bad gateway</html>")), Unavailable)


def test_a_rejection_names_its_field_only_when_it_is_one() -> None:
    assert rejection("task 7 is already completed").problems == []
    assert rejection("payload: too big").problems == [("payload", "too big")]


async def test_server_sent_events_parse_into_items() -> None:
    text = ("event: TaskSubmitted\ndata: " + json.dumps({"position": "1:2", "event": {"type": "TaskSubmitted"},
                                                          "verdict": {"outcome": "accepted"}}) + "\nid: 1:2\n\n"
            ": keep-alive\n\n"
            "event: progress\ndata: " + json.dumps({"position": "1:0", "chunk": {"content": "hi"}}) + "\nid: 1:2.0\n\n"
            'event: end\ndata: {"reason":"terminal","state":"completed"}\n\n')

    async def lines():
        for line in text.split("\n"):
            yield line

    items = [item async for item in _messages(lines())]
    assert [(i.kind, i.cursor) for i in items] == [("event", "1:2"), ("progress", "1:2.0"), ("end", None)]
    assert items[0].verdict.outcome == "accepted" and items[1].chunk == {"content": "hi"}
    assert items[2].state.value == "completed"


def test_cursors_are_the_gateways_sse_ids() -> None:
    assert str(Cursor.parse("3:17", 3)) == "3:17" and str(Cursor.parse("3:17.4", 3)) == "3:17.4"
    with pytest.raises(Refused) as wrong:
        Cursor.parse("2:17", 3)
    assert wrong.value.fields == ["after"] and "partition 2" in str(wrong.value)
    with pytest.raises(Refused, match="not a stream cursor"):
        Cursor.parse("17", 3)


def gateway(request: httpx.Request) -> httpx.Response:
    """A stand-in for the gateway's task route (the broker-backed runs are in tests/integration)."""
    if request.url.path == "/v1/tasks/t-1":
        assert request.headers["authorization"] == "Bearer tok"
        return httpx.Response(200, json={"task_id": "t-1", "queue": "q", "task_type": "t", "state": "completed",
                                         "priority": "medium", "result": {"ok": True}, "new_field": 1})
    return httpx.Response(404, json={"error": {"code": "not_found", "message": "unknown task x", "problems": []}})


async def test_the_blocking_client_works_inside_a_running_loop() -> None:
    # As in Jupyter, where the cell's code runs while an event loop is running in this thread.
    assert asyncio.get_running_loop().is_running()
    with Client(AsyncClient.http("http://gateway", "tok", transport=httpx.MockTransport(gateway))) as client:
        task = client.get("t-1")
        assert (task.state.value, task.result, task.finished) == ("completed", {"ok": True}, True)
        with pytest.raises(NotFound, match="unknown task x"):
            client.get("x")


def test_import_taskfold_stays_light() -> None:
    code = ("import sys, taskfold; loaded = [m for m in ('aiokafka', 'httpx', 'faust', 'taskfold.clients') "
            "if m in sys.modules]; print(loaded); taskfold.Client; print('aiokafka' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "False"]

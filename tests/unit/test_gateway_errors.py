"""The gateway's error answers: one body shape, field paths, 413 before parsing, 500 without a trace."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from projections.gateway import errors


class Item(BaseModel):
    name: str
    count: int


class Order(BaseModel):
    items: list[Item]


def app_with_guard(limit: int = 2048) -> tuple[FastAPI, list[bytes]]:
    app = FastAPI()
    errors.install(app)
    seen: list[bytes] = []

    @app.post("/orders")
    async def orders(order: Order) -> dict:
        return {"items": len(order.items)}

    @app.post("/raw")
    async def raw(request: Request) -> dict:
        seen.append(await request.body())
        return {"bytes": len(seen[-1])}

    @app.get("/conflict")
    async def conflict() -> dict:
        raise errors.ApiError(409, "rejected", "task t was already submitted", [("task_id", "taken")],
                              headers={"X-Why": "fold"})

    @app.get("/crash")
    async def crash() -> dict:
        raise RuntimeError("secret internal detail")

    app.add_middleware(errors.Guard, max_body_bytes=limit)
    return app, seen


async def send(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.request(method, path, **kwargs)


async def test_api_error_has_the_one_body_shape_and_its_headers() -> None:
    app, _ = app_with_guard()
    response = await send(app, "GET", "/conflict")
    assert response.status_code == 409
    assert response.headers["X-Why"] == "fold"
    assert response.json() == {"error": {"code": "rejected", "message": "task t was already submitted",
                                         "problems": [{"field": "task_id", "reason": "taken"}]}}


async def test_validation_errors_name_dotted_fields() -> None:
    app, _ = app_with_guard()
    response = await send(app, "POST", "/orders", json={"items": [{"name": "a", "count": 1}, {"name": "b"}]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["problems"] == [{"field": "items.1.count", "reason": "Field required"}]


async def test_unknown_routes_and_methods_use_the_body_too() -> None:
    app, _ = app_with_guard()
    missing = await send(app, "GET", "/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = await send(app, "GET", "/orders")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_unexpected_exception_is_500_with_an_incident_id_and_no_trace(caplog) -> None:
    app, _ = app_with_guard()
    with caplog.at_level(logging.ERROR, logger="taskfold.gateway"):
        response = await send(app, "GET", "/crash")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert error["incident"] in caplog.text and "secret internal detail" in caplog.text


async def test_body_over_the_limit_is_413_before_the_route_reads_it() -> None:
    app, seen = app_with_guard(limit=2048)
    response = await send(app, "POST", "/raw", content=b"x" * 4096)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert seen == []
    assert (await send(app, "POST", "/raw", content=b"x" * 2048)).json() == {"bytes": 2048}


async def test_chunked_body_over_the_limit_is_413_too() -> None:
    app, seen = app_with_guard(limit=2048)

    async def chunks():
        for _ in range(8):
            yield b"y" * 1024

    response = await send(app, "POST", "/raw", content=chunks())
    assert response.status_code == 413
    assert seen == []


@pytest.mark.parametrize("loc, prefix, expected", [
    (("body", "tasks", 3, "priority"), "", "tasks.3.priority"),
    (("query", "limit"), "", "query.limit"),
    (("body",), "", "(body)"),
    (("priority",), "tasks.2.", "tasks.2.priority"),
    (("body",), "tasks.2.", "tasks.2"),
])
def test_field_paths(loc, prefix, expected) -> None:
    assert errors.validation_problems([{"loc": loc, "msg": "bad"}], prefix) == [(expected, "bad")]

"""What the gateway answers to bodies it cannot take: malformed JSON names line and column,
a chunked body over the limit is a 413 on a validated route too, a body that is not JSON is a 415."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from projections.gateway import errors


class Order(BaseModel):
    name: str
    count: int = 1


def gateway_like(limit: int = 2048) -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/orders")
    async def orders(order: Order) -> dict:
        return {"name": order.name}

    @app.post("/poke")
    async def poke(order: Order | None = None) -> dict:
        return {"body": order is not None}

    app.add_middleware(errors.JsonBodies)
    app.add_middleware(errors.Guard, max_body_bytes=limit)
    return app


async def post(path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_like()), base_url="http://gw") as client:
        return await client.post(path, **kwargs)


JSON = {"content-type": "application/json"}


async def test_malformed_json_names_line_and_column() -> None:
    response = await post("/orders", content=b'{"name": "a",\n  "count": oops}', headers=JSON)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    reason = "invalid JSON at line 2 column 12: Expecting value"
    assert error["problems"] == [{"field": "body", "reason": reason}]
    assert reason in error["message"]


async def test_chunked_body_over_the_limit_is_413_on_a_validated_route() -> None:
    async def chunks():
        yield b'{"name": "'
        for _ in range(8):
            yield b"y" * 1024
        yield b'"}'

    response = await post("/orders", content=chunks(), headers=JSON)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_body_without_json_content_type_is_415_naming_the_type() -> None:
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
        response = await post("/orders", content=b'{"name": "a"}', headers=headers)
        assert response.status_code == 415, (headers, response.text)
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
        assert error["problems"][0]["field"] == "content-type"


async def test_json_types_and_empty_bodies_pass() -> None:
    assert (await post("/orders", json={"name": "a"})).json() == {"name": "a"}
    typed = await post("/orders", content=b'{"name": "b"}', headers={"content-type": "application/merge+json"})
    assert typed.status_code == 200, typed.text
    charset = await post("/orders", content=b'{"name": "c"}', headers={"content-type": "application/json; charset=utf-8"})
    assert charset.status_code == 200, charset.text
    assert (await post("/poke")).json() == {"body": False}  # a POST with no body needs no Content-Type

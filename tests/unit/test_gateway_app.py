"""The app mounts routers with include_router, and a router's own lifespan runs inside the
app's: the streams router mounts the SSE hub once the runtime is there, and ends it at shutdown."""

from __future__ import annotations

from types import SimpleNamespace

from projections.gateway import ops, reads, sse
from projections.gateway.app import ROUTERS, create_app
from projections.gateway.auth import Auth
from projections.gateway.deps import Runtime


def runtime() -> Runtime:
    live = SimpleNamespace(store=object(), projector=None)  # a prebuilt store: no projector to listen to
    return Runtime(live=live, log=None, auth=Auth.disabled())  # type: ignore[arg-type]


async def test_the_streams_router_mounts_the_hub_for_the_apps_lifetime() -> None:
    rt = runtime()
    app = create_app(runtime=rt)
    async with app.router.lifespan_context(app):
        assert rt.hub is not None and not rt.hub.closed and rt.hub.store is rt.live.store
    assert rt.hub.closed


async def test_without_the_streams_router_there_is_no_hub() -> None:
    rt = runtime()
    app = create_app(runtime=rt, routers=(reads.router, ops.router))
    async with app.router.lifespan_context(app):
        assert rt.hub is None
    paths = set(app.openapi()["paths"])
    assert "/v1/tasks/{task_id}" in paths and "/v1/tasks/{task_id}/events" not in paths


def test_every_router_is_mounted_by_default() -> None:
    assert sse.router in ROUTERS
    paths = set(create_app(runtime=runtime()).openapi()["paths"])
    assert {"/v1/tasks", "/v1/tasks/{task_id}/history", "/v1/queues/{queue}/events",
            "/v1/agents/{agent_id}/join", "/readyz"} <= paths

"""The gateway application: `create_app`, its start-up and shutdown, and what every route shares.

Start-up (the lifespan), for a live gateway:
1. Open its own projection store (`<state_dir>/gateway/<name>`: two gateways never share
   one; RocksDB's lock refuses a second opener) and refuse a store built from another log.
2. Connect the event log (the writer) and start tailing `events`, `progress` and
   `heartbeats` into the projection.
3. Wait, bounded, until the projection has caught up with the log as it was at start;
   past the bound it serves anyway and `/readyz` says 503 with the lag.
4. Enter the start-up hooks of the router modules (a module's `lifespan(runtime)`, such
   as the SSE hub), then serve. Shutdown runs the same steps backwards.

A read-only gateway serves a prebuilt store (say one built by `taskfold replay --as-of`):
no log, no tailing; reads work unchanged (`runtime.live.store`), writes answer 405.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aiokafka.errors import UnknownTopicOrPartitionError
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from projections.gateway import docs, errors, ops
from projections.gateway.auth import Auth
from projections.gateway.deps import Runtime
from projections.gateway.writes import read_only_error
from projections.live import LiveProjection
from projections.projector import EVENTS, HEARTBEATS, PROGRESS
from projections.store import Store
from projections.view import View
from taskfold.broker.topics import TopicNames
from taskfold.config import Settings
from taskfold.log.eventlog import EventLog

log = logging.getLogger("taskfold.gateway")

ROUTERS = ("reads", "writes", "sse", "agents_http", "ops")  # modules of projections.gateway, in mount order
UNAUTHENTICATED = {"/healthz", "/readyz", "/metrics"}

DESCRIPTION = """\
The HTTP face of taskfold: submit, cancel and redrive tasks, read the projections, follow
tasks and queues as Server-Sent Events, and run agents over HTTP.

* **Writes are read-your-write**: the answer comes once this gateway's projection has
  applied the appended event, with the fold's verdict (accepted, duplicate: the original
  task, or rejected: 409/422 with the reason). If that takes longer than the write timeout,
  the answer is a 503 with `Retry-After` saying where the event was appended.
* **Auth**: `Authorization: Bearer <token>`; roles submitter, agent (bound to one agent
  id), auditor and admin. 401 without a valid token, 403 without the role.
* **Errors** always have the body `{"error": {"code", "message", "problems": [{"field", "reason"}]}}`.
"""


class GatewayStartError(RuntimeError):
    """The gateway cannot start: the message says why and what to do."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything a gateway needs to run, resolved from settings and command-line options."""

    store: Path
    auth: Auth
    bootstrap: str | None = None
    topics: TopicNames = field(default_factory=TopicNames)
    tansu: bool = False
    read_only: bool = False
    fresh: bool = False  # wipe the store first (the dev gateway: its broker's log is new)
    write_timeout_s: float = 10.0
    max_body_bytes: int = 1 << 20
    batch_max: int = 1000
    catch_up_timeout_s: float = 60.0


def gateway_config(settings: Settings, *, store: Path, auth: Auth, **options: Any) -> GatewayConfig:
    """A GatewayConfig with the gateway settings of `settings` (options override them)."""
    limits = {"write_timeout_s": settings.gateway_write_timeout_s,
              "max_body_bytes": settings.gateway_max_body_bytes, "batch_max": settings.gateway_batch_max,
              "catch_up_timeout_s": settings.gateway_catch_up_timeout_s}
    return GatewayConfig(store=store, auth=auth, **{**limits, **options})


def default_views() -> list[View]:
    """Every projection view (`projections.views.all_views()`), or none before that package exists."""
    try:
        views = importlib.import_module("projections.views")
    except ModuleNotFoundError as exc:
        if exc.name != "projections.views":
            raise
        views = None
    if getattr(views, "all_views", None) is None:  # an empty folder imports as a namespace package
        log.warning("projections.views is missing: the gateway projects no views")
        return []
    return list(views.all_views())


def router_modules(names: Sequence[str] = ROUTERS) -> list[ModuleType]:
    """The router modules present; one is skipped only when that very module is missing."""
    found = []
    for name in names:
        full = f"projections.gateway.{name}"
        try:
            found.append(importlib.import_module(full))
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            log.warning("%s is missing: its routes are not served", full)
    return found


class ReadOnlyProjection:
    """A prebuilt store served as it is: always caught up, never applies anything."""

    projector = None
    failure = None

    def __init__(self, path: Path) -> None:
        self.store = Store(path, read_only=True)

    def caught_up(self) -> bool:
        return True

    def lag(self) -> dict[str, dict[int, int]]:
        return {}

    def applied(self, partition: int, offset: int) -> None:
        return None

    async def wait_caught_up(self, timeout: float) -> None:
        return None

    async def wait_applied(self, partition: int, offset: int, timeout: float) -> Any:
        raise read_only_error()

    async def wait_for(self, predicate: Any, timeout: float) -> None:
        if not predicate():
            raise TimeoutError("a read-only store never changes")

    async def stop(self) -> None:
        self.store.close()


class ReadOnlyLog:
    """The log of a read-only gateway: every append (events, or raw records through `writer`) is a 405."""

    def __init__(self, topics: TopicNames) -> None:
        self.topics = topics
        self.writer = self

    async def append(self, *records: Any) -> list[Any]:
        raise read_only_error()


def _runtime(config: GatewayConfig, live: Any, event_log: Any) -> Runtime:
    rt = Runtime(live=live, log=event_log, auth=config.auth, write_timeout_s=config.write_timeout_s)
    rt.extra.update(batch_max=config.batch_max, max_body_bytes=config.max_body_bytes, read_only=config.read_only,
                    store=str(config.store))
    return rt


@asynccontextmanager
async def open_runtime(config: GatewayConfig, views: Sequence[View] | None = None) -> AsyncIterator[Runtime]:
    """Steps 1-3 of the start-up (see the module docstring), undone on exit."""
    if config.read_only:
        live = ReadOnlyProjection(config.store)
        try:
            yield _runtime(config, live, ReadOnlyLog(config.topics))
        finally:
            await live.stop()
        return
    if not config.bootstrap:
        raise GatewayStartError("no broker: a live gateway needs a bootstrap (or serve a store with --read-only)")
    if config.fresh:
        Store.wipe(config.store)
    live = LiveProjection(config.bootstrap, config.topics, config.store,
                          default_views() if views is None else views, tansu=config.tansu)
    event_log = EventLog(config.bootstrap, config.topics, tansu=config.tansu)
    try:
        await event_log.start()
        try:
            await live.start()
        except UnknownTopicOrPartitionError:
            raise GatewayStartError(f"the topics {', '.join(config.topics.all()[:3])} do not exist on "
                                    f"{config.bootstrap}: create them (taskfold dev does)") from None
        _check_same_log(live, config.store)
        try:
            await live.wait_caught_up(config.catch_up_timeout_s)
        except TimeoutError as exc:
            log.warning("serving before the projection caught up (/readyz says 503 until it does): %s", exc)
        yield _runtime(config, live, event_log)
    finally:
        await live.stop()
        await event_log.stop()


def _check_same_log(live: LiveProjection, path: Path) -> None:
    """Refuse a store whose offsets lie past the log's end: it was built from another log."""
    for role in (EVENTS, PROGRESS, HEARTBEATS):
        ends = live.ends.get(role, {})
        for partition, next_offset in live.projector.offsets[role].items():
            end = ends.get(partition)
            if end is None or next_offset > end:
                raise GatewayStartError(
                    f"the store at {path} reflects {role} partition {partition} up to offset {next_offset}, "
                    f"but the log {'has no such partition' if end is None else f'ends at {end}'}: it was built "
                    "from another log (an in-memory broker that restarted?); delete it or start with --fresh")


def create_app(config: GatewayConfig | None = None, *, runtime: Runtime | None = None,
               views: Sequence[View] | None = None, routers: Sequence[str] = ROUTERS) -> FastAPI:
    """The gateway app; it opens (and closes) its runtime from `config`, or serves `runtime` as given.

    `routers` names the router modules to mount (all by default; tests may mount fewer).
    """
    if config is None and runtime is None:
        raise ValueError("create_app needs a config or a runtime")
    modules = router_modules(routers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            rt = runtime or await stack.enter_async_context(open_runtime(config, views))  # type: ignore[arg-type]
            rt.auth.warn()
            app.state.runtime = rt
            for module in modules:
                hook = getattr(module, "lifespan", None)
                if hook is not None:
                    await stack.enter_async_context(hook(rt))
            yield

    app = FastAPI(title="taskfold gateway", description=DESCRIPTION, version=_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # docs.install: no CDN
    if runtime is not None:
        app.state.runtime = runtime
    app.state.metrics = ops.GatewayMetrics(lambda: getattr(app.state, "runtime", None))
    for module in modules:
        app.include_router(module.router)
    errors.install(app)
    docs.install(app)
    limit = config.max_body_bytes if config else int(runtime.extra.get("max_body_bytes", 1 << 20))  # type: ignore[union-attr]
    app.add_middleware(ops.Timing, metrics=app.state.metrics)
    app.add_middleware(errors.JsonBodies)
    app.add_middleware(errors.Guard, max_body_bytes=limit)  # outermost: before anything reads the body
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the bearer scheme on every route but the ops probes."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a token from TASKFOLD_TOKENS(_FILE)"}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                operation["security"] = [] if path in UNAUTHENTICATED else [{"bearer": []}]
        app.openapi_schema = _own_error_body(schema)
    return app.openapi_schema


def _own_error_body(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the gateway's error body where FastAPI documents its own validation error."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = errors.ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in components["Error"].pop("$defs", {}).items():
        components[name] = nested
    text = json.dumps(schema).replace('"#/components/schemas/HTTPValidationError"', '"#/components/schemas/Error"')
    schema = json.loads(text)
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)
    return schema


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("taskfold")
    except Exception:  # noqa: BLE001 - running from a source tree that was never installed
        return "0"

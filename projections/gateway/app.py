"""The gateway application: `create_app`, and its start-up and shutdown.

Start-up (the lifespan), for a live gateway:
1. Open its own projection store (`<state_dir>/gateway/<name>`: two gateways never share
   one; RocksDB's lock refuses a second opener) and refuse a store built from another log.
2. Connect the event log (the writer) and start tailing `events`, `progress` and
   `heartbeats` into the projection.
3. Wait, bounded, until the projection has caught up with the log as it was at start;
   past the bound it serves anyway and `/readyz` says 503 with the lag.
4. Enter the lifespans of the routers (FastAPI nests each router's lifespan inside the
   app's: the SSE feed), then serve. Shutdown runs the same steps backwards.

A read-only gateway serves a prebuilt store (say one built by `taskfold replay --as-of`):
no log, no tailing; reads work unchanged (`runtime.live.store`), writes answer 405.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import UnknownTopicOrPartitionError
from fastapi import APIRouter, FastAPI

from projections.gateway import agents_http, dashboard, docs, errors, openapi, ops, reads, schedules, sse, workflows, writes
from projections.gateway.auth import Auth
from projections.gateway.deps import Runtime
from projections.gateway.writes import read_only_error
from projections.live import LiveProjection
from projections.projector import EVENTS, HEARTBEATS, PROGRESS
from projections.store import Store
from projections.view import View
from projections.views import all_views
from taskfold.broker.topics import TopicNames
from taskfold.config import Settings
from taskfold.log.coalesce import append_busy_window_s, append_window_s
from taskfold.log.eventlog import EventLog

log = logging.getLogger("taskfold.gateway")

# In mount order; a router with start-up work declares it as its own lifespan (the SSE feed).
ROUTERS: tuple[APIRouter, ...] = (reads.router, writes.router, sse.router, agents_http.router, ops.router,
                                  dashboard.router, workflows.router,
                                  schedules.router)

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
    return Runtime(live=live, log=event_log, auth=config.auth, write_timeout_s=config.write_timeout_s,
                   batch_max=config.batch_max, max_body_bytes=config.max_body_bytes, read_only=config.read_only,
                   store_path=config.store)


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
                          all_views() if views is None else views, tansu=config.tansu)
    # Concurrent writes within the append window share one produce (one batch): see taskfold.log.coalesce.
    event_log = EventLog(config.bootstrap, config.topics, tansu=config.tansu, window_s=append_window_s(),
                         busy_window_s=append_busy_window_s())
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
               views: Sequence[View] | None = None, routers: Sequence[APIRouter] = ROUTERS) -> FastAPI:
    """The gateway app; it opens (and closes) its runtime from `config`, or serves `runtime` as given.

    `routers` are the routers to mount (all by default; tests may mount fewer).
    """
    if config is None and runtime is None:
        raise ValueError("create_app needs a config or a runtime")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            rt = runtime or await stack.enter_async_context(open_runtime(config, views))  # type: ignore[arg-type]
            rt.auth.warn()
            app.state.runtime = rt
            yield  # the routers' own lifespans run inside this one, once the runtime is open

    app = FastAPI(title="taskfold gateway", description=DESCRIPTION, version=_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # docs.install: no CDN
                  generate_unique_id_function=openapi.operation_id)
    if runtime is not None:
        app.state.runtime = runtime
    app.state.metrics = ops.GatewayMetrics(lambda: getattr(app.state, "runtime", None))
    for router in routers:
        app.include_router(router)
    errors.install(app)
    docs.install(app)
    limit = config.max_body_bytes if config else runtime.max_body_bytes  # type: ignore[union-attr]
    app.add_middleware(ops.Timing, metrics=app.state.metrics)
    app.add_middleware(errors.JsonBodies)
    app.add_middleware(errors.Guard, max_body_bytes=limit)  # outermost: before anything reads the body
    openapi.install(app)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("taskfold")
    except Exception:  # noqa: BLE001 - running from a source tree that was never installed
        return "0"

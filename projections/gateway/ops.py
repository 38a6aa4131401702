"""Operations: liveness, readiness and Prometheus metrics (no auth, for probes and scrapers).

`/healthz` says the process answers; `/readyz` is 200 only once the projection has caught
up with the log as it was at start (so a load balancer sends no reads to a gateway still
replaying); `/metrics` is the Prometheus text format, read from the projection at scrape
time plus a request latency histogram per route.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from projections import queries
from projections.gateway.deps import Runtime, RuntimeDep
from projections.gateway.errors import error_body
from projections.workingset import FOLD
from taskfold.core import foldrows

router = APIRouter(tags=["ops"])

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VERDICTS = ("accepted", "duplicate", "rejected")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not caught up yet, with the lag"}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """200 once the projection has caught up with the log; 503 with the lag before that."""
    live = rt.live
    if live.caught_up():
        return JSONResponse({"ready": True})
    failure = getattr(live, "failure", None)
    why = f"the projection stopped: {failure}" if failure else "the projection has not caught up with the log yet"
    return JSONResponse(error_body("not_ready", why, lag=_lag(live)), status_code=503,
                        headers={"Retry-After": "1"})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus text format: projection throughput, verdicts, lag, queue depths, latencies, poison."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _lag(live: object) -> dict[str, dict[str, int]]:
    lag = getattr(live, "lag", None)
    if lag is None:
        return {}
    return {role: {str(p): n for p, n in parts.items()} for role, parts in lag().items()}


class ProjectionCollector:
    """Reads the projection's counters, lag and queue depths when Prometheus scrapes."""

    def __init__(self, current: Callable[[], Runtime | None]) -> None:
        self.current = current
        self._last: tuple[float, int] | None = None
        self._rate = 0.0

    def collect(self) -> Iterator[Metric]:
        rt = self.current()
        if rt is None:
            return
        live = rt.live
        ready = GaugeMetricFamily("taskfold_projection_caught_up", "1 once the projection caught up with the log")
        ready.add_metric([], 1.0 if live.caught_up() else 0.0)
        yield ready
        lag = GaugeMetricFamily("taskfold_projection_lag_records", "records behind the high watermark",
                                labels=["topic", "partition"])
        for role, parts in _lag(live).items():
            for partition, behind in sorted(parts.items(), key=lambda kv: int(kv[0])):
                lag.add_metric([role, partition], behind)
        yield lag
        projector = getattr(live, "projector", None)
        if projector is not None:
            yield from self._projector(live.store, projector)

    def _projector(self, store, projector) -> Iterator[Metric]:  # noqa: ANN001 - Store, Projector
        counts = projector.counts
        events = CounterMetricFamily("taskfold_projection_events", "events of the events topic applied")
        events.add_metric([], counts.get("events", 0))
        yield events
        rate = GaugeMetricFamily("taskfold_projection_events_per_second",
                                 "events applied per second since the previous scrape")
        rate.add_metric([], self._events_per_second(counts.get("events", 0)))
        yield rate
        busy = CounterMetricFamily("taskfold_projection_apply_seconds", "time spent applying records")
        busy.add_metric([], projector.seconds)
        yield busy
        verdicts = CounterMetricFamily("taskfold_projection_verdicts", "verdicts of applied events",
                                       labels=["outcome"])
        for outcome in VERDICTS:
            verdicts.add_metric([outcome], counts.get(outcome, 0))
        yield verdicts
        poison = CounterMetricFamily("taskfold_projection_poison", "undecodable records seen on projected topics")
        poison.add_metric([], counts.get("poison", 0))
        yield poison
        depth = GaugeMetricFamily("taskfold_queue_tasks", "tasks per queue and state", labels=["queue", "state"])
        for name, states in _queue_states(store):
            for state, n in sorted(states.items()):
                if n:
                    depth.add_metric([name, state], n)
        yield depth

    def _events_per_second(self, count: int) -> float:
        now = time.monotonic()
        if self._last is None:
            self._last = (now, count)
        elif now - self._last[0] >= 1.0:
            seen_at, seen = self._last
            self._rate = (count - seen) / (now - seen_at)
            self._last = (now, count)
        return self._rate


def _queue_states(store) -> Iterator[tuple[str, dict[str, int]]]:  # noqa: ANN001
    """(queue, {state: tasks}): the queues view's counters, or a count over the fold's rows without that view."""
    rows = queries.list_queues(store)
    if rows:
        for row in rows:
            yield row["queue"], row["states"]
        return
    stored = foldrows.read(store.raw_scan(FOLD)).queues  # finished tasks are in the store only
    for name in sorted(stored):
        yield name, dict(Counter(t.state.value for t in stored[name].tasks))


class GatewayMetrics:
    """The app's own registry (two apps in one process never share metrics)."""

    def __init__(self, current: Callable[[], Runtime | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram("taskfold_http_request_duration_seconds", "request latency per route",
                                 ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(ProjectionCollector(current))


class Timing:
    """ASGI middleware: observe each request's latency, labelled by its route template."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)

"""The web dashboard at `/`: static pages (no CDN, no build step) and the small JSON reads they need.

The pages are one HTML file and plain JavaScript modules under `static/`, shipped in the
package. They read through `/ui/api/...` (below; every read takes `as_of`, see
`projections.gateway.asof`), follow tasks over the existing SSE stream, and write through
the existing routes (cancel, redrive). Who may do what is the gateway's bearer roles,
through a session cookie in a browser (`projections.gateway.session`): readers read,
auditors also see rejections and the past, admins also redrive and cancel.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from projections import queries
from projections.gateway import dashdata, session
from projections.gateway.asof import AsOfStores, parse
from projections.gateway.deps import AuditorDep, Principal, ReaderDep, Role, runtime
from projections.gateway.errors import ApiError
from projections.gateway.reads import parse_as_of
from projections.store import Store
from taskfold.core.edge import now_ms
from taskfold.core.state import TaskState

router = APIRouter(tags=["dashboard"])
router.include_router(session.router)

STATIC = Path(__file__).parent / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
AsOfParam = Annotated[str | None, Query(max_length=64,
                                        description="epoch ms, ISO-8601, or offsets p:o,p:o (auditors)")]
Limit = Annotated[int, Query(ge=1, le=500)]
Text = Annotated[str | None, Query(min_length=1, max_length=256)]
PriorityParam = Annotated[str | None, Query(pattern="^(critical|high|medium|low)$")]


def as_of_stores(request: Request) -> AsOfStores:
    """This app's as-of stores, next to the gateway's store; made on first use, wiped at exit."""
    state = request.app.state
    if getattr(state, "as_of_stores", None) is None:
        live = runtime(request).live
        state.as_of_stores = AsOfStores(Path(str(live.store.path) + ".asof"), live)
        weakref.finalize(request.app, state.as_of_stores.close)  # also at interpreter exit
    return state.as_of_stores


async def _store(request: Request, as_of: str | None, principal: Principal) -> tuple[Store, dict[str, Any] | None]:
    """The live store, or the store of the `as_of` cut (auditors), and how the page should name it."""
    if not as_of:
        return runtime(request).live.store, None
    if not principal.can(Role.auditor):
        raise ApiError(403, "forbidden", "as_of reads are for auditors", [("as_of", "needs the auditor role")])
    cut = parse(as_of)
    store = await as_of_stores(request).store(cut)
    return store, {"label": cut.label, "until_ms": cut.cut.until_ms, "offsets": cut.cut.offsets,
                   "newest_event_at": dashdata.newest_ms(store)}


def _moment(as_of: dict[str, Any] | None) -> int:
    """The time the page stands at: now, or the as-of moment (for breakers and ages)."""
    if as_of is None:
        return now_ms()
    return as_of["until_ms"] if as_of["until_ms"] is not None else (as_of["newest_event_at"] or 0)


# pages and assets


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    """The dashboard (one page; the fragment after # picks the view)."""
    return HTMLResponse((STATIC / "index.html").read_text(), headers={"Cache-Control": "no-cache"})


@router.get("/ui/static/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    """A static asset of the dashboard (only files shipped in `static/`)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file() or path.suffix not in TYPES:
        raise ApiError(404, "not_found", f"no dashboard asset {name}")
    return FileResponse(path, media_type=TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


# reads


@router.get("/ui/api/overview")
async def dashboard_overview(request: Request, principal: ReaderDep, as_of: AsOfParam = None,
                   minutes: Annotated[int, Query(ge=5, le=7 * 24 * 60)] = 60) -> dict[str, Any]:
    """Per queue depth, running, throughput, latencies and rates; agents online, busy and quarantined."""
    store, cut = await _store(request, as_of, principal)
    return {**dashdata.overview(store, _moment(cut), minutes), "as_of": cut}


@router.get("/ui/api/tasks")
async def dashboard_tasks(request: Request, principal: ReaderDep, as_of: AsOfParam = None, queue: Text = None,
                          state: TaskState | None = None, priority: PriorityParam = None, agent: Text = None,
                          session_id: Text = None, q: Text = None, since: Text = None, until: Text = None,
                          limit: Limit = 50, cursor: Text = None) -> dict[str, Any]:
    """A page of tasks by queue, state, priority, agent, session and submit time, or a search by id."""
    store, cut = await _store(request, as_of, principal)
    try:
        rows, after = dashdata.tasks(
            store, queue=queue, state=state.value if state else None, priority=priority, agent=agent,
            session_id=session_id, q=q, since_ms=_time("since", since), until_ms=_time("until", until),
            limit=limit, cursor=cursor)
    except queries.BadCursor as exc:
        raise ApiError(422, "invalid_request", "the request is not valid: cursor", [("cursor", str(exc))]) from None
    return {"tasks": rows, "next_cursor": after, "as_of": cut}


def _time(field: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_as_of(text)
    except ApiError:
        raise ApiError(422, "invalid_request", f"the request is not valid: {field}",
                       [(field, "not epoch milliseconds or an ISO-8601 time")]) from None


@router.get("/ui/api/tasks/{task_id}")
async def dashboard_task(task_id: str, request: Request, principal: ReaderDep,
                         as_of: AsOfParam = None) -> dict[str, Any]:
    """A task, its timeline (every event with its verdict) and its progress transcript."""
    store, cut = await _store(request, as_of, principal)
    detail = dashdata.task_detail(store, task_id)
    if detail is None:
        when = f" as of {cut['label']}" if cut else ""
        raise ApiError(404, "not_found", f"unknown task {task_id}{when}")
    return {**detail, "as_of": cut}


@router.get("/ui/api/agents")
async def dashboard_agents(request: Request, principal: ReaderDep, as_of: AsOfParam = None) -> dict[str, Any]:
    """Every agent: slots, utilization, EWMA success and latency, breaker, heartbeat, tasks held."""
    store, cut = await _store(request, as_of, principal)
    return {"agents": dashdata.agents(store, _moment(cut)), "as_of": cut}


@router.get("/ui/api/dead-letters")
async def dashboard_dead_letters(request: Request, principal: ReaderDep, as_of: AsOfParam = None, queue: Text = None,
                                 limit: Limit = 50, cursor: Text = None) -> dict[str, Any]:
    """Dead-lettered tasks, a page at a time."""
    store, cut = await _store(request, as_of, principal)
    try:
        rows, after = queries.dead_letters(store, queue=queue, limit=limit, cursor=cursor)
    except queries.BadCursor as exc:
        raise ApiError(422, "invalid_request", "the request is not valid: cursor", [("cursor", str(exc))]) from None
    return {"dead_letters": rows, "next_cursor": after, "as_of": cut}


@router.get("/ui/api/rejections")
async def dashboard_rejections(request: Request, principal: AuditorDep, as_of: AsOfParam = None, limit: Limit = 50,
                               cursor: Text = None) -> dict[str, Any]:
    """Every event the fold rejected, with its reason (auditors)."""
    store, cut = await _store(request, as_of, principal)
    try:
        rows, after = queries.rejections(store, limit=limit, cursor=cursor)
    except queries.BadCursor as exc:
        raise ApiError(422, "invalid_request", "the request is not valid: cursor", [("cursor", str(exc))]) from None
    return {"rejections": rows, "next_cursor": after, "as_of": cut}

"""The dashboard without a browser: its pages are local files, its sign-in is a signed HttpOnly
cookie with a CSRF token on writes, and its reads (overview, tasks, agents) come from the views."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from projections.gateway import dashdata
from projections.gateway.app import create_app
from projections.gateway.auth import Auth, parse_env
from projections.gateway.deps import Role, Runtime
from projections.gateway.session import COOKIE, SESSION_TTL_S, SessionKeys
from projections.store import Store
from taskfold.core.testing import Events
from tests.unit.test_views_fleet import MINUTE, T0, Log

TOKENS = "read-tok:submitter,aud-tok:auditor,adm-tok:admin,agent-tok:agent:a1"


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


def client(store: Store, auth: Auth) -> httpx.AsyncClient:
    rt = Runtime(live=SimpleNamespace(store=store), log=None, auth=auth)  # type: ignore[arg-type]
    app = create_app(runtime=rt)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def signed_in(c: httpx.AsyncClient, token: str) -> str:
    """Sign in; the CSRF token of the session (the cookie stays in the client's jar)."""
    res = await c.post("/ui/session", json={"token": token})
    assert res.status_code == 200, res.text
    return res.json()["csrf"]


async def test_root_is_the_dashboard_and_loads_only_assets_the_gateway_serves(store: Store) -> None:
    async with client(store, Auth(parse_env(TOKENS))) as c:
        page = await c.get("/")
        assert page.status_code == 200 and "<title>taskfold</title>" in page.text
        urls = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"#]+)['"]""", page.text)
        assert "/ui/static/app.js" in urls and not [u for u in urls if "://" in u or u.startswith("//")]
        for name in ("app.js", "dom.js", "pages.js", "task.js", "charts.js", "style.css"):
            asset = await c.get(f"/ui/static/{name}")
            assert asset.status_code == 200 and len(asset.content) > 500, name
            assert "://" not in re.sub(r"http://www\.w3\.org/2000/svg", "", asset.text), f"{name} loads from elsewhere"
        assert (await c.get("/ui/static/..%2Fapp.py")).status_code == 404
        assert (await c.get("/ui/static/nothing.js")).status_code == 404


async def test_a_token_becomes_an_httponly_strict_cookie_that_reads(store: Store) -> None:
    async with client(store, Auth(parse_env(TOKENS))) as c:
        assert (await c.get("/ui/api/overview")).status_code == 401
        res = await c.post("/ui/session", json={"token": "read-tok"})
        cookie = res.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "read-tok" not in cookie
        assert res.json()["signed_in"] and res.json()["roles"] == ["submitter"] and res.json()["csrf"]
        assert (await c.get("/ui/api/overview")).status_code == 200
        assert (await c.get("/ui/api/rejections")).status_code == 403  # a submitter is no auditor
        assert (await c.get("/ui/session")).json()["name"].startswith("env#1")
        await c.delete("/ui/session")
        assert (await c.get("/ui/api/overview")).status_code == 401


async def test_bad_tokens_and_forged_or_expired_cookies_sign_nobody_in(store: Store) -> None:
    async with client(store, Auth(parse_env(TOKENS))) as c:
        assert (await c.post("/ui/session", json={"token": "nope"})).status_code == 401
        refused = await c.post("/ui/session", json={"token": "agent-tok"})
        assert refused.status_code == 403 and refused.json()["error"]["problems"][0]["field"] == "token"
        assert (await c.post("/ui/session?token=read-tok")).status_code == 422  # never from the URL
        await signed_in(c, "adm-tok")
        value = c.cookies[COOKIE]
        body, mac = value.split(".")
        c.cookies.set(COOKIE, body[:-2] + "xx." + mac)
        assert (await c.get("/ui/api/overview")).status_code == 401
        keys: SessionKeys = c._transport.app.state.session_keys  # type: ignore[attr-defined]
        admin = SimpleNamespace(name="x", roles={Role.admin})
        fresh, _ = keys.seal(admin, time.time())  # type: ignore[arg-type]
        c.cookies.set(COOKIE, fresh)
        assert (await c.get("/ui/api/overview")).status_code == 200
        stale, _ = keys.seal(admin, time.time() - SESSION_TTL_S - 1)  # type: ignore[arg-type]
        c.cookies.set(COOKIE, stale)
        assert (await c.get("/ui/api/overview")).status_code == 401


async def test_writes_with_the_cookie_need_the_csrf_token_and_the_role(store: Store) -> None:
    async with client(store, Auth(parse_env(TOKENS))) as admin, client(store, Auth(parse_env(TOKENS))) as reader:
        csrf = await signed_in(admin, "adm-tok")
        forged = await admin.post("/v1/dead-letters/t1/redrive")
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf"
        wrong = await admin.post("/v1/dead-letters/t1/redrive", headers={"X-CSRF-Token": "x" + csrf})
        assert wrong.status_code == 403
        allowed = await admin.post("/v1/dead-letters/t1/redrive", headers={"X-CSRF-Token": csrf})
        assert allowed.status_code not in (401, 403), allowed.text  # past auth (this runtime has no log to append to)
        csrf = await signed_in(reader, "read-tok")
        denied = await reader.post("/v1/dead-letters/t1/redrive", headers={"X-CSRF-Token": csrf})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"


async def test_with_auth_off_the_dashboard_just_works(store: Store) -> None:
    async with client(store, Auth.disabled()) as c:
        me = (await c.get("/ui/session")).json()
        assert me["auth"] is False and me["roles"] == ["admin"]
        assert (await c.get("/ui/api/overview")).json()["queues"] == []


def fleet(log: Log) -> None:
    e = Events(queue="q", now=T0)
    log.apply(e.join("a1", slots=2), e.submit("a", at=T0, priority="high", correlation_id="order-7"),
              e.submit("b", at=T0 + 10), e.submit("c", at=T0 + 20, priority="low"),
              e.assign("a", "a1", at=T0 + 100), e.start("a", "a1", at=T0 + 200), e.complete("a", "a1", at=T0 + 1_200),
              e.assign("b", "a1", at=T0 + MINUTE), e.start("b", "a1", at=T0 + MINUTE + 500))


def test_overview_has_depth_running_rates_and_end_to_end_latencies(tmp_path: Path) -> None:
    log = Log(tmp_path / "s")
    fleet(log)
    out = dashdata.overview(log.store, now_ms=T0 + 2 * MINUTE)
    (q,) = out["queues"]
    assert q["depth_by_priority"] == {"critical": 0, "high": 0, "medium": 0, "low": 1}
    assert (q["running"], q["completed"]) == (1, 1)
    w = q["window"]
    start, done = w["submit_to_start_ms"], w["submit_to_complete_ms"]
    assert start["count"] == 2 and start["p99"] == pytest.approx(MINUTE + 490, rel=0.13)
    assert done["count"] == 1 and done["p50"] == pytest.approx(1_200, rel=0.13)
    assert [p["count"] for p in w["submit_to_start_ms"]["series"]] == [2]
    assert out["agents"] == {"total": 1, "online": 1, "busy": 1, "quarantined": 0}
    log.store.close()


def test_tasks_filter_by_priority_agent_and_time_and_search_by_id_or_correlation(tmp_path: Path) -> None:
    log = Log(tmp_path / "s")
    fleet(log)
    ids = lambda page: [t["task_id"] for t in page[0]]  # noqa: E731
    assert ids(dashdata.tasks(log.store, priority="low")) == ["c"]
    assert ids(dashdata.tasks(log.store, agent="a1")) == ["a", "b"]
    assert ids(dashdata.tasks(log.store, agent="a1", state="running")) == ["b"]
    assert ids(dashdata.tasks(log.store, queue="q", since_ms=T0 + 5, until_ms=T0 + 15)) == ["b"]
    assert ids(dashdata.tasks(log.store, q="order-7")) == ["a"]
    assert ids(dashdata.tasks(log.store, q="c")) == ["c"]
    first = dashdata.tasks(log.store, queue="q", limit=2)
    assert ids(first) == ["a", "b"] and ids(dashdata.tasks(log.store, queue="q", limit=2, cursor=first[1])) == ["c"]
    detail = dashdata.task_detail(log.store, "a")
    assert [e["event"]["type"] for e in detail["events"]] == ["TaskSubmitted", "TaskAssigned", "TaskStarted",
                                                               "TaskCompleted"]
    log.store.close()


def test_a_breaker_is_open_until_its_time_then_half_open_with_a_probe() -> None:
    seat = {"quarantined_until": 5_000, "quarantine_reason": "3 failures in a row", "probe_task": None}
    assert dashdata.breaker(seat, 4_000) == {"state": "open", "until": 5_000, "reason": "3 failures in a row"}
    assert dashdata.breaker(seat, 6_000)["state"] == "closed"
    assert dashdata.breaker({**seat, "probe_task": "t9"}, 6_000)["state"] == "half-open"


def test_a_row_filter_fills_its_page_from_the_index_instead_of_thinning_it(tmp_path: Path) -> None:
    log = Log(tmp_path / "s")
    e = Events(queue="q", now=T0)
    log.apply(*(e.submit(f"t{i}", at=T0 + i, priority=("high", "low")[i % 3 == 2]) for i in range(12)))
    page, cursor = dashdata.tasks(log.store, priority="low", limit=2)
    assert [t["task_id"] for t in page] == ["t11", "t2"] and cursor is not None  # key order: t11 < t2
    rest, end = dashdata.tasks(log.store, priority="low", limit=2, cursor=cursor)
    assert [t["task_id"] for t in rest] == ["t5", "t8"]
    assert dashdata.tasks(log.store, priority="low", limit=2, cursor=end)[0] == []
    log.store.close()


async def test_as_of_is_for_auditors_and_needs_a_log(store: Store) -> None:
    async with client(store, Auth(parse_env(TOKENS))) as c:
        await signed_in(c, "read-tok")
        denied = await c.get("/ui/api/overview", params={"as_of": "0"})
        assert denied.status_code == 403 and denied.json()["error"]["problems"][0]["field"] == "as_of"
        await signed_in(c, "aud-tok")
        bad = await c.get("/ui/api/tasks", params={"as_of": "yesterday-ish"})
        assert bad.status_code == 422 and bad.json()["error"]["problems"][0]["field"] == "as_of"
        no_log = await c.get("/ui/api/agents", params={"as_of": "0:5"})  # this runtime serves a store, no log
        assert no_log.status_code == 409 and no_log.json()["error"]["code"] == "no_log"

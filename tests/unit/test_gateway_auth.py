"""Bearer tokens and roles: the token formats, and the auth matrix on a tiny app built with
the gateway's own `require` and `ensure_agent` (every role against every kind of route)."""

from __future__ import annotations

import hashlib
import io
import json

import httpx
import pytest
from fastapi import FastAPI

from projections.gateway import errors
from projections.gateway.auth import Auth, TokenConfigError, bearer_token, ensure_agent, parse_env, parse_file
from projections.gateway.deps import Principal, Role, Runtime, require

TOKENS = "sub-tok:submitter,aud-tok:auditor,adm-tok:admin,a1-tok:agent:agent-1,both-tok:submitter+auditor"


def tiny_app(auth: Auth) -> FastAPI:
    app = FastAPI()
    errors.install(app)
    app.state.runtime = Runtime(live=None, log=None, auth=auth)  # type: ignore[arg-type]

    @app.post("/submit")
    async def submit(who: Principal = require(Role.submitter)) -> dict:
        return {"name": who.name}

    @app.get("/audit")
    async def audit(who: Principal = require(Role.auditor)) -> dict:
        return {"name": who.name}

    @app.post("/redrive")
    async def redrive(who: Principal = require(Role.admin)) -> dict:
        return {"name": who.name}

    @app.post("/agents/{agent_id}/report")
    async def report(agent_id: str, who: Principal = require(Role.agent)) -> dict:
        ensure_agent(who, agent_id)
        return {"name": who.name}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


ROUTES = {
    "submit": ("POST", "/submit"),
    "audit": ("GET", "/audit"),
    "redrive": ("POST", "/redrive"),
    "own_agent": ("POST", "/agents/agent-1/report"),
    "other_agent": ("POST", "/agents/agent-2/report"),
    "healthz": ("GET", "/healthz"),
}

# token -> the routes it may call (everything else: 403); healthz needs no token at all
ALLOWED = {
    "sub-tok": {"submit", "healthz"},
    "aud-tok": {"audit", "healthz"},
    "adm-tok": set(ROUTES),
    "a1-tok": {"own_agent", "healthz"},
    "both-tok": {"submit", "audit", "healthz"},
}


async def call(app: FastAPI, route: str, headers: dict[str, str] | None = None) -> httpx.Response:
    method, path = ROUTES[route]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.request(method, path, headers=headers or {})


@pytest.mark.parametrize("token", sorted(ALLOWED))
@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_each_role_reaches_exactly_its_routes(token: str, route: str) -> None:
    app = tiny_app(Auth(parse_env(TOKENS)))
    response = await call(app, route, {"Authorization": f"Bearer {token}"})
    if route in ALLOWED[token]:
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    if route == "other_agent" and token == "a1-tok":
        assert "cannot act as agent 'agent-2'" in error["message"]
        assert error["problems"] == [{"field": "agent_id", "reason": "must be 'agent-1' for this token"}]
    else:
        wanted = {"submit": "submitter", "audit": "auditor", "redrive": "admin"}.get(route, "agent")
        assert wanted in error["message"] and "admin" in error["required_roles"]


@pytest.mark.parametrize("route", sorted(set(ROUTES) - {"healthz"}))
@pytest.mark.parametrize("headers, invalid", [
    ({}, False),
    ({"Authorization": "Bearer not-a-token"}, True),
    ({"Authorization": "Basic c3ViLXRvazo="}, True),
    ({"Authorization": "Bearer "}, True),
])
async def test_no_valid_token_is_401_with_a_bearer_challenge(route: str, headers: dict, invalid: bool) -> None:
    response = await call(tiny_app(Auth(parse_env(TOKENS))), route, headers)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer")
    assert ('error="invalid_token"' in challenge) == invalid
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_probes_need_no_token() -> None:
    assert (await call(tiny_app(Auth(parse_env(TOKENS))), "healthz")).status_code == 200


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_disabled_auth_lets_everyone_in_as_admin(route: str) -> None:
    response = await call(tiny_app(Auth.disabled()), route)
    assert response.status_code == 200
    if route != "healthz":
        assert response.json()["name"].startswith("anonymous")


def test_disabled_auth_warns_loudly_and_enabled_auth_does_not() -> None:
    out = io.StringIO()
    Auth.disabled().warn(out)
    assert "DISABLED" in out.getvalue()
    quiet = io.StringIO()
    Auth(parse_env(TOKENS)).warn(quiet)
    assert quiet.getvalue() == ""


def test_env_format_gives_roles_and_agent_binding() -> None:
    auth = Auth(parse_env(TOKENS))
    assert auth.principal("both-tok").roles == {Role.submitter, Role.auditor}
    agent = auth.principal("a1-tok")
    assert agent.roles == {Role.agent} and agent.agent_id == "agent-1"
    assert auth.principal("sub-tok").agent_id is None
    assert auth.principal("nope") is None
    assert auth.principal("sub-tok ") is None  # exact match only


def test_only_digests_are_kept() -> None:
    auth = Auth(parse_env(TOKENS))
    kept = repr([(g.digest, g.principal) for g in auth.grants])
    assert "sub-tok" not in kept and "adm-tok" not in kept


@pytest.mark.parametrize("text, complaint", [
    ("tok:wizard", "unknown role 'wizard'"),
    ("tok:agent", "needs the agent id"),
    ("tok:submitter:agent-1", "roles do not include agent"),
    ("tok", "expected TOKEN:ROLES"),
    (":submitter", "empty token"),
    ("a:submitter,a:auditor", "configured twice"),
])
def test_bad_env_tokens_are_refused_with_the_reason(text: str, complaint: str) -> None:
    with pytest.raises(TokenConfigError, match=complaint):
        Auth(parse_env(text))


def test_tokens_from_json_and_toml_files(tmp_path) -> None:
    digest = hashlib.sha256(b"hashed-tok").hexdigest()
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps({"tokens": [
        {"name": "ci", "token": "ci-tok", "roles": ["submitter"]},
        {"name": "bot", "sha256": digest, "roles": ["agent"], "agent_id": "bot-1"},
    ]}))
    toml_file = tmp_path / "tokens.toml"
    toml_file.write_text('[[tokens]]\nname = "ops"\ntoken = "ops-tok"\nroles = ["admin"]\n')
    auth = Auth.load(json_file, "env-tok:auditor")
    assert auth.principal("ci-tok").name == "ci"
    assert auth.principal("hashed-tok") == Principal("bot", frozenset({Role.agent}), "bot-1")
    assert auth.principal("env-tok").roles == {Role.auditor}
    assert Auth.load(toml_file).principal("ops-tok").roles == {Role.admin}


@pytest.mark.parametrize("body, complaint", [
    ({"tokens": [{"name": "x", "roles": ["admin"]}]}, "exactly one of token or sha256"),
    ({"tokens": [{"token": "t", "sha256": "ab", "roles": ["admin"]}]}, "exactly one of token or sha256"),
    ({"tokens": [{"sha256": "abcd", "roles": ["admin"]}]}, "64 hex digits"),
    ({"tokens": [{"token": "t", "roles": ["admin"], "colour": "red"}]}, "unknown keys"),
    ({"tokens": "t"}, "expected a list"),
])
def test_bad_token_files_are_refused_with_the_reason(tmp_path, body: dict, complaint: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(body))
    with pytest.raises(TokenConfigError, match=complaint):
        parse_file(path)


def test_no_tokens_at_all_is_an_error_that_says_what_to_set() -> None:
    with pytest.raises(TokenConfigError, match="TASKFOLD_TOKENS"):
        Auth.load(None, None)


def test_bearer_header_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Token abc") == ""


def test_ensure_agent_binds_agents_and_lets_admins_act_for_anyone() -> None:
    agent = Principal("a", frozenset({Role.agent}), "agent-1")
    ensure_agent(agent, "agent-1")
    with pytest.raises(errors.ApiError) as caught:
        ensure_agent(agent, "agent-2")
    assert caught.value.status == 403
    ensure_agent(Principal("root", frozenset({Role.admin})), "agent-2")
    with pytest.raises(errors.ApiError):
        ensure_agent(Principal("s", frozenset({Role.submitter})), "agent-1")

"""Browser sign-in for the dashboard: a bearer token exchanged for a signed session cookie.

A browser's EventSource cannot send an Authorization header, and a token in a URL ends up
in logs, so the dashboard signs in once:

1. `POST /ui/session` with `{"token": "..."}` in the body (never in the URL). The token is
   checked like a bearer token (`Auth.principal`); agent-only tokens are refused (403).
2. The answer sets `taskfold_session`: HttpOnly (scripts cannot read it), SameSite=Strict
   (other sites' pages cannot send it), Secure on https, Path=/, valid `SESSION_TTL_S`.
   Its value is the principal, an expiry and a random session id, signed with HMAC-SHA256
   under a key this gateway draws at start-up (a restart signs everyone out).
3. The body carries the session's CSRF token, HMAC(key, "csrf" + session id). A request
   authenticated by the cookie that changes something (any method but GET, HEAD,
   OPTIONS) must echo it in the `X-CSRF-Token` header, which another site cannot read or
   set: double-submit, without a second cookie.
4. `Auth.authorize` asks `principal_from_cookie` when a request has no Authorization
   header, so every route (reads, SSE, redrive, cancel) accepts the session with the same
   roles; `DELETE /ui/session` signs out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from projections.gateway.deps import Principal, Role, runtime
from projections.gateway.errors import ApiError
from taskfold.core.edge import now_ms

router = APIRouter(tags=["dashboard"])

COOKIE = "taskfold_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 8 * 3600  # a working day; then sign in again
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=4096, description="a bearer token of TASKFOLD_TOKENS(_FILE)")


class SessionOut(BaseModel):
    auth: bool = Field(description="false when the gateway runs without auth: everyone is admin")
    signed_in: bool
    name: str | None = None
    roles: list[str] = []
    csrf: str | None = Field(None, description="send it as X-CSRF-Token on writes made with the cookie")
    expires_at: int | None = Field(None, description="epoch ms")


class SessionKeys:
    """The gateway's signing key: signs and checks session cookies and derives CSRF tokens."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)

    def _mac(self, purpose: bytes, body: bytes) -> bytes:
        return hmac.new(self.key, purpose + b"\0" + body, hashlib.sha256).digest()

    def seal(self, principal: Principal, now_s: float) -> tuple[str, dict[str, Any]]:
        """A cookie value for `principal` and the session it stands for."""
        session = {"name": principal.name, "roles": sorted(r.value for r in principal.roles),
                   "exp": int((now_s + SESSION_TTL_S) * 1000), "sid": secrets.token_urlsafe(16)}
        body = _b64(json.dumps(session, separators=(",", ":")).encode())
        return body + "." + _b64(self._mac(b"session", body.encode())), session

    def open(self, value: str, now_s: float) -> dict[str, Any] | None:
        """The session of a cookie value, or None when it is forged, malformed or expired."""
        body, _, mac = value.partition(".")
        try:
            good = hmac.compare_digest(_unb64(mac), self._mac(b"session", body.encode()))
            session = json.loads(_unb64(body)) if good else None
        except ValueError:
            return None
        if not isinstance(session, dict) or session.get("exp", 0) <= now_s * 1000:
            return None
        return session

    def csrf(self, session: dict[str, Any]) -> str:
        """The CSRF token of a session."""
        return _b64(self._mac(b"csrf", str(session["sid"]).encode()))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def keys(request: Request) -> SessionKeys:
    """This gateway's session keys, drawn on first use."""
    state = request.app.state
    if getattr(state, "session_keys", None) is None:
        state.session_keys = SessionKeys()
    return state.session_keys


def principal_from_cookie(request: Request) -> Principal | None:
    """The principal of the session cookie, or None without a valid one; 403 on a write without its CSRF token."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    ring = keys(request)
    session = ring.open(value, now_ms() / 1000)
    if session is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), ring.csrf(session).encode()):
            raise ApiError(403, "csrf", "a write with the session cookie needs its X-CSRF-Token header "
                           "(GET /ui/session gives it)", [("X-CSRF-Token", "missing or not this session's")])
    try:
        roles = frozenset(Role(r) for r in session["roles"])
    except (ValueError, KeyError, TypeError):
        return None
    return Principal(str(session["name"]), roles)


def _out(request: Request, session: dict[str, Any] | None) -> dict[str, Any]:
    if not runtime(request).auth.enabled:
        return {"auth": False, "signed_in": True, "name": "anonymous (auth disabled)", "roles": ["admin"]}
    if session is None:
        return {"auth": True, "signed_in": False}
    return {"auth": True, "signed_in": True, "name": session["name"], "roles": session["roles"],
            "csrf": keys(request).csrf(session), "expires_at": session["exp"]}


@router.get("/ui/session", response_model=SessionOut)
async def dashboard_session(request: Request) -> dict[str, Any]:
    """Who the session cookie signs in, with its CSRF token (or that auth is off)."""
    value = request.cookies.get(COOKIE)
    return _out(request, keys(request).open(value, now_ms() / 1000) if value else None)


@router.post("/ui/session", response_model=SessionOut)
async def dashboard_sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
    """Exchange a bearer token for a session cookie (HttpOnly, SameSite=Strict)."""
    auth = runtime(request).auth
    if not auth.enabled:
        return _out(request, None)
    principal = auth.principal(body.token)
    if principal is None:
        raise ApiError(401, "unauthenticated", "invalid token: nothing was signed in", [("token", "not a known token")])
    if not principal.can(Role.submitter, Role.auditor):
        raise ApiError(403, "forbidden", "the dashboard needs a submitter, auditor or admin token; this one is "
                       "an agent's", [("token", "has no reading role")])
    value, session = keys(request).seal(principal, now_ms() / 1000)
    response.set_cookie(COOKIE, value, max_age=SESSION_TTL_S, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return _out(request, session)


@router.delete("/ui/session", response_model=SessionOut)
async def dashboard_sign_out(request: Request, response: Response) -> dict[str, Any]:
    """Forget the session cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return _out(request, None)

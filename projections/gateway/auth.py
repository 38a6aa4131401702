"""Bearer tokens with roles: who may call which route (ARCHITECTURE §7).

Tokens come from a file (`TASKFOLD_TOKENS_FILE`, JSON or TOML) or from the environment
(`TASKFOLD_TOKENS`). Only a SHA-256 digest of each token is kept in memory, and a
presented token is compared with every digest by `hmac.compare_digest`, so neither the
comparison nor the position of a match leaks through timing.

`TASKFOLD_TOKENS` is a comma-separated list of `TOKEN:ROLES[:AGENT_ID]`, ROLES being one
role or several joined by `+`:

    TASKFOLD_TOKENS="s3cret:submitter,audit-tok:auditor+submitter,a1-tok:agent:agent-1,root-tok:admin"

The file holds a list of grants; `sha256` (hex) may stand for `token`, so the file need
not hold the secret itself:

    {"tokens": [{"name": "ci", "token": "s3cret", "roles": ["submitter"]},
                {"name": "agent-1", "sha256": "9f86d0…", "roles": ["agent"], "agent_id": "agent-1"}]}

    [[tokens]]
    name = "ci"
    token = "s3cret"
    roles = ["submitter"]

An agent token is bound to one agent id and may act only as that agent (`ensure_agent`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from fastapi import Request

from projections.gateway.deps import ANONYMOUS_ADMIN, Principal, Role
from projections.gateway.errors import ApiError
from projections.gateway.session import principal_from_cookie

ENV_TOKENS = "TASKFOLD_TOKENS"
ENV_TOKENS_FILE = "TASKFOLD_TOKENS_FILE"


class TokenConfigError(ValueError):
    """A token list that cannot be used, naming the entry and what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One token, kept as its digest, and the principal it authenticates."""

    digest: bytes
    principal: Principal


def digest(token: str) -> bytes:
    """The SHA-256 of a token: what is kept and compared."""
    return hashlib.sha256(token.encode()).digest()


def _roles(value: Iterable[str], where: str) -> frozenset[Role]:
    roles = set()
    for name in value:
        try:
            roles.add(Role(name.strip()))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise TokenConfigError(f"{where}: unknown role {name!r} (roles: {known})") from None
    if not roles:
        raise TokenConfigError(f"{where}: no role")
    return frozenset(roles)


def grant(name: str, roles: frozenset[Role], *, token: str | None = None, sha256: str | None = None,
          agent_id: str | None = None, where: str = "token") -> Grant:
    """A checked grant: an agent role needs an agent id, and an agent id needs the agent role."""
    if (token is None) == (sha256 is None):
        raise TokenConfigError(f"{where}: give exactly one of token or sha256")
    if token is not None and not token.strip():
        raise TokenConfigError(f"{where}: empty token")
    if Role.agent in roles and not agent_id:
        raise TokenConfigError(f"{where}: an agent token needs the agent id it is bound to")
    if agent_id and Role.agent not in roles:
        raise TokenConfigError(f"{where}: agent_id {agent_id!r} given, but the roles do not include agent")
    if sha256 is not None:
        try:
            raw = bytes.fromhex(sha256)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise TokenConfigError(f"{where}: sha256 must be 64 hex digits")
    else:
        raw = digest(token)  # type: ignore[arg-type]
    return Grant(raw, Principal(name, roles, agent_id or None))


def parse_env(text: str) -> list[Grant]:
    """Grants from `TOKEN:ROLES[:AGENT_ID],...` (see the module docstring)."""
    grants = []
    for n, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        where = f"{ENV_TOKENS} entry {n + 1}"
        pieces = item.split(":")
        if len(pieces) not in (2, 3):
            raise TokenConfigError(f"{where}: expected TOKEN:ROLES or TOKEN:agent:AGENT_ID")
        token, roles = pieces[0], _roles(pieces[1].split("+"), where)
        agent_id = pieces[2] if len(pieces) == 3 else None
        name = f"env:{agent_id}" if agent_id else f"env#{n + 1}:{'+'.join(sorted(r.value for r in roles))}"
        grants.append(grant(name, roles, token=token, agent_id=agent_id, where=where))
    return grants


def parse_file(path: Path) -> list[Grant]:
    """Grants from a JSON or TOML file (by suffix; `.toml` is TOML, anything else JSON)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TokenConfigError(f"cannot read the tokens file {path}: {exc}") from None
    try:
        body = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise TokenConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    entries = body.get("tokens") if isinstance(body, Mapping) else body
    if not isinstance(entries, list):
        raise TokenConfigError(f"{path}: expected a list of tokens under \"tokens\"")
    return [_file_grant(entry, f"{path} token {n + 1}") for n, entry in enumerate(entries)]


def _file_grant(entry: Any, where: str) -> Grant:
    if not isinstance(entry, Mapping):
        raise TokenConfigError(f"{where}: expected a table with name, token (or sha256) and roles")
    unknown = set(entry) - {"name", "token", "sha256", "roles", "role", "agent_id"}
    if unknown:
        raise TokenConfigError(f"{where}: unknown keys {sorted(unknown)}")
    roles = entry.get("roles", [entry["role"]] if "role" in entry else [])
    if isinstance(roles, str):
        roles = [roles]
    name = str(entry.get("name") or entry.get("agent_id") or where)
    return grant(name, _roles(roles, where), token=entry.get("token"), sha256=entry.get("sha256"),
                 agent_id=entry.get("agent_id"), where=where)


class Auth:
    """Checks the bearer token of a request against the grants; or lets everyone in as admin."""

    def __init__(self, grants: Sequence[Grant], *, enabled: bool = True) -> None:
        digests = [g.digest for g in grants]
        if len(set(digests)) != len(digests):
            raise TokenConfigError("the same token is configured twice")
        self.grants = tuple(grants)
        self.enabled = enabled

    @classmethod
    def disabled(cls) -> Auth:
        """Everyone is admin: for `taskfold dev` and `taskfold gateway --no-auth` only."""
        return cls((), enabled=False)

    @classmethod
    def load(cls, tokens_file: Path | None = None, tokens: str | None = None) -> Auth:
        """Grants from a file and/or the env format; TokenConfigError if there are none."""
        grants = []
        if tokens_file is not None:
            grants += parse_file(Path(tokens_file))
        if tokens:
            grants += parse_env(tokens)
        if not grants:
            raise TokenConfigError(f"no tokens configured: set {ENV_TOKENS} or {ENV_TOKENS_FILE} "
                                   "(or pass --tokens-file), or run with --no-auth on a trusted machine")
        return cls(grants)

    def warn(self, stream: TextIO | None = None) -> None:
        """Say loudly, at start-up, that auth is off."""
        if not self.enabled:
            print("WARNING: taskfold gateway authentication is DISABLED: every request is treated as admin. "
                  "Use this only on a trusted machine (taskfold dev).", file=stream or sys.stderr, flush=True)

    def principal(self, token: str) -> Principal | None:
        """The principal of a token, or None; every grant is compared, in constant time each."""
        presented = digest(token)
        found = None
        for g in self.grants:
            if hmac.compare_digest(presented, g.digest):
                found = g.principal
        return found

    def authorize(self, request: Request, roles: Sequence[Role]) -> Principal:
        """The caller if it holds one of `roles` (admin always does); 401 or 403 otherwise."""
        if not self.enabled:
            return ANONYMOUS_ADMIN
        token = bearer_token(request.headers.get("authorization"))
        if token is None:  # a browser of the dashboard: its session cookie (projections.gateway.session)
            principal = principal_from_cookie(request)
        else:
            principal = self.principal(token) if token else None
        if principal is None:
            why = "missing bearer token" if token is None else "invalid bearer token"
            challenge = 'Bearer realm="taskfold"' + ("" if token is None else ', error="invalid_token"')
            raise ApiError(401, "unauthenticated", f"{why}: send Authorization: Bearer <token>",
                           headers={"WWW-Authenticate": challenge})
        if roles and not principal.can(*roles):
            wanted = " or ".join(sorted({r.value for r in roles} | {Role.admin.value}))
            held = ", ".join(sorted(r.value for r in principal.roles))
            raise ApiError(403, "forbidden", f"this route needs the role {wanted}; the token has {held}",
                           extra={"required_roles": sorted({r.value for r in roles} | {Role.admin.value})})
        return principal


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""  # present but unusable: answered as an invalid token, not a missing one
    return token.strip()


def ensure_agent(principal: Principal, agent_id: str) -> None:
    """403 unless the caller may act as `agent_id`: a token bound to it, or an admin."""
    if Role.admin in principal.roles:
        return
    if principal.agent_id != agent_id:
        bound = f"bound to agent {principal.agent_id!r}" if principal.agent_id else "not bound to any agent"
        raise ApiError(403, "forbidden", f"this token is {bound} and cannot act as agent {agent_id!r}",
                       [("agent_id", f"must be {principal.agent_id!r} for this token")]
                       if principal.agent_id else [])

"""What every route shares: the running gateway's parts, and who is calling.

Routers live in their own modules (`reads`, `writes`, `sse`, `agents_http`, `ops`) and
reach the running gateway only through `runtime(request)`; who may call them is declared
with `require(...)` roles, checked by `projections.gateway.auth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request

if TYPE_CHECKING:
    from projections.live import LiveProjection
    from taskfold.log.eventlog import EventLog


class Role(str, Enum):
    submitter = "submitter"  # submits, cancels and reads tasks
    agent = "agent"  # bound to one agent id: joins, polls, reports as that agent only
    auditor = "auditor"  # reads everything, including rejections and as-of views
    admin = "admin"  # everything, including redrive


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a token's name, its roles, and for agents the agent id it is bound to."""

    name: str
    roles: frozenset[Role]
    agent_id: str | None = None

    def can(self, *roles: Role) -> bool:
        return Role.admin in self.roles or any(r in self.roles for r in roles)


ANONYMOUS_ADMIN = Principal("anonymous (auth disabled)", frozenset({Role.admin}))


@dataclass
class Runtime:
    """The running gateway: its live projection, its writer, settings and auth."""

    live: LiveProjection
    log: EventLog
    auth: Any  # projections.gateway.auth.Auth: .authorize(request, roles) -> Principal
    write_timeout_s: float = 10.0  # read-your-write wait before a 503
    hub: Any = None  # projections.gateway.hub.Hub, when SSE is mounted
    extra: dict[str, Any] = field(default_factory=dict)


def runtime(request: Request) -> Runtime:
    """The Runtime of the app serving this request."""
    return request.app.state.runtime


def require(*roles: Role):  # noqa: ANN201 - a FastAPI dependency
    """A dependency that authenticates the caller and checks one of `roles` (admin always passes)."""

    async def check(request: Request) -> Principal:
        return runtime(request).auth.authorize(request, roles)

    return Depends(check)

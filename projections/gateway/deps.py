"""What every route shares, as FastAPI dependencies: the running gateway, and who is calling.

Routes take what they need as annotated parameters (`rt: RuntimeDep`, `store: StoreDep`,
`principal: SubmitterDep`, ...) rather than reaching into the request, so each route's
signature says what it uses and which roles may call it (checked by
`projections.gateway.auth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from projections.store import Store

if TYPE_CHECKING:
    from projections.gateway.auth import Auth
    from projections.gateway.hub import Hub
    from projections.gateway.workflows import Wakeups
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
    """The running gateway: its live projection (or a prebuilt store), its writer, auth and limits."""

    live: LiveProjection  # or app.ReadOnlyProjection: a prebuilt store, no projector
    log: EventLog  # or app.ReadOnlyLog: every append is a 405
    auth: Auth
    write_timeout_s: float = 10.0  # read-your-write wait before a 503
    batch_max: int = 1000  # tasks in one POST /v1/tasks/batch
    max_body_bytes: int = 1 << 20  # a larger request body is a 413
    read_only: bool = False
    store_path: Path | None = None  # where the projection store lives, when opened from a config
    hub: Hub | None = None  # the SSE feed, created when the streams router is first used
    workflow_wakeups: Wakeups | None = None  # the workflow streams' flags, made on first use


def runtime(request: Request) -> Runtime:
    """The Runtime of the app serving this request."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def store(rt: RuntimeDep) -> Store:
    """The projection store the read routes answer from."""
    return rt.live.store


StoreDep = Annotated[Store, Depends(store)]


def require(*roles: Role) -> Any:
    """A dependency that authenticates the caller and checks one of `roles` (admin always passes)."""

    async def check(request: Request, rt: RuntimeDep) -> Principal:
        return rt.auth.authorize(request, roles)

    return Depends(check)


SubmitterDep = Annotated[Principal, require(Role.submitter)]
ReaderDep = Annotated[Principal, require(Role.submitter, Role.auditor)]
AuditorDep = Annotated[Principal, require(Role.auditor)]
AgentDep = Annotated[Principal, require(Role.agent)]
AdminDep = Annotated[Principal, require(Role.admin)]

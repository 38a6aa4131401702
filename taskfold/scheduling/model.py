"""The scheduler's own state and settings, beside the fold's QueueState.

`Fleet` is folded from the same events as the queue (by `observe`), so it is a fold of the
log too and every worker that owns the queue reaches the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from immutables import Map

STRATEGIES = ("least_loaded", "round_robin", "weighted", "performance")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How one queue is scheduled."""

    strategy: str = "least_loaded"
    lease_ms: int = 30_000  # an attempt's lease; renewed by the holder's heartbeats
    session_fallback_ms: int = 5_000  # how long a session task waits for its sticky agent
    breaker_failures: int = 3  # consecutive failures that quarantine an agent
    breaker_cooldown_ms: int = 30_000  # quarantine length; then one probe task
    weights: Mapping[str, float] = field(default_factory=dict)  # agent -> weight, for "weighted"
    ewma_alpha: float = 0.2  # weight of the newest sample in the EWMAs
    agent_lost_ms: int = 60_000  # silence after which an agent is declared lost (AgentLeft)


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """What the scheduler has learned about one agent in one queue."""

    agent_id: str
    success_ewma: float = 1.0
    latency_ewma_ms: float | None = None
    consecutive_failures: int = 0
    quarantined_until: int | None = None
    probe_task: str | None = None  # the one task allowed while probing after a quarantine
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class Session:
    """The sticky agent of a session and when it last got a task."""

    agent_id: str
    last_used: int


@dataclass(frozen=True, slots=True)
class Fleet:
    """Per queue: agent records, sessions, and the round-robin cursor."""

    agents: Map = field(default_factory=Map)  # agent_id -> AgentRecord
    sessions: Map = field(default_factory=Map)  # session_id -> Session
    cursor: int = 0  # count of accepted assignments; round-robin starts after the last one

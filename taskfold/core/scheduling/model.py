"""The scheduler's own state and settings, beside the fold's QueueState.

`Fleet` is folded from the same events as the queue (by `observe`), so it is a fold of the
log too and every worker that owns the queue reaches the same one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from immutables import Map

from taskfold.core.scheduling.strategies import SCORERS

# The strategy names, read from the registry so a new strategy is declared in one place.
STRATEGIES = tuple(SCORERS)


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
    # An assignment its live agent never started (it missed it, or failed to report the
    # start) would otherwise be held forever: heartbeats keep renewing the lease.
    start_within_ms: int = 30_000
    reference_latency_ms: float = 1_000.0  # "performance": the run time that halves a score

    def __post_init__(self) -> None:
        # Fail at configuration time, not in the middle of a scheduling round.
        if self.strategy not in SCORERS:  # the live registry: a strategy added at run time counts
            raise ValueError(f"QueuePolicy.strategy {self.strategy!r} is unknown; known: {', '.join(SCORERS)}")
        for name in ("lease_ms", "breaker_failures", "agent_lost_ms", "start_within_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"QueuePolicy.{name} must be positive, got {getattr(self, name)}")
        for name in ("session_fallback_ms", "breaker_cooldown_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"QueuePolicy.{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError(f"QueuePolicy.ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        if not (math.isfinite(self.reference_latency_ms) and self.reference_latency_ms > 0):
            raise ValueError(f"QueuePolicy.reference_latency_ms must be positive, got {self.reference_latency_ms}")
        for agent, weight in sorted(self.weights.items()):
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"QueuePolicy.weights[{agent!r}] must be a finite number >= 0, got {weight}")


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
    # What opened (or last extended) the quarantine, kept because a late success resets
    # consecutive_failures while the quarantine runs on: the consecutive failures then, and
    # the task, time and kind of the failure that did it ("probe ..." when a probe failed).
    tripped_failures: int = 0
    tripped_task: str | None = None
    tripped_at: int | None = None
    tripped_by: str | None = None


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

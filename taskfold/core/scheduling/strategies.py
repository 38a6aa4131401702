"""Pluggable strategies: each scores one eligible agent for one task; the highest score wins.

A strategy is a function `(Option, Context) -> float` plus one line in `SCORERS`.
Scores are finite and higher is better; ties go to the smallest agent id (`rank`), so
every scheduler that sees the same inputs picks the same agent. Eligibility (liveness,
slots, capabilities, labels, breaker, sessions) is settled before a strategy is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model imports this module for the names, so only types come back
    from taskfold.core.scheduling.model import AgentRecord, QueuePolicy


@dataclass(frozen=True, slots=True)
class Option:
    """An eligible agent as a strategy sees it."""

    agent_id: str
    load: int  # attempts it holds, counting this scheduler's decisions not yet read back
    slots: int
    record: AgentRecord


@dataclass(frozen=True, slots=True)
class Context:
    """What a strategy may know beyond one agent: the policy and the round-robin ring."""

    policy: QueuePolicy
    ring: Mapping[str, int]  # agent id -> position among the queue's active seats, sorted by id
    cursor: int  # assignments so far (accepted, pending and this batch)


Scorer = Callable[[Option, Context], float]


def least_loaded(option: Option, context: Context) -> float:
    """score = free slots / slots: the agent with the largest free share of its slots wins."""
    return (option.slots - option.load) / option.slots if option.slots else 0.0


def round_robin(option: Option, context: Context) -> float:
    """score = 1 - distance / n, distance = steps after ring position `cursor mod n` (n seats)."""
    n = len(context.ring)
    if n == 0 or option.agent_id not in context.ring:
        return 0.0
    distance = (context.ring[option.agent_id] - context.cursor % n) % n
    return 1.0 - distance / n


def weighted(option: Option, context: Context) -> float:
    """score = weight / (1 + load), weight from policy.weights (default 1): weighted least-connections."""
    return float(context.policy.weights.get(option.agent_id, 1.0)) / (1 + option.load)


def performance(option: Option, context: Context) -> float:
    """score = success_ewma / (1 + latency_ewma_ms / reference_latency_ms).

    Neutral prior: an agent with no completed run counts as taking the reference latency,
    and its success rate starts at AgentRecord's 1.0, so a new agent gets tried and the
    circuit breaker, not the score, keeps a failing one away.
    """
    reference = float(context.policy.reference_latency_ms)
    record = option.record
    latency = record.latency_ewma_ms if record.latency_ewma_ms is not None else reference
    return record.success_ewma / (1.0 + max(0.0, latency) / reference)


SCORERS: dict[str, Scorer] = {
    "least_loaded": least_loaded,
    "round_robin": round_robin,
    "weighted": weighted,
    "performance": performance,
}


def scorer(name: str) -> Scorer:
    """The strategy registered under `name`, or ValueError naming the known ones."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(sorted(SCORERS))}") from None


def rank(options: Iterable[Option], name: str, context: Context) -> list[tuple[Option, float]]:
    """Options with their scores, best first; equal scores ordered by agent id."""
    score = scorer(name)
    scored = [(option, float(score(option, context))) for option in options]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0].agent_id))

"""When an agent last showed it was alive: the rule `decide` and `expirations` share."""

from __future__ import annotations

from collections.abc import Mapping

from taskfold.core.state import Member


def last_sign_of_life(seat: Member, heartbeats: Mapping[str, int]) -> int:
    """The agent's latest heartbeat or its (re)join time, whichever is later."""
    # A join is a sign of life too: a fresh agent has not heartbeated yet.
    return max(heartbeats.get(seat.agent_id, seat.joined_at), seat.joined_at)


def silence_ms(seat: Member, heartbeats: Mapping[str, int], now_ms: int) -> int:
    """How long the agent has said nothing, as seen at `now_ms` (never negative)."""
    return max(0, now_ms - last_sign_of_life(seat, heartbeats))

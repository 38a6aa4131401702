"""How long an agent may wait on the broker: the stop's deadlines, bounded calls, backoff.

An agent must stop when told to, whatever the broker does: a broker that is gone makes
every append wait for its request timeout (40 s in aiokafka) and every close wait for a
flush that never comes. So each broker call made while stopping is bounded, and the whole
stop fits in one budget (`StopBudget`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from taskfold.core.reports import error_text

log = logging.getLogger(__name__)

MIN_STOP_S = 2.0  # a stop budget is never shorter: leaving and closing need a moment
RESERVE_S = 4.0  # at most this much of the budget is kept from the attempts for the rest
CALL_S = 2.0  # one best-effort broker call while stopping (heartbeat, AgentLeft, close), at most
BEAT_TIMEOUT_S = 5.0  # a heartbeat not acknowledged by then counts as failed
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class StopBudget:
    """The deadlines of one stop, in event-loop time, from the moment it began.

    The whole stop takes at most max(drain_timeout, MIN_STOP_S) seconds: running attempts
    get it less a reserve (half of it, at most RESERVE_S); in the reserve, stopped
    attempts hand their tasks back (until `reports_by`), AgentLeft is appended (until
    `leave_by`), and the clients are closed (until `close_by`). What still waits on the
    broker at `close_by` is cancelled.
    """

    attempts_by: float
    reports_by: float
    leave_by: float
    close_by: float

    @classmethod
    def starting(cls, now: float, drain_timeout: float) -> StopBudget:
        """The budget of a stop that begins at loop time `now`."""
        budget = max(drain_timeout, MIN_STOP_S)
        reserve = min(RESERVE_S, budget / 2)
        end = now + budget
        return cls(attempts_by=end - reserve, reports_by=end - reserve / 2, leave_by=end - reserve / 4, close_by=end)

    @classmethod
    def at_once(cls, now: float) -> StopBudget:
        """The budget of a second signal: no drain, half a second to close."""
        return cls(now, now, now, now + 0.5)


async def bounded(call: Awaitable[object], until: float, what: str, *, most: float = CALL_S) -> bool:
    """Await `call` until loop time `until` (and for at most `most` seconds); False, logged, if it failed or ran out."""
    loop = asyncio.get_running_loop()
    timeout = max(0.0, min(until - loop.time(), most))
    try:
        await asyncio.wait_for(call, timeout)
        return True
    except TimeoutError:
        log.warning("%s: no answer from the broker within %.1f s; going on without it", what, timeout)
    except Exception as exc:
        log.warning("%s failed: %s", what, error_text(exc))
    return False


def backoff(failures: int, base: float) -> float:
    """Seconds to wait after `failures` failures in a row: base, 2 base, 4 base, ... up to BACKOFF_MAX_S."""
    return min(BACKOFF_MAX_S, max(base, 0.05) * 2 ** min(max(failures - 1, 0), 16))

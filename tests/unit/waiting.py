"""Waiting on a condition inside an event loop, with a deadline (no sleeps as synchronisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

DEADLINE_S = 5.0


async def until(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Return once condition() is truthy, yielding to the loop; TimeoutError naming `what` past the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.001)

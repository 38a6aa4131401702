"""Gather the appends of a short window into one produce: one batch per partition.

A Tansu Fetch lists every batch ever written to the partition (BROKER.md), so a writer
that appends record by record makes every reader of the partition pay, for ever. An
agent's reports (all its attempts') and a gateway's concurrent submits therefore go
through a `Coalescer`. Its protocol, per round:

1. The first append submitted to an idle coalescer opens a round and waits `window_s`,
   so that appends made meanwhile join it; `busy_window_s` instead when the previous
   round opened less than `busy_within_s` ago. Under steady traffic a writer then
   gathers more per batch (every reader pays for every batch, for ever), while a lone
   append still waits only the short window.
2. The round takes what is pending, in submission order. An append submitted `after`
   another that failed is failed with that cause, never appended; one whose waiter was
   cancelled before the round took it is dropped.
3. The rest goes out in one call of `append`: one produce, so the records of a
   partition land in one batch, in submission order.
4. Each waiter gets the positions of its own items; if the call fails, every waiter of
   the round gets the same exception (the cause), and none of them is retried here.
5. Appends submitted while a round is in flight wait for it and form the next round,
   sent at once (they have waited already). So rounds never overlap: an append never
   overtakes an earlier one, and one submitted `after` another lands in the same batch
   as it or in a later one, once it has landed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from taskfold.config import ClusterSettings

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


def append_window_s() -> float:
    """The configured window (TASKFOLD_APPEND_WINDOW_MS), in seconds."""
    return ClusterSettings().append_window_ms / 1000


def append_busy_window_s() -> float:
    """The configured window under steady traffic (TASKFOLD_APPEND_BUSY_WINDOW_MS), in seconds."""
    return ClusterSettings().append_busy_window_ms / 1000


class NotAppended(RuntimeError):
    """An append was not made because the append it must follow failed (the cause is chained)."""


@dataclass
class _Pending(Generic[Item, Result]):
    items: Sequence[Item]
    waiter: asyncio.Future[list[Result]]
    after: asyncio.Future[Any] | None = None


@dataclass
class Coalescer(Generic[Item, Result]):
    """Rounds of appends (see the module's protocol); `append` is the one call per round."""

    append_all: Callable[[list[Item]], Awaitable[Sequence[Result]]]
    window_s: float = 0.005
    busy_window_s: float | None = None  # the window while rounds follow each other (None: window_s)
    busy_within_s: float = 0.1  # rounds opened closer than this are steady traffic
    rounds: int = 0  # calls of append_all made, for tests and measures
    busy_rounds: int = 0  # rounds that waited busy_window_s
    _pending: list[_Pending[Item, Result]] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None
    _opened: float | None = None  # loop time the last round opened

    def submit(self, items: Sequence[Item], *, after: asyncio.Future[Any] | None = None
               ) -> asyncio.Future[list[Result]]:
        """Queue `items` for the next round; the future gives their results, or the round's failure."""
        waiter: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_retrieved)  # a waiter nobody awaits must not log "never retrieved"
        self._pending.append(_Pending(list(items), waiter, after))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run(), name="coalescer")
        return waiter

    async def append(self, items: Sequence[Item], *, after: asyncio.Future[Any] | None = None) -> list[Result]:
        """Append `items` in the next round and return their results (raises the round's failure)."""
        return await self.submit(items, after=after)

    async def close(self) -> None:
        """Send what is pending now and wait for it (failures stay with their waiters)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _run(self) -> None:
        now = asyncio.get_running_loop().time()
        busy = (self.busy_window_s is not None and self._opened is not None
                and now - self._opened < self.busy_within_s)
        self._opened = now
        self.busy_rounds += busy
        await asyncio.sleep(self.busy_window_s if busy else self.window_s)  # step 1
        while self._pending:
            taken = self._take()
            if taken:
                await self._send(taken)
            elif self._pending and (blocker := self._pending[0].after) is not None:
                await asyncio.wait([blocker])  # an `after` from elsewhere: nothing may go before it

    def _take(self) -> list[_Pending[Item, Result]]:
        """Step 2: the round's appends, in order; fails or drops those that must not go."""
        taken, self._pending = self._pending, []
        waiting = {id(p.waiter) for p in taken}
        out = []
        for index, pending in enumerate(taken):
            if pending.waiter.done():  # cancelled by its waiter: nobody wants it appended now
                continue
            after = pending.after
            if after is not None and not after.done() and id(after) not in waiting:
                # It follows an append this coalescer did not take yet: it and everything
                # after it wait for a later round, so order holds.
                self._pending = taken[index:] + self._pending
                break
            cause = _failure(after) if after is not None and after.done() else None
            if cause is not None:
                refused = NotAppended(f"not appended: the append it must follow failed ({cause})")
                refused.__cause__ = None if after.cancelled() else after.exception()  # type: ignore[union-attr]
                pending.waiter.set_exception(refused)
                continue
            out.append(pending)
        return out

    async def _send(self, taken: list[_Pending[Item, Result]]) -> None:
        """Steps 3 and 4: one call for the round, its results handed out."""
        items = [item for pending in taken for item in pending.items]
        try:
            results = list(await self.append_all(items)) if items else []
        except Exception as exc:
            for pending in taken:
                if not pending.waiter.done():
                    pending.waiter.set_exception(exc)
            return
        finally:
            self.rounds += bool(items)
        start = 0
        for pending in taken:
            end = start + len(pending.items)
            if not pending.waiter.done():
                pending.waiter.set_result(results[start:end])
            start = end


def _failure(future: asyncio.Future[Any]) -> str | None:
    """Why a settled future failed, or None if it succeeded."""
    if future.cancelled():
        return "it was cancelled"
    exc = future.exception()
    return None if exc is None else (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

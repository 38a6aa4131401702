"""`Line`: a queue's waiting index (`QueueState.waiting`) kept sorted between rounds.

decide takes the next tasks in scheduling order. Without a line it orders the index
with `heapq.nsmallest` every round, which costs O(waiting): at 5,000 queued tasks that
was 13% of a busy worker's samples. A writer that folds event after event knows which
tasks each event changed, and keeps a Line in step with them (`update`) at O(log n)
plus a C-level list insert per change. Pure data: no I/O, and decide checks it against
the state (`matches`, and each entry's value) before trusting it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable

from immutables import Map

from taskfold.core.state import Order


class Line:
    """The entries of a waiting index, sorted, with each task's entry."""

    __slots__ = ("entries", "_of")

    def __init__(self, waiting: Map | None = None) -> None:
        self._of: dict[str, Order] = dict(waiting.items()) if waiting is not None else {}
        self.entries: list[Order] = sorted(self._of.values())

    def update(self, task_ids: Iterable[str], waiting: Map) -> None:
        """Bring the entries of these tasks in step with `waiting` (the index after the change)."""
        for task_id in task_ids:
            old, new = self._of.get(task_id), waiting.get(task_id)
            if old == new:
                continue
            if old is not None:
                i = bisect_left(self.entries, old)
                del self.entries[i]
                del self._of[task_id]
            if new is not None:
                insort(self.entries, new)
                self._of[task_id] = new

    def matches(self, waiting: Map) -> bool:
        """A cheap guard: as many entries as the index (a missed update shows here, and decide
        then orders the index itself)."""
        return len(self._of) == len(waiting)

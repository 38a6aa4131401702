"""Fold the log from the beginning: the replay that the CLI, audits and tests share."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Cut, EventLog, Poison

Progress = Callable[[int], None]


@dataclass
class Replay:
    """What a replay found: the folded ledger, verdict counts, poison, and its speed."""

    ledger: Ledger = field(default_factory=Ledger)
    verdicts: Counter = field(default_factory=Counter)
    poison: list[Poison] = field(default_factory=list)
    records: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def replay(log: EventLog, cut: Cut | None = None, progress: Progress | None = None) -> Replay:
    """Fold every event up to the end of the log (or the cut); poison is counted and skipped."""
    result = Replay()
    started = time.perf_counter()
    async for entry in log.read(cut=cut):
        result.records += 1
        if isinstance(entry, Poison):
            result.poison.append(entry)
        else:
            result.verdicts[result.ledger.apply(entry.event, entry.where).outcome] += 1
        if progress is not None and result.records % 1000 == 0:
            progress(1000)
    if progress is not None:
        progress(result.records % 1000)
    result.seconds = time.perf_counter() - started
    return result


async def records_to_read(log: EventLog, cut: Cut | None = None) -> int:
    """How many records a replay will read at most (for a progress bar's total)."""
    ends = await log.end_offsets()
    if cut is not None and cut.offsets is not None:
        return sum(min(ends.get(p, 0), end) for p, end in cut.offsets.items())
    return sum(ends.values())

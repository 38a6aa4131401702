"""Fold the log from the beginning: `fold(log)`, which `taskfold replay`, audits and tests share."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Cut, EventLog, Poison

OnRead = Callable[[int], None]  # told how many more records were read


@dataclass
class FoldedLog:
    """What folding the log found: the folded ledger, verdict counts, poison, and its speed."""

    ledger: Ledger = field(default_factory=Ledger)
    verdicts: Counter = field(default_factory=Counter)
    poison: list[Poison] = field(default_factory=list)
    records: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


async def fold_log(log: EventLog, cut: Cut | None = None, progress: OnRead | None = None) -> FoldedLog:
    """Fold every event up to the end of the log (or the cut); poison is counted and skipped."""
    result = FoldedLog()
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
    """How many records fold_log will read at most (for a progress bar's total)."""
    ends = await log.end_offsets()
    if cut is not None and cut.offsets is not None:
        return sum(min(ends.get(p, 0), end) for p, end in cut.offsets.items())
    return sum(ends.values())

"""Audit the log itself: read `events` (whole, or up to a cut), fold it afresh, judge every rule.

Protocol:
1. Read the events topic in log order per partition through `EventLog.read` (the same
   reader and the same `Cut` as `taskfold replay`); poison is counted, never judged.
2. Fold each event with a fresh `Ledger`: its verdict is the fold's answer now.
3. Judge the event with that verdict (`Auditor`, own books, own state machine table).
4. With a projection store: compare the store's recorded verdict at that position, and
   judge the event a second time with the store's verdict, so that a projection that
   accepted what it should not have is caught by the same rules.
5. At the end: tasks overdue or not terminal, and the books' final states against the fold's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from taskfold.audit.deadline import DEFAULT_DEADLINE_MS
from taskfold.audit.invariants import Auditor
from taskfold.audit.report import AuditReport, Violation
from taskfold.audit.verdicts import StoreVerdicts
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Cut, Entry, EventLog, Poison

OnRead = Callable[[int], None]  # told how many more records were read
PROGRESS_EVERY = 1000


@dataclass
class LogAudit:
    """What auditing a log found: the fold's report, the store's (if any), poison, speed."""

    fold: AuditReport
    ledger: Ledger
    store: AuditReport | None = None
    verdicts: StoreVerdicts | None = None
    poison: list[Poison] = field(default_factory=list)
    records: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.fold.ok and (self.store is None or self.store.ok)

    @property
    def violations(self) -> list[Violation]:
        """Every violation, the fold's first."""
        return self.fold.violations + (self.store.violations if self.store is not None else [])


class LogAuditor:
    """Judges log entries (events and poison) one at a time; `finish` gives the LogAudit."""

    def __init__(self, store: StoreVerdicts | None = None) -> None:
        self.ledger = Ledger()
        self.fold = Auditor()
        self.store = store
        self.store_auditor = Auditor() if store is not None else None
        self.result = LogAudit(fold=self.fold.report, ledger=self.ledger, verdicts=store)

    def observe(self, entry: Entry) -> None:
        """Fold one entry and judge it with the fold's verdict (and the store's, if any)."""
        self.result.records += 1
        if isinstance(entry, Poison):
            self.result.poison.append(entry)
            if self.store is not None:
                self.store.passed(entry.partition, entry.offset)
            return
        event, position = entry.event, str(entry.position)
        verdict = self.ledger.apply(event, entry.where)
        self.fold.observe(event, verdict, position)
        if self.store is not None and self.store_auditor is not None:
            recorded = self.store.judge(entry.partition, entry.offset, event, verdict)
            self.store_auditor.observe(event, recorded, position)

    def finish(self, *, deadline_ms: int | None = DEFAULT_DEADLINE_MS, require_terminal: bool = False) -> LogAudit:
        """Judge the end of the log."""
        result = self.result
        result.fold = self.fold.finish(self.ledger, require_terminal=require_terminal, deadline_ms=deadline_ms)
        if self.store is not None and self.store_auditor is not None:
            # The store's end of log would repeat the fold's; what can differ is its verdicts' consequences.
            result.store = self.store_auditor.report
            result.store.violations = self.store.finish() + [
                _from_store(v, self.store.source) for v in result.store.violations]
        return result


async def audit_log(log: EventLog, cut: Cut | None = None, *, deadline_ms: int | None = DEFAULT_DEADLINE_MS,
                    require_terminal: bool = False, store: StoreVerdicts | None = None,
                    progress: OnRead | None = None) -> LogAudit:
    """Read and judge the log (or the cut of it); see the module's protocol."""
    started = time.perf_counter()
    auditor = LogAuditor(store)
    async for entry in log.read(cut=cut):
        auditor.observe(entry)
        if progress is not None and auditor.result.records % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    if progress is not None:
        progress(auditor.result.records % PROGRESS_EVERY)
    result = auditor.finish(deadline_ms=deadline_ms, require_terminal=require_terminal)
    result.seconds = time.perf_counter() - started
    return result


def _from_store(violation: Violation, source: str) -> Violation:
    return replace(violation, detail=f"{violation.detail} (judged with the verdicts recorded in {source})")

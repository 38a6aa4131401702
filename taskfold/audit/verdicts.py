"""The verdicts a projection recorded, compared with the verdicts of a fresh fold.

A projection store keeps, per task, the history of the events about it with the verdict
its projector gave each. The audit reads those verdicts through one small interface,
`recorded_verdicts(store) -> {"partition:offset": outcome}`, and compares them, position
by position, with what the fold gives the same events now.

The layout read is the tasks view's (`projections/views/tasks.py`): rows of
`task_history` (one per event about a task) and the rows of `queue_events` for events
about no task (memberships) carry `position` ("partition:offset") and `verdict`
({"outcome", "reason", "ref"}). An event about several tasks (a workflow, an agent
leaving with attempts) has several rows; rows that disagree are reported as such.

Only positions the store says it reflects (its `_offsets` for the events topic) are
compared; later ones are not projected yet and are counted, not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfold.audit.report import Violation
from taskfold.core.events import Event
from taskfold.core.state import Verdict

TABLES = ("task_history", "queue_events")  # projections.views.tasks HISTORY and QUEUE_EVENTS
EVENTS_ROLE = "events"  # the store's offsets key for the events topic (projections.projector.EVENTS)
OUTCOMES = ("accepted", "duplicate", "rejected")
DISAGREE = "inconsistent"  # the outcome given when an event's rows do not agree


def outcome_of(verdict: Any) -> str | None:
    """The outcome word of a recorded verdict (an object with `outcome`, or its text), or None."""
    if isinstance(verdict, Mapping):
        verdict = verdict.get("outcome")
    if not isinstance(verdict, str):
        return None
    word = verdict.split(":", 1)[0].strip()
    return word if word in OUTCOMES else None


def verdicts_in(rows: Iterable[Any]) -> dict[str, str]:
    """{"partition:offset": outcome} of rows carrying a position and a verdict; others are skipped."""
    out: dict[str, str] = {}
    for row in rows:
        if not isinstance(row, Mapping) or "position" not in row:
            continue
        outcome = outcome_of(row.get("verdict"))
        if outcome is None:
            continue
        position = str(row["position"])
        out[position] = outcome if out.get(position, outcome) == outcome else DISAGREE
    return out


def recorded_verdicts(store: Any) -> dict[str, str]:
    """{"partition:offset": outcome} for every event the store's projections recorded a verdict for."""
    return verdicts_in(row for table in TABLES for _key, row in store.scan(table))


@dataclass
class StoreVerdicts:
    """A store's recorded verdicts and what it reflects, judged against a fresh fold."""

    recorded: Mapping[str, str]
    covered: Mapping[int, int]  # partition -> next offset the store reflects
    source: str = "store"
    compared: int = 0
    not_recorded: int = 0
    not_projected: int = 0
    violations: list[Violation] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _read_to: dict[int, int] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path | str) -> StoreVerdicts:
        """Read a projection store's verdicts (read-only: a running gateway may hold it)."""
        from projections.store import Store

        store = Store(path, read_only=True)
        try:
            return cls(recorded_verdicts(store), store.offsets(EVENTS_ROLE), source=str(path))
        finally:
            store.close()

    def judge(self, partition: int, offset: int, event: Event, fresh: Verdict) -> Verdict:
        """The verdict the store gave this event (the fresh one where it gave none); a mismatch is recorded."""
        position = f"{partition}:{offset}"
        self._seen.add(position)
        self.passed(partition, offset)
        if offset >= self.covered.get(partition, 0):
            self.not_projected += 1
            return fresh
        outcome = self.recorded.get(position)
        if outcome is None:
            self.not_recorded += 1
            return fresh
        self.compared += 1
        if outcome != fresh.outcome:
            self.violations.append(Violation(
                "verdict-mismatch", event.queue, f"{event.event_type}: the store recorded {outcome}, a fresh fold "
                f"gives {fresh}", event.task, event.agent, position))
        return fresh if outcome == fresh.outcome else Verdict(outcome, f"as recorded by {self.source}")  # type: ignore[arg-type]

    def passed(self, partition: int, offset: int) -> None:
        """Note that the audit read this position (an event, or poison that has no verdict)."""
        self._read_to[partition] = max(self._read_to.get(partition, -1), offset)

    def finish(self) -> list[Violation]:
        """Mismatches, plus verdicts recorded at positions the log read holds no event at (poison)."""
        for position, outcome in sorted(self.recorded.items()):
            partition, _, offset = position.partition(":")
            if not (partition.isdigit() and offset.isdigit()) or position in self._seen:
                continue
            if int(offset) <= self._read_to.get(int(partition), -1):
                self.violations.append(Violation("verdict-mismatch", "-", f"the store recorded {outcome} at "
                                                 f"{position}, where the log holds no event", position=position))
        return self.violations

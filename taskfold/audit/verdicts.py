"""The verdicts a projection recorded, compared with the verdicts of a fresh fold.

The audit is handed a store's verdicts as `{"partition:offset": outcome}` with the
offsets the store reflects (the CLI reads them with `projections.verdicts`), and compares
them, position by position, with what the fold gives the same events now.

Only positions the store says it reflects are compared; later ones are not projected yet
and are counted, not judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from taskfold.audit.report import Violation
from taskfold.core.events import Event
from taskfold.core.state import Verdict


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

"""The verdicts a projection store recorded: what `taskfold audit --store` compares with a fresh fold.

The tasks view (`projections/views/tasks.py`) records, per task, the history of the events
about it with the verdict the projector gave each: rows of `task_history` (one per event
about a task) and rows of `queue_events` for events about no task (memberships) carry
`position` ("partition:offset") and `verdict` ({"outcome", "reason", "ref"}). An event
about several tasks (a workflow, an agent leaving with attempts) has several rows; rows
that disagree give the outcome `inconsistent`.

The audit (`taskfold.audit.verdicts`) never opens a store: the CLI reads the verdicts here
and hands them over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projections.projector import EVENTS
from projections.store import Store
from projections.views.tasks import HISTORY, QUEUE_EVENTS

OUTCOMES = ("accepted", "duplicate", "rejected")
DISAGREE = "inconsistent"  # the outcome given when an event's rows do not agree


@dataclass(frozen=True)
class RecordedVerdicts:
    """A store's verdicts by position, and the offsets it reflects."""

    verdicts: Mapping[str, str]  # "partition:offset" -> outcome
    covered: Mapping[int, int]  # partition -> next offset the store reflects


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


def recorded_verdicts(store: Store) -> dict[str, str]:
    """{"partition:offset": outcome} for every event the store's projections recorded a verdict for."""
    return verdicts_in(row for table in (HISTORY, QUEUE_EVENTS) for _key, row in store.scan(table))


def read_recorded(path: Path | str) -> RecordedVerdicts:
    """A store's recorded verdicts and offsets, opened read-only (a running gateway may hold it)."""
    store = Store(path, read_only=True)
    try:
        return RecordedVerdicts(recorded_verdicts(store), store.offsets(EVENTS))
    finally:
        store.close()

"""What an audit finds: violations of named rules, and the counts around them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

# Every rule the audit checks, with the promise it stands for (the CLI prints these).
RULES: dict[str, str] = {
    "terminal-twice": "a task ended (completed, dead-lettered or cancelled) more than once without a redrive",
    "two-holders": "an attempt was given while another was held, or the same attempt number was given twice",
    "unfenced-report": "a report was accepted from an agent that did not hold the task's current attempt",
    "over-slots": "an assignment gave an agent more tasks of a queue than its slots and prefetch allow (or it had no seat)",
    "over-running": "an agent started a task of a queue while already running as many as its slots",
    "priority-start": "an agent started a task while it held, unstarted, a task of strictly higher priority whose "
                      "assignment it had already read (TaskStarted v2 `seen`; judged on a log read with positions)",
    "over-concurrency": "an assignment put more tasks of a concurrency key in flight than its limit",
    "illegal-transition": "an accepted event is not a legal transition of the task (or seat) state machine",
    "accepted-twice": "the same event id was accepted twice (a redelivery counted)",
    "overdue": "a task is not terminal, nothing explains why, and it has been so for longer than the deadline",
    "not-terminal": "a task did not end (checked when every task is required to be terminal)",
    "state-mismatch": "the audit's own books and the fold disagree on a task's final state",
    "verdict-mismatch": "a projection recorded a different verdict than a fresh fold gives",
    "misrouted": "an event sits in a partition other than its queue's (a writer keyed it wrongly); the fold rejected it",
    "stamped-ahead": "an event's occurred_at is beyond the skew bound ahead of its record's broker timestamp; "
                     "the fold rejected it and it does not move the log's time",
    "unknown-dependency": "a task waits on a task id no queue has, and did not declare that it may come later",
    "started-early": "a task started before every one of its dependencies had ended",
}


def when(ms: int) -> str:
    """A log time (epoch ms) as ISO-8601 UTC, as the CLI shows times."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def span(ms: int) -> str:
    """A duration a person can read: 950 ms, 12.5 s, 7m05s, 3h02m."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass(frozen=True)
class Violation:
    """One broken promise, with where and why."""

    rule: str
    queue: str
    detail: str
    task_id: str | None = None
    agent_id: str | None = None
    position: str | None = None  # `partition:offset` of the event, when it came from the log

    def __str__(self) -> str:
        where = f" at {self.position}" if self.position else ""
        return f"[{self.rule}] queue {self.queue}{where}: {self.detail}"

    def as_dict(self) -> dict:
        """The violation as JSON-able fields."""
        return asdict(self)


@dataclass
class AuditReport:
    """Everything an audit found."""

    violations: list[Violation] = field(default_factory=list)
    events: int = 0
    accepted: int = 0
    tasks: int = 0
    states: Counter = field(default_factory=Counter)
    explained: Counter = field(default_factory=Counter)  # why non-terminal tasks are not overdue
    end_ms: int | None = None  # the newest occurred_at seen: the log's "now"

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_rule(self) -> Counter:
        """How many violations of each rule."""
        return Counter(v.rule for v in self.violations)

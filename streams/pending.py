"""Events this worker appended and has not read back yet.

A decision counts only once the log has it (ARCHITECTURE §1). Until then the scheduler
remembers it, so that it does not decide the same thing again on the next record or
tick. A pending event is forgotten when it is read back (whatever its verdict), when its
queue's partition is revoked, or after a timeout: the log decides, and a lost append is
simply decided again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from taskfold.core.events import AgentLeft, Event, TaskAssigned


def intent(event: Event) -> tuple:
    """What an appended event is about: a later event with the same intent would repeat it."""
    if isinstance(event, AgentLeft):
        return (event.queue, "AgentLeft", event.agent_id)
    return (event.queue, event.event_type, event.task, getattr(event, "attempt", None))


@dataclass(frozen=True, slots=True)
class _Entry:
    event: Event
    deadline: float


class Pending:
    """Appended, not yet read back, with a timeout; keyed by event id."""

    def __init__(self, timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self.expired = 0  # forgotten by timeout: appends the log never showed us

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, events: Iterable[Event]) -> None:
        """Remember events about to be appended."""
        deadline = self.clock() + self.timeout_s
        for event in events:
            self._entries[event.event_id] = _Entry(event, deadline)

    def settle(self, event_id: str) -> bool:
        """Forget an event read back from the log; True if it was ours."""
        return self._entries.pop(event_id, None) is not None

    def forget(self, queues: Iterable[str] | None = None) -> None:
        """Forget the pending events of these queues (all when None)."""
        if queues is None:
            self._entries.clear()
            return
        gone = set(queues)
        self._entries = {k: e for k, e in self._entries.items() if e.event.queue not in gone}

    def of(self, queue: str) -> list[Event]:
        """The live pending events of a queue, oldest first; drops the timed-out ones."""
        now = self.clock()
        live = []
        for event_id, entry in list(self._entries.items()):
            if entry.deadline <= now:
                del self._entries[event_id]
                self.expired += 1
            elif entry.event.queue == queue:
                live.append(entry.event)
        return live

    def assignments(self, queue: str) -> list[TaskAssigned]:
        """The pending TaskAssigned of a queue (what decide() must count as taken)."""
        return [e for e in self.of(queue) if isinstance(e, TaskAssigned)]

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        """The events whose intent is not pending already (a timer fires again before read back)."""
        taken = {intent(entry.event) for entry in self._entries.values()}
        return [e for e in events if intent(e) not in taken]

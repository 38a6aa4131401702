"""The audit's priority-start rule: judged by what the starting agent had read (TaskStarted
v2 `seen`), so a start decided before the agent read a critical assignment is no violation."""

from __future__ import annotations

from taskfold.audit.invariants import Auditor
from taskfold.core.events import Priority
from taskfold.core.fold import fold
from taskfold.core.testing import Events


def _violations(seen: int | None, positions: bool = True) -> list[str]:
    e = Events()
    events = [e.join("a1", slots=1, prefetch=2), e.submit("low", priority=Priority.low), e.assign("low", "a1"),
              e.submit("crit", priority=Priority.critical), e.assign("crit", "a1"),  # offset 4
              e.start("low", "a1").model_copy(update={"seen": seen})]
    _, verdicts = fold(events)
    assert all(v.accepted for v in verdicts)
    auditor = Auditor()
    found = []
    for offset, (event, verdict) in enumerate(zip(events, verdicts)):
        found += auditor.observe(event, verdict, f"0:{offset}" if positions else None)
    return [f"{v.rule}: {v.detail}" for v in found]


def test_a_low_start_after_reading_a_critical_assignment_to_the_same_agent_is_a_violation():
    assert _violations(seen=4) == ["priority-start: agent a1 started low (priority rank 3) after reading up to "
                                   "offset 4, while it held the higher-priority crit unstarted"]


def test_a_start_chosen_before_the_critical_assignment_was_read_is_not():
    assert _violations(seen=3) == []


def test_a_start_that_does_not_say_what_its_agent_had_read_is_not_judged():
    assert _violations(seen=None) == []
    assert _violations(seen=4, positions=False) == []

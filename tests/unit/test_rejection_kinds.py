"""Every rejection the fold gives has a bounded kind (a metric label), never `other`.

Each case folds real events and takes the fold's own reason, so a reworded reason that no
pattern knows any more fails here, not silently as `other` on a dashboard.
"""

from __future__ import annotations

import pytest

from taskfold.core.events import Event
from taskfold.core.fold import evolve
from taskfold.core.fold.placement import Where, home_partition
from taskfold.core.rejections import KINDS, rejection_kind
from taskfold.core.state import EMPTY
from taskfold.core.testing import Events


def last_verdict(events: list[Event], where: Where | None = None):  # noqa: ANN201
    state = EMPTY
    for event in events[:-1]:
        state, _ = evolve(state, event)
    return evolve(state, events[-1], where)[1]


def cases() -> list[tuple[str, list[Event], Where | None]]:
    e = Events(queue="q")
    joined, held = [e.join("a1", slots=1), e.submit("t1")], [e.join("a1", slots=1), e.submit("t1"), e.assign("t1", "a1")]
    home = home_partition("q", 4)
    return [
        ("already_submitted", [e.submit("t1"), e.submit("t1")], None),
        ("unknown_task", [e.complete("t9", "a1")], None),
        ("stale_attempt", [*held, e.complete("t1", "a1", attempt=3)], None),
        ("not_holder", [*held, e.join("a2"), e.complete("t1", "a2")], None),
        ("slots_full", [*held, e.submit("t2"), e.assign("t2", "a1")], None),
        ("not_joined", [e.submit("t1"), e.assign("t1", "a1")], None),
        ("agent_left", [*joined, e.leave("a1"), e.assign("t1", "a1")], None),
        ("not_eligible", [e.join("a1"), e.submit("t1", required_capabilities=["gpu"]), e.assign("t1", "a1")], None),
        ("concurrency_limit", [e.join("a1", slots=2), e.submit("t1", concurrency_key="k"),
                               e.submit("t2", concurrency_key="k"), e.assign("t1", "a1"), e.start("t1", "a1"),
                               e.assign("t2", "a1")], None),
        ("cancel_race", [*held, e.cancel("t1"), e.cancel("t1")], None),
        ("task_state", [e.submit("t1"), e.redrive("t1")], None),
        ("misrouted", [e.submit("t1")], Where((home + 1) % 4, 4)),
        ("clock_skew", [e.submit("t1", at=10**12)], Where(home, 4, timestamp=1)),
    ]


@pytest.mark.parametrize(("kind", "events", "where"), cases(), ids=[c[0] for c in cases()])
def test_the_folds_reasons_have_their_kind(kind: str, events: list[Event], where: Where | None) -> None:
    verdict = last_verdict(events, where)
    assert verdict.outcome == "rejected", verdict
    assert rejection_kind(verdict.reason) == kind, verdict.reason


def test_an_unknown_reason_is_other_and_every_kind_is_listed() -> None:
    assert rejection_kind("the moon is full") == "other" and rejection_kind(None) == "other"
    assert len(set(KINDS)) == len(KINDS) and "other" in KINDS

"""`audit explain` on a waiting task: the agents its breaker keeps away, and what the audit
says about a task back in line after a lost holder."""

from __future__ import annotations

from taskfold.audit import audit_events
from taskfold.audit.explain import QUARANTINED, Explainer, Timeline
from taskfold.cli.audit import _verdict_of_audit
from taskfold.core.events import Event
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.testing import Events

MINUTE = 60_000


def explained(events: list[Event], task: str, **policy) -> Timeline:
    explainer = Explainer(task, policy=QueuePolicy(**policy) if policy else None)
    for offset, event in enumerate(events):
        explainer.observe(event, f"0:{offset}")
    (timeline,) = explainer.timelines()
    return timeline


def tripping(e: Events, agent: str, at: int, n: int = 3) -> list[Event]:
    """n tasks on `agent`, each ending in a failure at `at` (the default breaker trips on the third)."""
    out = []
    for k in range(n):
        out += [e.submit(f"{agent}-f{k}", max_attempts=1, at=at - 100), e.assign(f"{agent}-f{k}", agent, at=at - 100)]
    return out + [e.fail(f"{agent}-f{k}", agent, at=at + k) for k in range(n)]


def test_explain_says_which_quarantined_agents_keep_a_waiting_task_and_until_when() -> None:
    e = Events()
    t0 = 1_700_000_000_000
    events = [e.join("a1", slots=3, at=t0, capabilities=["cpu"]), e.join("a2", slots=4, at=t0, capabilities=["cpu"]),
              e.join("gpu", at=t0, capabilities=["gpu"]), e.submit("late", at=t0), e.assign("late", "a2", at=t0)]
    events += tripping(e, "a1", t0 + 1_000) + tripping(e, "a2", t0 + 2_000)
    # A late success resets a2's counter; the quarantine, and what tripped it, stay.
    events += [e.complete("late", "a2", at=t0 + 2_500), e.submit("job", at=t0 + 3_000, required_capabilities=["cpu"]),
               e.submit("gpu-job", required_capabilities=["gpu"], at=t0 + 4_000)]
    timeline = explained(events, "job")
    assert timeline.standing.reason == QUARANTINED
    assert timeline.standing.until == t0 + 1_002 + 30_000  # the first quarantine to end
    assert [str(h) for h in timeline.held_back] == [
        "a1 is quarantined until 2023-11-14T22:13:51.002Z after 3 consecutive failures, the last on task a1-f2 "
        "(failed) at 2023-11-14T22:13:21.002Z",
        "a2 is quarantined until 2023-11-14T22:13:52.002Z after 3 consecutive failures, the last on task a2-f2 "
        "(failed) at 2023-11-14T22:13:22.002Z"]
    shown = _verdict_of_audit(timeline).plain
    assert shown.startswith("not terminal: every agent that can take it is quarantined or on probation "
                            "(until 2023-11-14T22:13:51.002Z)\nagents that can take it, kept away by their circuit "
                            "breaker:\n  a1 is quarantined until 2023-11-14T22:13:51.002Z after 3 consecutive")
    # The gpu agent is not quarantined, so a gpu task waits for another reason.
    gpu = explained(events, "gpu-job")
    assert gpu.held_back == [] and gpu.standing.reason is None and "never assigned" in gpu.standing.detail


def test_explain_names_an_agent_on_probation_and_does_not_blame_the_breaker_when_another_agent_is_free() -> None:
    e = Events()
    events = [e.join("a1", slots=4, at=1_000), *tripping(e, "a1", 2_000, n=2), e.submit("probe", at=2_000),
              e.assign("probe", "a1", at=13_000), e.submit("job", at=13_000)]
    timeline = explained(events, "job", breaker_failures=2, breaker_cooldown_ms=10_000)
    assert timeline.standing.reason == QUARANTINED and timeline.standing.until is None
    assert [str(h) for h in timeline.held_back] == [
        "a1 is on probation until its probe task probe ends (quarantined until 1970-01-01T00:00:12.001Z after "
        "2 consecutive failures, the last on task a1-f1 (failed) at 1970-01-01T00:00:02.001Z)"]
    timeline = explained(events + [e.join("a2", at=13_100)], "job", breaker_failures=2, breaker_cooldown_ms=10_000)
    assert [h.agent_id for h in timeline.held_back] == ["a1"]
    assert timeline.standing.reason is None and "never assigned" in timeline.standing.detail


def test_a_task_back_in_line_after_its_holder_was_lost_is_not_called_never_assigned() -> None:
    e = Events()
    events = [e.join("a1"), e.submit("t", max_attempts=1), e.assign("t", "a1"), e.leave("a1", "lost"),
              e.submit("clock", at=10 * MINUTE)]
    report = audit_events(events, require_terminal=False, deadline_ms=MINUTE)
    [overdue] = [v for v in report.violations if v.task_id == "t"]
    assert "queued since" in overdue.detail and "not assigned again after attempt 1" in overdue.detail

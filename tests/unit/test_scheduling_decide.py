"""Given a queue's events, when the scheduler decides at a time, then these assignments (and
every one of them is accepted by the fold)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from taskfold.core.events import Event, Priority, TaskAssigned
from taskfold.core.policies import derived_event_id
from taskfold.core.scheduling.decide import decide
from taskfold.core.scheduling.fleet import replay
from taskfold.core.scheduling.model import STRATEGIES, Fleet, QueuePolicy
from taskfold.core.scheduling.strategies import SCORERS, Context, Option
from taskfold.core.state import QueueState
from taskfold.core.testing import Events

POLICY = QueuePolicy()


def decided(
    events: Sequence[Event], policy: QueuePolicy = POLICY, *, now: int | None = None,
    heartbeats: Mapping[str, int] | None = None, pending: Sequence[TaskAssigned] = (),
) -> list[TaskAssigned]:
    """Decide over the fold of `events`; check the fold accepts every decision after `pending`."""
    state, fleet, _ = replay(events, policy)
    now = now if now is not None else max(ev.occurred_at for ev in events) + 1
    beats = heartbeats if heartbeats is not None else {agent: now for agent in state.members}
    decisions = decide(state, fleet, policy, queue="q", now_ms=now, heartbeats=beats, pending=pending)
    _, _, verdicts = replay([*pending, *decisions], policy, state, fleet)
    assert [str(v) for v in verdicts[len(pending):]] == ["accepted"] * len(decisions)
    return decisions


def picks(decisions: Sequence[TaskAssigned]) -> list[tuple[str, str]]:
    return [(d.task_id, d.agent_id) for d in decisions]


# priority and FIFO

def test_strict_priority_then_fifo():
    e = Events()
    events = [e.join("a1", slots=10), e.submit("low", priority=Priority.low),
              e.submit("m1"), e.submit("crit", priority=Priority.critical),
              e.submit("high", priority=Priority.high), e.submit("m2")]
    assert [d.task_id for d in decided(events)] == ["crit", "high", "m1", "m2", "low"]


def test_only_the_most_urgent_tasks_get_the_free_slots():
    e = Events()
    events = [e.join("a1", slots=2), e.submit("low", priority=Priority.low), e.submit("m1"),
              e.submit("crit", priority=Priority.critical)]
    assert [d.task_id for d in decided(events)] == ["crit", "m1"]


def test_tasks_that_are_not_due_wait():
    e = Events()
    events = [e.join("a1", slots=5), e.submit("later", not_before=9_000), e.submit("blocked", depends_on=["x"]),
              e.submit("now")]
    assert [d.task_id for d in decided(events, now=5_000)] == ["now"]
    assert [d.task_id for d in decided(events, now=9_000)] == ["later", "now"]


# capabilities and labels

def test_a_task_no_agent_can_take_is_skipped_and_the_rest_go_on():
    e = Events()
    events = [e.join("cpu", slots=1), e.submit("gpu-job", priority=Priority.critical, required_capabilities=["gpu"]),
              e.submit("cpu-job", priority=Priority.low)]
    decisions = decided(events)
    assert picks(decisions) == [("cpu-job", "cpu")]


def test_capabilities_and_labels_choose_the_agent_and_explain_the_others():
    e = Events()
    events = [e.join("a1", slots=1, capabilities=["gpu"], labels={"zone": "us"}),
              e.join("a2", slots=1, capabilities=["gpu"], labels={"zone": "eu"}),
              e.join("a3", slots=1), e.join("a4", slots=1, capabilities=["gpu"]),
              e.submit("t1", required_capabilities=["gpu"], labels={"zone": "eu"})]
    [decision] = decided(events)
    assert decision.agent_id == "a2"
    reasons = {c.agent_id: c.reason for c in decision.candidates}
    assert reasons == {"a1": "needs label zone=eu, has zone=us", "a2": None,
                       "a3": "lacks capabilities ['gpu']", "a4": "needs label zone=eu, has no zone"}
    assert [c.eligible for c in decision.candidates] == [False, True, False, False]


# capacity and pending

def test_capacity_counts_held_attempts():
    e = Events()
    events = [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.submit("t3"), e.assign("t1", "a1")]
    decisions = decided(events)
    assert picks(decisions) == [("t2", "a1")]
    assert decisions[0].candidates[0].load == 1 and decisions[0].candidates[0].slots == 2


def test_pending_decisions_hold_slots_and_are_not_decided_again():
    e = Events()
    events = [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.submit("t3")]
    first = decided(events)
    assert picks(first) == [("t1", "a1"), ("t2", "a1")]
    assert decided(events, pending=first) == []
    assert picks(decided(events, pending=first[:1])) == [("t2", "a1")]


def test_a_pending_decision_already_read_back_is_not_counted_twice():
    e = Events()
    events = [e.join("a1", slots=2), e.submit("t1"), e.submit("t2")]
    [first, _] = decided(events)
    assert picks(decided([*events, first], pending=[first])) == [("t2", "a1")]


def test_a_silent_agent_gets_nothing():
    e = Events()
    events = [e.join("a1", at=1_000), e.join("a2", at=1_000), e.submit("t1", at=1_000)]
    [decision] = decided(events, now=40_000, heartbeats={"a1": 5_000, "a2": 39_000})
    assert decision.agent_id == "a2"
    assert decision.candidates[0].reason == "silent for 35000 ms (lease 30000 ms)"


def test_a_concurrency_key_with_limit_one_never_has_two_holders():
    e = Events()
    events = [e.join("a1", slots=2), e.join("a2", slots=2), e.submit("t1", concurrency_key="k"),
              e.submit("t2", concurrency_key="k"), e.submit("t3")]
    first = decided(events)
    assert picks(first) == [("t1", "a1"), ("t3", "a2")]
    assert decided([*events, *first]) == []
    assert decided(events, pending=first) == []
    done = [*events, *first, e.complete("t1", "a1")]
    assert [d.task_id for d in decided(done)] == ["t2"]


def test_a_concurrency_limit_above_one_allows_that_many():
    e = Events()
    events = [e.join("a1", slots=5), *[e.submit(f"t{n}", concurrency_key="k", concurrency_limit=2) for n in range(4)]]
    assert [d.task_id for d in decided(events)] == ["t0", "t1"]


# strategies

def two_agents(e: Events, *, loads: tuple[int, int] = (0, 0)) -> list[Event]:
    events = [e.join("a1", slots=4), e.join("a2", slots=2)]
    for n in range(loads[0]):
        events += [e.submit(f"h1-{n}"), e.assign(f"h1-{n}", "a1")]
    for n in range(loads[1]):
        events += [e.submit(f"h2-{n}"), e.assign(f"h2-{n}", "a2")]
    return events


def test_least_loaded_prefers_the_largest_free_share():
    e = Events()
    events = two_agents(e, loads=(2, 0)) + [e.submit("t1")]
    [decision] = decided(events)
    assert decision.agent_id == "a2" and decision.strategy == "least_loaded"
    assert [(c.agent_id, c.score) for c in decision.candidates] == [("a1", 0.5), ("a2", 1.0)]


def test_least_loaded_spreads_a_batch():
    e = Events()
    events = [e.join("a1", slots=2), e.join("a2", slots=2)] + [e.submit(f"t{n}") for n in range(4)]
    assert picks(decided(events)) == [("t0", "a1"), ("t1", "a2"), ("t2", "a1"), ("t3", "a2")]


def test_round_robin_follows_the_cursor():
    e = Events()
    policy = QueuePolicy(strategy="round_robin")
    events = [e.join("a1", slots=9), e.join("a2", slots=9), e.join("a3", slots=9), e.submit("x"), e.assign("x", "a1")]
    events += [e.submit(f"t{n}") for n in range(4)]
    decisions = decided(events, policy)
    # One accepted assignment so far: the ring starts at its second seat.
    assert [d.agent_id for d in decisions] == ["a2", "a3", "a1", "a2"]
    assert {d.strategy for d in decisions} == {"round_robin"}


def test_round_robin_counts_pending_decisions_in_the_cursor():
    e = Events()
    policy = QueuePolicy(strategy="round_robin")
    events = [e.join(a, slots=9) for a in ("a1", "a2", "a3")] + [e.submit(f"t{n}") for n in range(3)]
    first, *_ = decided(events, policy)
    assert [d.agent_id for d in decided(events, policy, pending=[first])] == ["a2", "a3"]


def test_weighted_gives_a_heavier_agent_proportionally_more():
    e = Events()
    policy = QueuePolicy(strategy="weighted", weights={"a1": 2.0})
    events = [e.join("a1", slots=9), e.join("a2", slots=9)] + [e.submit(f"t{n}") for n in range(6)]
    agents = [d.agent_id for d in decided(events, policy)]
    assert agents.count("a1") == 4 and agents.count("a2") == 2


def test_performance_prefers_fast_reliable_agents_and_gives_new_ones_a_neutral_prior():
    e = Events()
    policy = QueuePolicy(strategy="performance", reference_latency_ms=1_000)
    events = [e.join("fast", slots=9), e.join("slow", slots=9), e.join("new", slots=9),
              e.submit("f"), e.assign("f", "fast", at=2_000), e.complete("f", "fast", at=2_250),
              e.submit("s"), e.assign("s", "slow", at=3_000), e.complete("s", "slow", at=6_000),
              e.submit("t1")]
    [decision] = decided(events, policy)
    scores = {c.agent_id: c.score for c in decision.candidates}
    assert decision.agent_id == "fast"
    assert scores == {"fast": 1 / 1.25, "new": 0.5, "slow": 1 / 4}


def test_equal_scores_go_to_the_smallest_agent_id():
    e = Events()
    for strategy in ("least_loaded", "weighted", "performance"):
        events = [e.join("b", slots=1), e.join("a", slots=1), e.submit(f"t-{strategy}")]
        assert decided(events, QueuePolicy(strategy=strategy))[0].agent_id == "a"


def test_an_unknown_strategy_or_a_bad_setting_is_refused_up_front():
    with pytest.raises(ValueError, match="unknown"):
        QueuePolicy(strategy="coin_flip")
    for bad in ({"lease_ms": 0}, {"ewma_alpha": 0.0}, {"weights": {"a1": -1.0}}, {"reference_latency_ms": 0}):
        with pytest.raises(ValueError):
            QueuePolicy(**bad)


def test_a_new_strategy_is_one_function_in_the_registry(monkeypatch):
    def most_loaded(option: Option, context: Context) -> float:
        return float(option.load)

    monkeypatch.setitem(SCORERS, "most_loaded", most_loaded)
    e = Events()
    events = two_agents(e, loads=(1, 0)) + [e.submit("t1")]
    [decision] = decided(events, QueuePolicy(strategy="most_loaded"))
    assert (decision.agent_id, decision.strategy) == ("a1", "most_loaded")
    assert set(STRATEGIES) <= set(SCORERS)


# sessions

def session_on_a1(e: Events) -> list[Event]:
    return [e.join("a1", slots=1, at=1_000), e.join("a2", slots=1, at=1_000),
            e.submit("s-1", session_id="s", at=1_000), e.assign("s-1", "a1", at=1_000)]


def test_a_session_task_goes_to_its_sticky_agent():
    e = Events()
    events = [e.join("a1", slots=2, at=1_000), e.join("a2", slots=2, at=1_000),
              e.submit("s-1", session_id="s", at=1_000), e.assign("s-1", "a2", at=1_000),
              e.submit("s-2", session_id="s", at=1_100)]
    [decision] = decided(events, now=1_200)
    assert (decision.agent_id, decision.strategy) == ("a2", "session")  # least_loaded would say a1


def test_a_session_waits_for_its_busy_sticky_agent_then_falls_back():
    e = Events()
    events = session_on_a1(e) + [e.submit("s-2", session_id="s", at=2_000)]
    assert decided(events, now=6_999) == []
    [decision] = decided(events, now=7_000)
    assert (decision.agent_id, decision.strategy) == ("a2", "least_loaded")
    assert decision.candidates[0].reason == "busy: holds 1 of 1 slots"


def test_a_session_waits_for_a_silent_sticky_agent_too():
    e = Events()
    events = session_on_a1(e) + [e.complete("s-1", "a1", at=1_500), e.submit("s-2", session_id="s", at=35_000)]
    assert decided(events, now=36_000, heartbeats={"a1": 1_500, "a2": 36_000}) == []
    [decision] = decided(events, now=40_000, heartbeats={"a1": 1_500, "a2": 40_000})
    assert (decision.agent_id, decision.candidates[0].reason) == ("a2", "silent for 38500 ms (lease 30000 ms)")
    [decision] = decided(events, now=36_000, heartbeats={"a1": 35_900, "a2": 36_000})
    assert (decision.agent_id, decision.strategy) == ("a1", "session")


def test_a_session_falls_back_at_once_when_its_agent_left():
    e = Events()
    events = session_on_a1(e) + [e.leave("a1", at=1_500), e.submit("s-2", session_id="s", at=2_000)]
    [decision] = decided(events, now=2_001)
    assert (decision.agent_id, decision.strategy) == ("a2", "least_loaded")


def test_a_new_session_pins_within_one_round():
    e = Events()
    events = [e.join("a1", slots=5), e.join("a2", slots=5), e.submit("x"), e.submit("s-1", session_id="s"),
              e.submit("s-2", session_id="s")]
    decisions = decided(events)
    assert picks(decisions) == [("x", "a1"), ("s-1", "a2"), ("s-2", "a2")]
    assert [d.strategy for d in decisions] == ["least_loaded", "least_loaded", "session"]


# circuit breaker

BREAKER = QueuePolicy(breaker_failures=2, breaker_cooldown_ms=10_000)


def tripped(e: Events) -> list[Event]:
    """a1 fails twice and is quarantined until 12_000; a2 is healthy; four tasks wait."""
    events = [e.join("a1", slots=3, at=1_000), e.join("a2", slots=3, at=1_000)]
    for n in range(2):
        events += [e.submit(f"f{n}", max_attempts=1, at=1_000), e.assign(f"f{n}", "a1", at=1_000),
                   e.fail(f"f{n}", "a1", at=2_000)]
    return events + [e.submit(f"t{n}", at=2_000) for n in range(4)]


def test_a_quarantined_agent_gets_nothing_during_the_cooldown():
    e = Events()
    decisions = decided(tripped(e), BREAKER, now=11_999)
    assert [d.agent_id for d in decisions] == ["a2"] * 3
    assert decisions[0].candidates[0].reason == (
        "quarantined until 12000: 2 consecutive failures, the last on task f1 (failed) at 2000")


def test_a_late_success_does_not_change_what_the_candidate_says_tripped_the_breaker():
    # A success resets the consecutive failures but not the quarantine: the entry must say
    # what opened the breaker, not "after 0 consecutive failures".
    e = Events()
    events = [e.join("a1", slots=3, at=1_000), e.join("a2", slots=3, at=1_000), e.submit("late", at=1_000),
              e.assign("late", "a1", at=1_000)]
    for n in range(2):
        events += [e.submit(f"f{n}", max_attempts=1, at=1_000), e.assign(f"f{n}", "a1", at=1_000)]
    events += [e.expire("f0", "a1", at=2_000), e.fail("f1", "a1", at=2_100), e.complete("late", "a1", at=3_000),
               e.submit("t0", at=3_000)]
    decisions = decided(events, BREAKER, now=5_000)  # f0 (its lease expired: not charged) and t0
    assert [(d.task_id, d.agent_id) for d in decisions] == [("f0", "a2"), ("t0", "a2")]
    assert decisions[0].candidates[0].reason == (
        "quarantined until 12100: 2 consecutive failures, the last on task f1 (failed) at 2100")


def test_after_the_cooldown_exactly_one_probe():
    e = Events()
    decisions = decided(tripped(e), BREAKER, now=12_000)
    assert [(d.agent_id, d.strategy) for d in decisions] == [
        ("a1", "probe"), ("a2", "least_loaded"), ("a2", "least_loaded"), ("a2", "least_loaded")]
    again = decided([*tripped(Events()), *decisions[:1]], BREAKER, now=12_001)
    assert [d.agent_id for d in again] == ["a2"] * 3
    assert again[0].candidates[0].reason == "on probation: probe task t0 must end first"


def test_a_probe_not_yet_read_back_still_blocks_a_second_probe():
    e = Events()
    [probe, *_] = decided(tripped(e), BREAKER, now=12_000)
    again = decided(tripped(Events()), BREAKER, now=12_000, pending=[probe])
    assert [d.agent_id for d in again] == ["a2"] * 3
    assert again[0].candidates[0].reason == "on probation: its probe task was just decided and must end first"


def test_a_probe_success_brings_the_agent_back():
    e = Events()
    events = tripped(e)
    [probe, *_] = decided(events, BREAKER, now=12_000)
    events += [probe, e.complete("t0", "a1", at=12_500)]
    assert [d.agent_id for d in decided(events, BREAKER, now=12_600)] == ["a1", "a2", "a1"]


def test_a_probe_failure_quarantines_again():
    e = Events()
    events = tripped(e)
    [probe, *_] = decided(events, BREAKER, now=12_000)
    events += [probe, e.fail("t0", "a1", at=12_500)]
    waiting = decided(events, BREAKER, now=22_499)
    assert {d.agent_id for d in waiting} == {"a2"}
    assert waiting[0].candidates[0].reason == "quarantined until 22500: its probe task t0 failed at 12500"
    assert [d.strategy for d in decided(events, BREAKER, now=22_500)][0] == "probe"


# the decision as an event

def test_the_event_carries_the_attempt_lease_time_and_a_derived_id():
    e = Events()
    policy = QueuePolicy(lease_ms=5_000)
    events = [e.join("a1"), e.submit("t1", max_attempts=3, correlation_id="wf-9"),
              e.assign("t1", "a1"), e.fail("t1", "a1", at=2_000)]
    [decision] = decided(events, policy, now=100_000)
    assert (decision.attempt, decision.lease_ms, decision.occurred_at) == (2, 5_000, 100_000)
    assert decision.event_id == derived_event_id("q/t1/2", 0)
    assert (decision.correlation_id, decision.actor, decision.queue) == ("wf-9", "scheduler", "q")


def test_two_schedulers_deciding_the_same_attempt_cannot_double_book():
    e = Events()
    events = [e.join("a1", slots=1), e.join("a2", slots=1), e.submit("t1")]
    state, fleet, _ = replay(events, POLICY)
    mine = decide(state, fleet, POLICY, queue="q", now_ms=40_000, heartbeats={"a1": 40_000, "a2": 40_000})
    theirs = decide(state, fleet, POLICY, queue="q", now_ms=40_000, heartbeats={"a2": 40_000})  # a1 looks silent
    assert (mine[0].agent_id, theirs[0].agent_id) == ("a1", "a2")
    assert mine[0].event_id == theirs[0].event_id
    _, _, verdicts = replay([mine[0], theirs[0]], POLICY, state, fleet)
    assert [v.outcome for v in verdicts] == ["accepted", "duplicate"]


def test_deciding_is_deterministic():
    def run() -> list[TaskAssigned]:
        e = Events()
        events = [e.join(f"a{n}", slots=2) for n in range(5)] + [e.submit(f"t{n}", session_id=f"s{n % 3}")
                                                                 for n in range(12)]
        state, fleet, _ = replay(events, POLICY)
        beats = {f"a{n}": 2_000 for n in reversed(range(5))}
        return decide(state, fleet, POLICY, queue="q", now_ms=2_000, heartbeats=beats)

    assert run() == run()


def test_nothing_to_do_on_an_empty_queue():
    assert decide(QueueState(), Fleet(), POLICY, queue="q", now_ms=0, heartbeats={}) == []

"""Hypothesis properties of the scheduler's pure core, over simulated queues: agents join,
leave, heartbeat or go quiet; tasks arrive with priorities, capabilities, labels, keys and
sessions; agents start, finish and fail what they hold; the scheduler decides (sometimes
with its own decisions not yet read back) and the clock expires leases.

At every decision: the fold accepts each event, nothing exceeds slots or probes, and
deciding again on the same inputs gives the same events."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskfold.core.events import AgentLeft, Event, Priority, TaskAssigned, TaskLeaseExpired, TaskTimedOut
from taskfold.core.scheduling.decide import decide
from taskfold.core.scheduling.fleet import replay
from taskfold.core.scheduling.model import STRATEGIES, Fleet, QueuePolicy
from taskfold.core.scheduling.timers import expirations
from taskfold.core.state import QueueState
from taskfold.core.testing import Events

AGENTS = ["a0", "a1", "a2", "a3"]
TASKS = [f"t{n}" for n in range(8)]
KINDS = ["submit"] * 4 + ["decide"] * 4 + ["start"] * 2 + ["complete"] * 2 + ["fail"] * 2 + [
    "join", "quiet", "quiet", "tick", "tick", "tick", "leave", "cancel"]

DELAYS = [0, 1, 100, 1_000, 3_000, 9_000]
step = st.tuples(st.sampled_from(KINDS), st.integers(0, 63), st.sampled_from(DELAYS), st.integers(0, 15))
policies = st.builds(
    QueuePolicy, strategy=st.sampled_from(STRATEGIES), lease_ms=st.sampled_from([4_000, 10_000]),
    session_fallback_ms=st.sampled_from([0, 3_000]), breaker_failures=st.integers(1, 3),
    breaker_cooldown_ms=st.sampled_from([2_000, 8_000]), weights=st.just({"a0": 2.0, "a3": 0.0}),
    agent_lost_ms=st.just(25_000),
)


class Sim:
    """A queue's log, its fold (state and fleet), the heartbeats, and the checks at each step."""

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy, self.e = policy, Events(seed="sched")
        self.state, self.fleet = QueueState(), Fleet()
        self.beats: dict[str, int] = {}
        self.log: list[Event] = []
        self.quiet: set[str] = set()  # agents that stopped heartbeating
        # A seated fleet, so drawn steps have somebody to schedule on.
        self.append([self.e.join("a0", slots=2, at=self.e.now), self.e.join("a1", slots=1, at=self.e.now),
                     self.e.join("a2", slots=2, at=self.e.now, capabilities=["gpu"], labels={"zone": "eu"})])
        self.append([submit(self, n, flags) for n, flags in enumerate([0, 8, 4, 1])])

    def tick(self, dt: int) -> None:
        """Time passes; every agent that is not quiet heartbeats."""
        self.e.now += dt
        self.beats.update({a: self.e.now for a in AGENTS if a not in self.quiet})

    def append(self, events: list[Event]) -> list[str]:
        self.log += events
        self.state, self.fleet, verdicts = replay(events, self.policy, self.state, self.fleet)
        return [str(v) for v in verdicts]

    def held(self) -> list[str]:
        return sorted(t for t, task in self.state.tasks.items() if task.state.in_flight)

    def decide(self, pending: list[TaskAssigned] = (), state=None, fleet=None) -> list[TaskAssigned]:
        return decide(state or self.state, fleet or self.fleet, self.policy, queue="q", now_ms=self.e.now,
                      heartbeats=self.beats, pending=pending)


def submit(sim: Sim, n: int, flags: int) -> Event:
    return sim.e.submit(
        TASKS[n % len(TASKS)], at=sim.e.now, priority=list(Priority)[n % 4], max_attempts=1 + flags % 3,
        required_capabilities=["gpu"] if flags % 5 == 1 else [], labels={"zone": "eu"} if flags % 7 == 2 else {},
        concurrency_key="k" if flags & 4 else None, concurrency_limit=1 + (n % 2),
        session_id=f"s{n % 2}" if flags & 8 else None,
        not_before=sim.e.now + 2_000 if n % 7 == 0 else None, timeout_ms=4_000 if n % 3 == 0 else 300_000,
    )


def join(sim: Sim, n: int, flags: int) -> Event:
    return sim.e.join(AGENTS[n % len(AGENTS)], slots=1 + flags % 3, at=sim.e.now,
                      capabilities=["gpu"] if flags & 4 else [], labels={"zone": "eu"} if flags & 8 else {})


def check_decisions(sim: Sim, decisions: list[TaskAssigned], flags: int) -> None:
    """Accepted, within slots and probes, deterministic, and consistent with pending."""
    assert decisions == sim.decide()
    assert decisions == decide(sim.state, sim.fleet, sim.policy, queue="q", now_ms=sim.e.now,
                               heartbeats=dict(reversed(sim.beats.items())))
    assert len({d.task_id for d in decisions}) == len(decisions)
    per_agent = Counter(d.agent_id for d in decisions)
    for agent, count in per_agent.items():
        seat = sim.state.member(agent)
        assert len(seat.holding) + count <= seat.slots
        record = sim.fleet.agents.get(agent)
        if record is not None and record.quarantined_until is not None:
            assert sim.e.now >= record.quarantined_until and record.probe_task is None and count == 1
    # This worker has read back only a prefix of its decisions: the rest are pending.
    cut = flags % (len(decisions) + 1)
    state, fleet, _ = replay(decisions[:cut], sim.policy, sim.state, sim.fleet)
    more = sim.decide(decisions[cut:], state, fleet)
    assert not {d.task_id for d in more} & {d.task_id for d in decisions}
    _, _, verdicts = replay(decisions[cut:] + more, sim.policy, state, fleet)
    assert [str(v) for v in verdicts[len(decisions) - cut:]] == ["accepted"] * len(more)


def check_fleet(sim: Sim) -> None:
    for agent in sim.fleet.agents.values():
        assert 0.0 <= agent.success_ewma <= 1.0 and agent.consecutive_failures >= 0
        if agent.probe_task is not None:
            task = sim.state.task(agent.probe_task)
            assert agent.quarantined_until is not None
            assert task.state.in_flight and task.agent_id == agent.agent_id


def run_step(sim: Sim, kind: str, n: int, flags: int) -> None:
    held = sim.held()
    pick = held[n % len(held)] if held else None
    task = sim.state.task(pick) if pick else None
    if kind == "submit":
        sim.append([submit(sim, n, flags)])
    elif kind == "join":
        sim.append([join(sim, n, flags)])
    elif kind == "leave":
        sim.append([sim.e.leave(AGENTS[n % len(AGENTS)], reason="lost" if flags & 1 else "drained", at=sim.e.now)])
    elif kind == "quiet":
        sim.quiet ^= {AGENTS[n % len(AGENTS)]}
    elif kind == "cancel":
        sim.append([sim.e.cancel(TASKS[n % len(TASKS)], at=sim.e.now)])
    elif kind in ("start", "complete", "fail") and task is not None:
        sim.append([getattr(sim.e, kind)(task.task_id, task.agent_id, attempt=task.attempt, at=sim.e.now)])
    elif kind == "decide":
        decisions = sim.decide()
        check_decisions(sim, decisions, flags)
        assert sim.append(decisions) == ["accepted"] * len(decisions)
    elif kind == "tick":
        found = expirations(sim.state, sim.fleet, sim.policy, queue="q", now_ms=sim.e.now, heartbeats=sim.beats)
        lost = {ev.agent_id for ev in found if isinstance(ev, AgentLeft)}
        ended = [ev for ev in found if isinstance(ev, (TaskLeaseExpired, TaskTimedOut))]
        assert not {ev.agent_id for ev in ended} & lost
        assert len({ev.task_id for ev in ended}) == len(ended)
        assert sim.append(found) == ["accepted"] * len(found)


def simulate(policy: QueuePolicy, steps: list[tuple]) -> Sim:
    """Run the steps with every check, then one last round that must be accepted too."""
    sim = Sim(policy)
    for kind, n, dt, flags in steps:
        sim.tick(dt)
        run_step(sim, kind, n, flags)
        check_fleet(sim)
    decisions = sim.decide()
    check_decisions(sim, decisions, 0)
    assert sim.append(decisions) == ["accepted"] * len(decisions)
    return sim


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, steps=st.lists(step, min_size=5, max_size=40))
def test_decisions_and_expirations_are_always_accepted_and_within_limits(policy, steps):
    simulate(policy, steps)


_PROBE = """
import json, sys
from taskfold.core.scheduling.model import QueuePolicy
from tests.property.test_scheduling_properties import simulate
strategy, steps = json.loads(sys.stdin.read())
sim = simulate(QueuePolicy(strategy=strategy, breaker_failures=1, breaker_cooldown_ms=2_000, lease_ms=4_000,
                           agent_lost_ms=25_000), [tuple(s) for s in steps])
print(json.dumps([[e.model_dump_json() for e in sim.log], repr(sorted(sim.fleet.agents.items())),
                  repr(sorted(sim.fleet.sessions.items())), sim.fleet.cursor]))
"""


def test_scheduling_is_the_same_under_different_hash_seeds() -> None:
    """str hashing differs between processes; decisions and the fleet must not depend on set order."""
    rng = random.Random(11)
    steps = [(rng.choice(KINDS), rng.randint(0, 63), rng.choice(DELAYS), rng.randint(0, 15)) for _ in range(150)]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outputs = set()
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(["round_robin", steps]),
                              env=dict(os.environ, PYTHONHASHSEED=seed), capture_output=True, text=True,
                              check=True, cwd=root)
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop())[0]  # the run did append events


@given(
    lines=st.lists(st.tuples(st.sampled_from(list(Priority)), st.integers(0, 3)), min_size=0, max_size=700),
    now=st.integers(1_000, 2_000),
    taken=st.sets(st.integers(0, 700), max_size=40),
)
@settings(max_examples=30, deadline=None)
def test_decide_takes_waiting_tasks_in_the_same_order_as_sorting_the_whole_line(lines, now, taken):
    # The round looks at the line in heapq slices that grow as it goes; it must see exactly
    # the due, untaken tasks in (priority, arrival) order, as a full sort would.
    from taskfold.core.policies import is_due
    from taskfold.core.scheduling.decide import _Round

    e = Events(queue="q", seed="line")
    events = []
    for n, (priority, delay) in enumerate(lines):
        # delay 0: queued; otherwise not_before in the past or the future of `now`.
        extra = {} if delay == 0 else {"not_before": now + (delay - 2) * 500}
        events.append(e.submit(f"t{n:04d}", at=1_000, priority=priority, **extra))
    state, fleet, _ = replay(events, QueuePolicy())
    round_ = _Round(state, fleet, QueuePolicy(), now, {})
    round_.taken = {f"t{n:04d}" for n in taken}
    expected = sorted((t for t in state.tasks.values() if t.task_id not in round_.taken and is_due(t, now)),
                      key=lambda t: (t.priority.rank, t.arrival, t.task_id))
    assert [t.task_id for t in round_.waiting()] == [t.task_id for t in expected]

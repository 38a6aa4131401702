"""Hypothesis properties of the fold over arbitrary event sequences from small pools of
tasks, agents and attempts (so that collisions, races and stale reports are common)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskfold.core.events import Backoff, Event, TaskAssigned, TaskCompleted, TaskRedriven
from taskfold.core.fold import Ledger, evolve, fold
from taskfold.core.state import TERMINAL, TaskState
from taskfold.core.testing import Events

TASKS = ["t0", "t1", "t2", "t3"]
AGENTS = ["a0", "a1", "a2"]
# Weighted by repetition: the life of a task needs more submits and assignments than faults.
KINDS = ["submit"] * 4 + ["join"] * 2 + ["assign"] * 4 + ["start"] * 2 + ["complete"] * 2 + [
    "leave", "fail", "expire", "time_out", "cancel", "cancelled", "redrive", "resolved"]

REPORTS = {"start", "complete", "fail", "expire", "time_out", "cancelled"}

STEP_PARTS = (st.sampled_from(TASKS), st.sampled_from(AGENTS), st.integers(0, 3), st.integers(0, 3_000), st.booleans())
step = st.tuples(st.sampled_from(KINDS), *STEP_PARTS)


def build(steps: list[tuple]) -> list[Event]:
    """Turn drawn steps into events with a clock that only moves forward.

    Reports mostly name the current attempt and its holder (mode 0-1), sometimes another
    agent (mode 2) or a stale attempt (mode 3), so that both the happy path and the
    fencing rules are exercised. The fold still judges every event.
    """
    e = Events(seed="prop")
    shadow = Ledger()
    # A seated fleet and every task submitted once, so drawn steps act on something.
    out: list[Event] = [e.join("a0", slots=2), e.join("a1", slots=1)]
    for n, task in enumerate(TASKS):
        out.append(e.submit(task, max_attempts=2, backoff=Backoff(initial_ms=500),
                            concurrency_key="c" if n % 2 else None, idempotency_key=f"k-{task}"))
    for event in out:
        shadow.apply(event)
    for kind, task, agent, mode, dt, flag in steps:
        e.now += dt
        at = e.now
        state = shadow.state("q")
        if mode < 2 and task not in state.tasks and len(state.tasks):
            task = sorted(state.tasks)[dt % len(state.tasks)]
        held = sorted(t for t, v in state.tasks.items() if v.state.in_flight)
        if kind in REPORTS and mode < 2 and held:
            task = held[dt % len(held)]
        if kind == "assign" and mode < 2:
            free = sorted(a for a, m in state.members.items() if m.active and len(m.holding) < m.slots)
            agent = free[dt % len(free)] if free else agent
        known = state.task(task)
        current = known.attempt if known else 0
        holder = known.agent_id if known and known.agent_id and mode < 2 else agent
        attempt = max(1, current - 1) if mode == 3 else max(1, current)
        if kind == "submit":
            deps = [TASKS[(TASKS.index(task) + 1) % len(TASKS)]] if flag and mode == 0 else []
            event = e.submit(task, at=at, depends_on=deps, max_attempts=2,
                             concurrency_key="c" if mode == 1 else None,
                             backoff=Backoff(initial_ms=500), idempotency_key=f"k-{task}" if flag else None)
        elif kind == "join":
            event = e.join(agent, slots=mode + 1, at=at)
        elif kind == "leave":
            event = e.leave(agent, reason="lost" if flag else "drained", at=at)
        elif kind == "assign":
            event = e.assign(task, agent, attempt=current + 1 if mode < 3 else max(1, current), at=at)
        elif kind in REPORTS - {"fail"}:
            event = getattr(e, kind)(task, holder, attempt=attempt, at=at)
        elif kind == "fail":
            event = e.fail(task, holder, attempt=attempt, retryable=flag, at=at)
        elif kind == "cancel":
            event = e.cancel(task, at=at)
        elif kind == "redrive":
            event = e.redrive(task, at=at)
        else:
            dependency = TASKS[(TASKS.index(task) + 1) % len(TASKS)]
            event = e.resolved(task, dependency, outcome="satisfied" if flag else "failed", at=at)
        shadow.apply(event)
        out.append(event)
    return out


def with_redeliveries(events: list[Event], picks: list[int]) -> list[Event]:
    """The events with some of them delivered again later (at-least-once delivery)."""
    out = list(events)
    for pick in picks:
        if events:
            out.insert(min(len(out), pick % (len(out) + 1)), events[pick % len(events)])
    return out


sequences = st.lists(step, min_size=5, max_size=80).map(build)


def build_lossy(steps: list[tuple[str, int]]) -> list[Event]:
    """Assignments of ready tasks and the ends of held attempts, mostly by losing the holder,
    so that rows of lost holders (and the dead letters they cause) are common."""
    e, shadow = Events(seed="lossy"), Ledger()
    out: list[Event] = [e.join("a0", slots=2), e.join("a1", slots=2)]
    out += [e.submit(task, max_attempts=1 + n % 2, backoff=Backoff(initial_ms=0)) for n, task in enumerate(TASKS)]
    for event in out:
        shadow.apply(event)
    for kind, pick in steps:
        state = shadow.state("q")
        ready = sorted(t for t, v in state.tasks.items() if v.state in (TaskState.queued, TaskState.retry_wait))
        held = sorted(t for t, v in state.tasks.items() if v.state.in_flight)
        seats = sorted(a for a, m in state.members.items() if m.active and len(m.holding) < m.slots)
        if kind == "assign" and ready and seats:
            task = ready[0 if pick % 3 else pick % len(ready)]  # the same task often, so rows grow
            event = e.assign(task, seats[pick % len(seats)], attempt=state.tasks[task].attempt + 1, at=e.now + 1)
        elif kind in ("expire", "fail", "time_out", "complete") and held:
            task = state.tasks[held[pick % len(held)]]
            event = getattr(e, kind)(task.task_id, task.agent_id, attempt=task.attempt)
        elif kind in ("lost", "drained"):
            event = e.leave(AGENTS[pick % 2], reason=kind)
        elif kind == "join":
            event = e.join(AGENTS[pick % 2], slots=2)
        elif kind == "redrive":
            event = e.redrive(TASKS[pick % len(TASKS)])
        else:
            continue
        shadow.apply(event)
        out.append(event)
    return out


LOSSY = ["assign"] * 4 + ["expire"] * 3 + ["lost", "join", "join", "drained", "fail", "time_out", "complete", "redrive"]
lossy_sequences = st.lists(st.tuples(st.sampled_from(LOSSY), st.integers(0, 100)), min_size=20, max_size=80).map(
    build_lossy)
common = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(sequences, st.lists(st.integers(0, 10_000), max_size=10))
def test_no_task_completes_twice(events: list[Event], picks: list[int]) -> None:
    stream = with_redeliveries(events, picks)
    _, verdicts = fold(stream)
    completions = Counter(ev.task_id for ev, v in zip(stream, verdicts)
                          if isinstance(ev, TaskCompleted) and v.accepted)
    assert all(n == 1 for n in completions.values()), completions


@common
@given(sequences, st.integers(0, 60))
def test_replaying_a_prefix_gives_the_same_states_and_verdicts(events: list[Event], cut: int) -> None:
    prefix = events[: cut % (len(events) + 1)]
    first, first_verdicts = fold(prefix)
    again, again_verdicts = fold(prefix)
    assert first_verdicts == again_verdicts
    assert first.queues == again.queues
    # Continuing from the prefix's state is the same as folding everything at once.
    whole, whole_verdicts = fold(events)
    _, rest_verdicts = fold(events[len(prefix):], ledger=first)
    assert first_verdicts + rest_verdicts == whole_verdicts
    assert first.queues == whole.queues


@common
@given(sequences)
def test_an_accepted_event_delivered_again_changes_nothing(events: list[Event]) -> None:
    ledger = Ledger()
    for event in events:
        if ledger.apply(event).accepted:
            before = ledger.state(event.queue)
            state, verdict = evolve(before, event)
            assert verdict.outcome == "duplicate", (event, verdict)
            assert state == before


@common
@given(sequences)
def test_terminal_states_never_change(events: list[Event]) -> None:
    ledger = Ledger()
    for event in events:
        before = {tid: t for tid, t in ledger.state("q").tasks.items() if t.state in TERMINAL}
        ledger.apply(event)
        after = ledger.state("q").tasks
        for task_id, task in before.items():
            if isinstance(event, TaskRedriven) and task.state == TaskState.dead_lettered:
                continue  # redrive is the one designed way out of a dead letter
            assert after[task_id] == task, (event, task_id)


@common
@given(sequences)
def test_slots_and_concurrency_limits_hold(events: list[Event]) -> None:
    ledger = Ledger()
    for event in events:
        verdict = ledger.apply(event)
        state = ledger.state("q")
        in_flight = {tid: t for tid, t in state.tasks.items() if t.state.in_flight}
        held = Counter()
        if isinstance(event, TaskAssigned) and verdict.accepted:
            # A seat may hold more than its slots after re-joining with fewer; it may never be assigned past them.
            seat = state.members[event.agent_id]
            assert len(seat.holding) <= seat.slots
        for seat in state.members.values():
            for task_id in seat.holding:
                assert in_flight[task_id].agent_id == seat.agent_id
                held[task_id] += 1
        assert set(held) == set(in_flight) and all(n == 1 for n in held.values())
        for key, holders in state.holders.items():
            assert holders and len(holders) <= min(state.tasks[t].concurrency_limit for t in holders)


@common
@given(st.one_of(sequences, lossy_sequences))
def test_charged_attempts_stay_within_max_attempts_and_lost_holders_within_their_limit(events: list[Event]) -> None:
    from taskfold.core.state import LOST_HOLDERS_LIMIT

    ledger = Ledger()
    for event in events:
        ledger.apply(event)
        for task in ledger.state("q").tasks.values():
            assert 0 <= task.charged_attempts <= task.max_attempts, (event, task)
            assert task.lost_attempts >= len(task.lost_holders), (event, task)
            # A full row of lost holders is a dead letter; anything else keeps the row shorter.
            full = len(task.lost_holders) >= LOST_HOLDERS_LIMIT
            assert not full or (task.state == TaskState.dead_lettered and len(task.lost_holders) == LOST_HOLDERS_LIMIT)


_PROBE = """
import json, sys
from taskfold.core.fold import fold
from tests.property.test_fold_properties import build
steps = json.loads(sys.stdin.read())
ledger, verdicts = fold(build([tuple(s) for s in steps]))
state = ledger.state("q")
print(json.dumps([[str(v) for v in verdicts],
                  sorted((t.task_id, t.state.value, t.attempt, t.agent_id, t.due_at) for t in state.tasks.values())]))
"""


def test_fold_is_the_same_under_different_hash_seeds() -> None:
    """str hashing differs between processes; the fold must not depend on set order."""
    import random

    rng = random.Random(7)
    steps = [(rng.choice(KINDS), rng.choice(TASKS), rng.choice(AGENTS), rng.randint(0, 3),
              rng.randint(0, 3000), rng.random() < 0.5) for _ in range(400)]
    outputs = set()
    for seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        done = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(steps), env=env,
                              capture_output=True, text=True, check=True, cwd=_repo_root())
        outputs.add(done.stdout)
    assert len(outputs) == 1


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@common
@given(sequences)
def test_rows_touched_by_each_event_rebuild_the_same_state(events: list[Event]) -> None:
    from taskfold.core.foldrows import rebuild, touched

    ledger = Ledger()
    tasks, seats = {}, {}
    for event in events:
        before = ledger.state("q")
        ledger.apply(event)
        after = ledger.state("q")
        changed_tasks, changed_seats = touched(before, after, event)
        tasks.update((t.task_id, t) for t in changed_tasks)
        seats.update((m.agent_id, m) for m in changed_seats)
        assert rebuild(tasks.values(), seats.values()) == after, event


@common
@given(st.one_of(sequences, lossy_sequences), st.lists(st.integers(0, 10_000), max_size=10))
def test_the_audit_finds_nothing_wrong_with_what_the_fold_accepts(events: list[Event], picks: list[int]) -> None:
    from taskfold.audit import audit_events

    report = audit_events(with_redeliveries(events, picks), require_terminal=False)
    assert report.ok, report.violations

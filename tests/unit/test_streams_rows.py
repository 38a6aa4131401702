"""The scheduler's rows: JSON round trips, and rows persisted event by event rebuild the fold.

Random event sequences over a small pool of tasks and agents (so that races, stale
reports, sessions, concurrency keys and dependencies are common) are folded with
`taskfold.core.scheduling.fleet.replay`, the reference; the rows must give the same state back.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskfold.core import foldrows, workingset
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.core.events import Backoff, Event
from taskfold.core.fold import Ledger
from taskfold.core.scheduling.fleet import replay
from taskfold.core.scheduling.model import AgentRecord, Fleet, QueuePolicy, Session
from taskfold.core.state import QueueState
from taskfold.core.testing import Events

TASKS = ["t0", "t1", "t2", "t3"]
AGENTS = ["a0", "a1", "a2"]
KINDS = ["submit"] * 3 + ["join"] * 2 + ["assign"] * 4 + ["start"] * 2 + ["complete"] * 2 + [
    "fail", "expire", "time_out", "leave", "cancel", "cancelled", "redrive"]
POLICY = QueuePolicy(breaker_failures=2)

steps = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 2),
                           st.integers(0, 2_000), st.booleans()), max_size=40)


def events_from(drawn: list[tuple]) -> list[Event]:
    """Events of queue q: a seated fleet, then the drawn steps, aimed at live tasks mostly."""
    e = Events(seed="rows")
    out: list[Event] = [e.join("a0", slots=2, capabilities=["gpu"], labels={"zone": "eu"}), e.join("a1")]
    shadow = Ledger()
    for event in out:
        shadow.apply(event)
    for kind, ti, ai, dt, flag in drawn:
        e.now += dt
        task, agent = TASKS[ti], AGENTS[ai]
        known = shadow.state("q").task(task)
        attempt = known.attempt if known else 0
        holder = known.agent_id if known and known.agent_id and flag else agent
        if kind == "submit":
            event = e.submit(task, session_id="s1" if flag else None, concurrency_key="c" if dt % 2 else None,
                             depends_on=[TASKS[(ti + 1) % 4]] if dt % 3 == 0 else [], max_attempts=2,
                             backoff=Backoff(initial_ms=100), idempotency_key=f"k{ti}" if flag else None,
                             labels={"zone": "eu"} if dt % 5 == 0 else {},
                             payload='{"n": %d, "quotes": "%s"}' % (dt, '\\"' * (dt % 7)))
        elif kind == "join":
            event = e.join(agent, slots=1 + dt % 2)
        elif kind == "assign":
            event = e.assign(task, agent, attempt=attempt + 1)
        elif kind == "leave":
            event = e.leave(agent, reason="lost" if flag else "drained")
        elif kind == "cancel":
            event = e.cancel(task)
        elif kind == "redrive":
            event = e.redrive(task)
        elif kind == "fail":
            # Long errors too: the scheduler's rows clip them (foldrows.slim).
            event = e.fail(task, holder, attempt=max(1, attempt), retryable=flag, error="boom " * (1 + dt % 400))
        elif kind == "complete":
            event = e.complete(task, holder, attempt=max(1, attempt), result='{"dt": %d}' % dt)
        else:
            event = getattr(e, kind)(task, holder, attempt=max(1, attempt))
        shadow.apply(event)
        out.append(event)
    return out


def kept(state: QueueState) -> QueueState:
    """The state as the scheduler holds it in memory: finished tasks are in the store only."""
    return workingset.without(state, list(state.tasks))


def reference(events: list[Event]) -> tuple[QueueState, Fleet]:
    state, fleet, _ = replay(events, POLICY)
    return state, fleet


def test_a_task_row_round_trips_through_json() -> None:
    e = Events()
    state, _ = reference([e.join("a", 2, capabilities=["gpu"]),
                          e.submit("t", labels={"x": "y"}, required_capabilities=["gpu"], depends_on=["u"])])
    task = state.task("t")
    assert foldrows.decode(type(task), foldrows.encode(task)) == task
    assert foldrows.encode(task) == foldrows.encode(foldrows.decode(type(task), foldrows.encode(task)))


def test_fleet_rows_round_trip() -> None:
    agent = AgentRecord("a", success_ewma=0.25, latency_ewma_ms=12.5, consecutive_failures=2,
                        quarantined_until=99, probe_task="t", tripped_failures=3, tripped_task="t0",
                        tripped_at=50, tripped_by="lease expired")
    assert foldrows.decode(AgentRecord, foldrows.encode(agent)) == agent
    assert foldrows.decode(Session, foldrows.encode(Session("a", 7))) == Session("a", 7)


def test_rows_written_before_lost_attempts_and_trips_were_kept_still_decode() -> None:
    import json

    e = Events()
    state, _ = reference([e.join("a"), e.submit("t"), e.assign("t", "a"), e.expire("t", "a")])
    task = state.task("t")
    assert (task.lost_attempts, task.lost_holders) == (1, ("a",))
    assert foldrows.decode(type(task), foldrows.encode(task)) == task
    old = {k: v for k, v in json.loads(foldrows.encode(task)).items() if k not in ("lost_attempts", "lost_holders")}
    assert foldrows.decode(type(task), json.dumps(old).encode()).lost_holders == ()
    agent = json.loads(foldrows.encode(AgentRecord("a", quarantined_until=9)))
    old_agent = {k: v for k, v in agent.items() if not k.startswith("tripped_")}
    assert foldrows.decode(AgentRecord, json.dumps(old_agent).encode()) == AgentRecord("a", quarantined_until=9)


def test_a_row_from_another_format_is_refused() -> None:
    import pytest

    with pytest.raises(foldrows.RowFormatError):
        foldrows.decode(Session, b'{"_v": 99, "agent_id": "a", "last_used": 1}')


def test_keys_keep_the_queue_first_and_ids_whole() -> None:
    raw = foldrows.key("emails#2", foldrows.TASK, "id\x00with:odd/chars")
    assert raw.startswith(b"emails#2\x00")
    assert foldrows.parse_key(raw) == ("emails#2", foldrows.TASK, "id\x00with:odd/chars")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_all_rows_rebuild_the_state_and_fleet(drawn: list[tuple]) -> None:
    state, fleet = reference(events_from(drawn))
    stored = foldrows.read(foldrows.all_rows("q", state, fleet)).queues
    if not state.tasks and not state.members:
        return
    assert stored["q"].state() == state
    assert stored["q"].fleet() == fleet


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_rows_written_event_by_event_rebuild_what_the_scheduler_holds(drawn: list[tuple]) -> None:
    events = events_from(drawn)
    store: dict[bytes, bytes] = {}
    scheduler = Scheduler(store, partitions=4, policy=lambda q: POLICY)
    for event in events:
        scheduler.apply(event)
    state, fleet = reference(events)
    state = kept(foldrows.slim_state(state))  # the scheduler keeps no payloads or results
    assert scheduler.queue("q").state == state
    assert scheduler.queue("q").fleet == fleet
    rebuilt = Scheduler({}, partitions=4, policy=lambda q: POLICY)
    rebuilt.load(store.items())
    assert rebuilt.queue("q").state == state
    assert rebuilt.queue("q").fleet == fleet


HOME = queue_partition("q", 4)  # the fold rejects an event read outside its queue's partition


class CrashingStore(dict):
    """Takes `budget` writes, then silently drops the rest (a changelog that lost a suffix)."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget
        self.dropped = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self.budget > 0:
            self.budget -= 1
            super().__setitem__(key, value)
        else:
            self.dropped += 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(0, 400), st.integers(0, 5))
def test_an_event_written_in_part_is_applied_again_after_a_crash(drawn: list[tuple], budget: int, back: int) -> None:
    """Any prefix of the writes, then a replay from at or before the first lost write, converges."""
    events = events_from(drawn)
    store = CrashingStore(budget)
    crashed = Scheduler(store, partitions=4, policy=lambda q: POLICY)
    first_lost = len(events)
    for offset, event in enumerate(events):
        crashed.apply(event, HOME, offset)
        if store.dropped and first_lost == len(events):
            first_lost = offset
    restarted = Scheduler(dict(store), partitions=4, policy=lambda q: POLICY)  # reads finished tasks back
    restarted.load(store.items())
    # At least once: the committed offset is at or before the first event not wholly written.
    for offset in range(max(0, first_lost - back), len(events)):
        restarted.apply(events[offset], HOME, offset)
    state, fleet = reference(events)
    assert restarted.queue("q").state == kept(foldrows.slim_state(state))
    if first_lost == len(events):
        assert restarted.queue("q").fleet == fleet  # the fleet is exact when nothing was lost

"""Properties of the projection views over random event sequences (valid or not, times out
of order, events delivered twice):

* however the records are batched, interleaved across topics or re-delivered at offsets
  already applied, the store ends byte for byte the same;
* `task_at(T)` is the fold of the log cut at T by the log's own cut rule, for every task.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import AccessType, Options, Rdict

from projections import queries
from projections.projector import EVENTS, HEARTBEATS, PROGRESS, Projector
from projections.store import META, Store, row_key
from projections.view import Telemetry
from projections.views import all_views
from projections.views.viewrows import fold_part, task_json
from taskfold.core.events import Event
from taskfold.core.fold import fold
from taskfold.log.eventlog import Cut, CutRule, Recorded
from taskfold.log.records import ConsumedRecord
from taskfold.core.telemetry import ChunkKind, Heartbeat, ProgressChunk
from taskfold.core.testing import Events

QUEUES = ("q0", "q1")
TASKS = ("t0", "t1", "t2", "t3")
AGENTS = ("a0", "a1")
KINDS = ("submit", "submit", "join", "assign", "assign", "start", "complete", "complete", "fail", "expire",
         "cancel", "cancelled", "leave", "redrive", "again", "chunk", "beat")
Op = tuple[str, int, int, int, int, int]
ops = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 1), st.integers(0, 1),
                         st.integers(1, 3), st.integers(-40, 60)), min_size=1, max_size=60)
layouts = st.sampled_from([{"q0": 0, "q1": 0}, {"q0": 0, "q1": 1}, {"q0": 1, "q1": 0}])


class Records:
    """The records of the three topics an op list makes, with offsets per partition."""

    def __init__(self, ops_: list[Op], layout: dict[str, int]) -> None:
        self.layout = layout
        self.by_role: dict[str, list] = {EVENTS: [], PROGRESS: [], HEARTBEATS: []}
        self._next: dict[tuple[str, int], int] = {}
        makers = {q: Events(queue=q, seed=q) for q in QUEUES}
        clock = 1_000_000
        for kind, t, a, q, attempt, dt in ops_:
            clock += 10
            self._add(kind, makers[QUEUES[q]], TASKS[t], AGENTS[a], attempt, clock + dt)

    def _place(self, role: str, partition: int) -> int:
        offset = self._next.get((role, partition), 0)
        self._next[(role, partition)] = offset + 1
        return offset

    def _event(self, event: Event) -> None:
        p = self.layout[event.queue]
        self.by_role[EVENTS].append(Recorded(event, p, self._place(EVENTS, p), 0))

    def _add(self, kind: str, e: Events, task: str, agent: str, attempt: int, at: int) -> None:
        events = self.by_role[EVENTS]
        if kind == "again":
            if events:
                self._event(events[(at * 7) % len(events)].event)
        elif kind == "chunk":
            p = self.layout[e.queue]
            chunk = ProgressChunk(chunk_id=f"{task}/{attempt}/{at % 3}", task_id=task, attempt=attempt, agent_id=agent,
                                  queue=e.queue, seq=at % 3, kind=ChunkKind.text, content="x", occurred_at=at)
            self.by_role[PROGRESS].append(Telemetry(PROGRESS, p, self._place(PROGRESS, p), chunk))
        elif kind == "beat":
            beat = Heartbeat(agent_id=agent, queues=[e.queue], sent_at=at, load={e.queue: attempt})
            self.by_role[HEARTBEATS].append(Telemetry(HEARTBEATS, 0, self._place(HEARTBEATS, 0), beat))
        else:
            self._event(self._make(kind, e, task, agent, attempt, at))

    @staticmethod
    def _make(kind: str, e: Events, task: str, agent: str, attempt: int, at: int) -> Event:
        if kind == "submit":
            return e.submit(task, at=at, max_attempts=2, session_id=f"s{len(task)}", depends_on=[] if task != "t3"
                            else ["t0"])
        if kind == "join":
            return e.join(agent, slots=2, at=at)
        if kind == "leave":
            return e.leave(agent, "lost" if at % 2 else "drained", at=at)
        if kind == "cancel":
            return e.cancel(task, at=at)
        if kind == "redrive":
            return e.redrive(task, at=at)
        make = {"assign": e.assign, "start": e.start, "complete": e.complete, "fail": e.fail, "expire": e.expire,
                "cancelled": e.cancelled}[kind]
        return make(task, agent, attempt, at=at)


def dump(path: Path) -> dict[bytes, bytes]:
    """Every row of a closed store; the counts row without what differs by delivery."""
    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        rows = dict(db.items())
    finally:
        db.close()
    counts = row_key(META, "counts")
    if counts not in rows:
        return rows  # nothing was applied
    kept = {k: v for k, v in json.loads(rows[counts]).items() if k != "dropped_by_position"}
    rows[counts] = json.dumps(kept, sort_keys=True).encode()
    return rows


def build(path: Path, batches: list[tuple[str, list]]) -> None:
    store = Store(path)
    try:
        projector = Projector(store, all_views())
        for role, batch in batches:
            projector.apply(role, batch)
    finally:
        store.close()


def in_random_batches(records: Records, rng: random.Random) -> list[tuple[str, list]]:
    """The topics interleaved in random batches, some with records already applied sent again."""
    done = dict.fromkeys(records.by_role, 0)
    out = []
    while any(done[role] < len(rs) for role, rs in records.by_role.items()):
        role = rng.choice([r for r, rs in records.by_role.items() if done[r] < len(rs)])
        start, end = done[role], min(done[role] + rng.randint(1, 6), len(records.by_role[role]))
        batch = list(records.by_role[role][start:end])
        if start and rng.random() < 0.4:
            again = records.by_role[role][rng.randrange(start):start]
            batch = again[:3] + batch if rng.random() < 0.5 else batch + again[:3]
        out.append((role, batch))
        done[role] = end
    return out


@settings(max_examples=50, deadline=None)
@given(ops=ops, layout=layouts, rng=st.randoms(use_true_random=False))
def test_batching_interleaving_and_redelivery_leave_the_same_store(ops: list[Op], layout: dict[str, int],
                                                                   rng: random.Random) -> None:
    records = Records(ops, layout)
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp) / "one", [(role, rs) for role, rs in records.by_role.items() if rs])
        build(Path(tmp) / "many", in_random_batches(records, rng))
        assert dump(Path(tmp) / "many") == dump(Path(tmp) / "one")


def cut_ends(placed: list[Recorded], until_ms: int) -> dict[int, int]:
    """Where `CutRule` closes each partition; its end when it never closes."""
    rule = CutRule(Cut(until_ms=until_ms), decode=lambda raw: raw.value, stamp=lambda rec: rec.event.occurred_at)
    ends: dict[int, int] = {}
    for rec in placed:
        raw = ConsumedRecord("events", rec.partition, rec.offset, 0, None, rec, ())  # type: ignore[arg-type]
        if rule.admit(raw) is not None:
            ends[rec.partition] = rec.offset + 1
        else:
            ends.setdefault(rec.partition, rec.offset)
    return ends


@settings(max_examples=50, deadline=None)
@given(ops=ops, layout=layouts)
def test_a_task_as_of_a_time_is_the_fold_of_the_log_cut_at_that_time(ops: list[Op], layout: dict[str, int]) -> None:
    placed = Records(ops, layout).by_role[EVENTS]
    times = sorted({r.event.occurred_at + d for r in placed for d in (-1, 0)}) or [0]
    ids = sorted({(r.event.task, r.event.queue) for r in placed if r.event.task})
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "store")
        try:
            Projector(store, all_views()).apply(EVENTS, placed)
            for until in times[:: max(1, len(times) // 12)] + [times[-1] + 1]:
                ends = cut_ends(placed, until)
                assert queries.cut_offsets(store, until) == ends
                ledger, _ = fold(r.event for r in placed if r.offset < ends[r.partition])
                for task_id, queue in ids:
                    task = ledger.state(queue).task(task_id)
                    got = queries.task_at(store, task_id, until, queue=queue)
                    assert (fold_part(got) if got else None) == (task_json(task) if task else None)
        finally:
            store.close()

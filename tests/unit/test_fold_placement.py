"""Where a record sits: the fold rejects misrouted and future-stamped events the same for every
reader, and the time of a position ignores stamps the fold rejected (issue 10, items 2 and 3)."""

from __future__ import annotations

from pathlib import Path

from aiokafka.partitioner import murmur2 as kafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from projections import queries
from streams.app import _ms
from streams.processor import Processor
from streams.scheduler import Scheduler
from projections.projector import Projector
from projections.store import Store
from projections.views import all_views
from taskfold.core import foldrows
from taskfold.audit.invariants import Auditor
from taskfold.core.fold import Ledger, evolve
from taskfold.core.fold.placement import SKEW_BOUND_MS, Where, home_partition, murmur2, stamp
from taskfold.log.eventlog import Cut, CutRule, Recorded
from taskfold.log.records import ConsumedRecord
from taskfold.core.scheduling.model import QueuePolicy
from taskfold.core.state import EMPTY
from taskfold.core.testing import Events
from taskfold.log.wire import encode_event

BETA = home_partition("beta", 6)  # 2
DEMO = home_partition("demo", 6)  # 1


@given(st.binary(max_size=40))
def test_the_cores_murmur2_is_kafkas(key: bytes) -> None:
    assert murmur2(key) == kafka_murmur2(key)


def test_a_misrouted_event_is_rejected_whatever_the_state_and_changes_nothing() -> None:
    beta = Events(queue="beta")
    ledger = Ledger()
    ledger.apply(beta.submit("t"), Where(BETA, 6))
    before = ledger.state("beta")
    verdict = ledger.apply(beta.cancel("t"), Where(DEMO, 6))  # keyed `demo`: it sits in demo's partition
    assert verdict.outcome == "rejected"
    assert verdict.reason == f"misrouted: queue beta lives in partition {BETA}, not {DEMO}"
    assert ledger.state("beta") is before
    # Before the task exists, and after: the same verdict, so read order cannot change it.
    assert evolve(EMPTY, beta.cancel("t"), Where(DEMO, 6))[1].reason == verdict.reason


def test_without_a_position_the_fold_checks_nothing() -> None:
    beta = Events(queue="beta")
    ledger = Ledger()
    ledger.apply(beta.submit("t"))
    assert ledger.apply(beta.cancel("t")).outcome == "accepted"


def test_an_event_stamped_beyond_the_skew_bound_is_rejected_naming_both_times() -> None:
    beta = Events(queue="beta")
    broker_ms = 1_000_000
    ledger = Ledger()
    ledger.apply(beta.submit("t", at=broker_ms), Where(BETA, 6, broker_ms))
    ahead = broker_ms + SKEW_BOUND_MS + 1
    verdict = ledger.apply(beta.cancel("t", at=ahead), Where(BETA, 6, broker_ms))
    assert verdict.outcome == "rejected"
    assert verdict.reason == (f"clock skew: occurred_at {ahead} is {SKEW_BOUND_MS + 1} ms ahead of the record's "
                              f"broker timestamp {broker_ms} (bound {SKEW_BOUND_MS} ms)")
    assert ledger.state("beta").task("t").state.value != "cancelled"
    # At the bound, behind the broker, or with no broker timestamp: judged on the state.
    at_bound = ledger.apply(beta.cancel("t", at=broker_ms + SKEW_BOUND_MS), Where(BETA, 6, broker_ms))
    assert at_bound.outcome == "accepted"
    assert stamp(broker_ms - 24, Where(BETA, 6, broker_ms)) == broker_ms - 24
    assert stamp(ahead, Where(BETA, 6, None)) == ahead and stamp(ahead, Where(BETA, 6, -1)) == ahead
    assert stamp(ahead, Where(BETA, 6, broker_ms)) is None


def test_a_rejected_stray_writes_no_rows() -> None:
    beta = Events(queue="beta")
    done = foldrows.step(foldrows.Queue(), beta.submit("t"), QueuePolicy(), Where(DEMO, 6))
    assert done.verdict.outcome == "rejected" and done.writes == [] and done.after.state is EMPTY


def _raw(rec: Recorded) -> ConsumedRecord:
    value, headers = encode_event(rec.event)
    return ConsumedRecord("events", rec.partition, rec.offset, rec.timestamp, rec.event.queue, value,
                          tuple(headers), rec.partitions)


def _kept(records: list[Recorded], until_ms: int) -> list[str]:
    rule = CutRule(Cut(until_ms=until_ms))
    return [e.event.task for rec in records if (e := rule.admit(_raw(rec))) is not None]


def test_one_future_stamp_does_not_truncate_its_partition_for_a_time_cut() -> None:
    beta, now = Events(queue="beta"), 10_000_000
    day = 24 * 3600 * 1000
    log = [beta.submit("early", at=now - 50), beta.submit("future", at=now + day), beta.submit("done", at=now - 10)]
    records = [Recorded(event, BETA, n, now - 5, 6) for n, event in enumerate(log)]
    # The future-stamped event is kept (the fold rejects it) but does not close the partition.
    assert _kept(records, now) == ["early", "future", "done"]
    assert _kept(records, now - 30) == ["early", "future"]  # the cut still closes in time


def test_stamps_out_of_order_close_a_cut_at_their_running_maximum() -> None:
    q, t0 = Events(queue="beta"), 10_000_000
    stamps = [t0, t0 + 24, t0 + 3, t0 + 30]  # a writer 21 ms behind another
    records = [Recorded(q.submit(f"t{n}", at=at), BETA, n, at + 1, 6) for n, at in enumerate(stamps)]
    assert _kept(records, t0 + 10) == ["t0"]  # a prefix: t2 (stamped t0+3) sits after t0+24
    assert _kept(records, t0 + 24) == ["t0", "t1", "t2"]


def test_the_time_index_skips_a_future_stamp_so_as_of_keeps_later_history(tmp_path: Path) -> None:
    beta, now, day = Events(queue="beta"), 10_000_000, 24 * 3600 * 1000
    store = Store(tmp_path / "store")
    try:
        projector = Projector(store, all_views())
        log = [beta.join("a1", at=now - 100), beta.submit("t", at=now - 90), beta.cancel("x", at=now + day),
               beta.assign("t", "a1", at=now - 80), beta.complete("t", "a1", at=now - 70)]
        projector.apply("events", [Recorded(e, BETA, n, now - 60, 6) for n, e in enumerate(log)])
        assert queries.cut_offsets(store, now) == {BETA: 5}
        assert queries.task_at(store, "t", now)["state"] == "completed"
        assert [r["reason"][:11] for r in queries.rejections(store)[0]] == ["clock skew:"]
    finally:
        store.close()


def test_the_audit_reports_misrouted_and_stamped_ahead_events() -> None:
    beta, now = Events(queue="beta"), 10_000_000
    ledger, auditor = Ledger(), Auditor()
    placed = [(beta.submit("t", at=now), Where(BETA, 6, now)), (beta.cancel("t", at=now), Where(DEMO, 6, now)),
              (beta.cancel("t", at=now + SKEW_BOUND_MS + 5), Where(BETA, 6, now))]
    for n, (event, where) in enumerate(placed):
        auditor.observe(event, ledger.apply(event, where), f"{where.partition}:{n}")
    report = auditor.finish(ledger)
    assert [(v.rule, v.position) for v in report.violations] == [("misrouted", f"{DEMO}:1"), ("stamped-ahead", f"{BETA}:2")]
    assert report.end_ms == now  # the rejected stamp is not the log's "now"


class _Outbox:
    async def append(self, events: list) -> None:
        pass

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        raise AssertionError(reason)


async def test_the_scheduler_worker_judges_where_a_record_sits_as_every_reader_does() -> None:
    beta, now = Events(queue="beta"), 10_000_000
    processor = Processor(Scheduler({}, partitions=6), _Outbox(), clock_ms=lambda: now)

    async def read(event, partition: int, offset: int, timestamp: int | None):  # noqa: ANN001, ANN202
        value, headers = encode_event(event)
        return (await processor.on_record(ConsumedRecord("events", partition, offset, timestamp,
                                                         event.queue, value, tuple(headers)))).verdict

    assert (await read(beta.submit("t", at=now), BETA, 0, now)).accepted
    misrouted = await read(beta.cancel("t", at=now), DEMO, 0, now)
    assert misrouted.reason == f"misrouted: queue beta lives in partition {BETA}, not {DEMO}"
    ahead = await read(beta.cancel("t", at=now + SKEW_BOUND_MS + 1), BETA, 1, now)
    assert ahead.reason.startswith("clock skew: ")
    assert processor.scheduler.queue("beta").state.task("t").state.value == "queued"
    assert "demo" not in processor.scheduler.queues
    assert _ms(now / 1000.0) == now  # faust's record timestamp is in seconds

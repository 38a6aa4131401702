"""The small parts of the write side: pending appends, liveness, catch-up, faust settings."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import DefaultPartitioner

from streams import faustcompat
from streams.heartbeats import HeartbeatBoard, sign_of_life
from streams.pending import Pending
from streams.processor import CatchUp, Processor
from streams.scheduler import Scheduler
from taskfold.broker.topics import queue_partition
from taskfold.log import ConsumedRecord
from taskfold.core.telemetry import Heartbeat
from taskfold.core.testing import Events
from taskfold.log.wire import encode_event, encode_record


@dataclass
class Ticks:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_pending_is_settled_by_read_back_and_forgotten_after_its_timeout() -> None:
    clock, e = Ticks(), Events()
    pending = Pending(timeout_s=5, clock=clock)
    a, b = e.assign("t1", "a1"), e.assign("t2", "a1")
    pending.add([a, b])
    assert pending.assignments("q") == [a, b]
    assert pending.settle(a.event_id) and not pending.settle(a.event_id)
    clock.now = 5.0
    assert pending.assignments("q") == [] and pending.expired == 1


def test_pending_filters_a_repeat_of_the_same_intent() -> None:
    e = Events()
    pending = Pending()
    lease = e.expire("t1", "a1", attempt=2)
    pending.add([lease])
    again = e.expire("t1", "a1", attempt=2)  # another tick, another id, same decision
    other = e.expire("t1", "a1", attempt=3)
    assert pending.fresh([again, other]) == [other]


def test_pending_forgets_revoked_queues_only() -> None:
    pending = Pending()
    pending.add([Events(queue="x").assign("t", "a"), Events(queue="y").assign("t", "a")])
    pending.forget(["x"])
    assert [p.queue for p in pending.of("y")] == ["y"] and pending.of("x") == []


def heartbeat_record(value: bytes | None, offset: int = 0) -> ConsumedRecord:
    return ConsumedRecord("hb", 0, offset, 0, "a1", value, ())


def test_a_heartbeat_is_a_sign_of_life_and_poison_is_not() -> None:
    value, _ = encode_record(Heartbeat(agent_id="a1", queues=["q"], sent_at=1234))
    assert sign_of_life(heartbeat_record(value)) == ("a1", 1234)
    assert sign_of_life(heartbeat_record(b"junk")) is None
    assert sign_of_life(heartbeat_record(None)) is None
    event_value, _ = encode_record(Events().join("a1"))
    assert sign_of_life(heartbeat_record(event_value)) is None


def test_the_board_never_moves_an_agent_back_in_time() -> None:
    board = HeartbeatBoard()
    board.note("a1", 200)
    board.note("a1", 100)
    assert dict(board) == {"a1": 200}


def test_catch_up_is_settled_once_caught_up_and_stays_so_until_revoked() -> None:
    ends = {0: 10, 1: None}
    catch_up = CatchUp(highwater=lambda p: ends[p], position=lambda p: 4)
    assert not catch_up.settled(0)  # nothing processed yet, the consumer is at 4 of 10
    catch_up.note(0, 8)
    assert not catch_up.settled(0)
    catch_up.note(0, 9)
    assert catch_up.settled(0)
    ends[0] = 50  # a busy log: the fetcher is ahead again
    assert catch_up.settled(0)
    assert not catch_up.settled(1)  # no Fetch answered yet
    catch_up.forget([0])
    assert not catch_up.settled(0)


class Behind(CatchUp):
    """Caught up once, and now always a fetch behind (a busy log)."""

    def settled(self, partition: int) -> bool:
        return True

    def caught_up(self, partition: int) -> bool:
        return False


class Kept:
    def __init__(self) -> None:
        self.appended: list = []

    async def append(self, events: list) -> None:
        self.appended.extend(events)

    async def quarantine(self, record: ConsumedRecord, reason: str) -> None:
        raise AssertionError(reason)


async def test_under_load_a_queue_is_decided_in_batches_and_only_where_room_may_open() -> None:
    e, ticks, outbox = Events(), Ticks(100.0), Kept()
    processor = Processor(Scheduler({}, partitions=4), outbox, Behind(), clock_ms=lambda: e.now,
                          monotonic=ticks)
    offsets = iter(range(100))

    async def read(event) -> tuple:
        value, headers = encode_event(event)
        outcome = await processor.on_record(ConsumedRecord("events", queue_partition("q", 4), next(offsets), None, "q", value,
                                                                  tuple(headers)))
        return outcome.appended

    await read(e.join("a1", slots=3))  # room opened: decided (nothing to assign yet)
    ticks.now += 0.005
    assert await read(e.submit("t1")) == ()  # within 20 ms of the last decision: batched
    ticks.now += 0.005
    assert await read(e.submit("t2")) == ()
    ticks.now += 0.02
    decided = await read(e.submit("t3"))
    assert [a.task_id for a in decided] == ["t1", "t2", "t3"]  # one decide for the burst
    ticks.now += 1.0
    assert await read(decided[0]) == ()  # our assignment read back: it takes room, makes none
    assert await read(e.start("t1", decided[0].agent_id)) == ()


def test_queues_map_to_partitions_as_the_producer_puts_them() -> None:
    partitioner = DefaultPartitioner()
    for queue in ["emails", "reports", "q", "gpu#3"]:
        expected = partitioner(queue.encode(), list(range(6)), list(range(6)))
        assert queue_partition(queue, 6) == expected


def test_faust_settings_carry_group_timeouts_for_each_broker() -> None:
    tansu, kafka = faustcompat.faust_settings(True, fast=True), faustcompat.faust_settings(False)
    assert tansu["broker_session_timeout"] == 2.0 and tansu["broker_heartbeat_interval"] == 0.5
    assert tansu["broker_request_timeout"] == 30.0
    # Kafka: a session faust accepts (below the request timeout) and that fails over in 10 s
    assert kafka["broker_session_timeout"] == 10.0 and kafka["broker_heartbeat_interval"] == 3.0
    assert kafka["broker_rebalance_timeout"] <= 30.0 < kafka["broker_request_timeout"]
    for settings in (tansu, kafka):
        assert settings["processing_guarantee"] == "at_least_once" and settings["web_enabled"] is False


def test_faust_fixes_are_installed_only_for_tansu_and_can_be_undone() -> None:
    was = faustcompat.fixes_installed()
    try:
        faustcompat.uninstall_fixes()
        faustcompat.apply_fixes(False)
        assert not faustcompat.fixes_installed()
        faustcompat.apply_fixes(True)
        faustcompat.apply_fixes(True)  # idempotent
        assert faustcompat.fixes_installed()
    finally:
        (faustcompat.install_fixes if was else faustcompat.uninstall_fixes)()

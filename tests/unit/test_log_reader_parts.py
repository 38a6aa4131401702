"""The parts of LogReader.batches without a broker: seek, hole repair and end tracking."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition

from taskfold.log.contiguity import Contiguity
from taskfold.log.reader import _Ends, _repair_holes, _seek

A, B = TopicPartition("events", 0), TopicPartition("events", 1)


@dataclass
class M:
    offset: int


@dataclass
class FakeConsumer:
    """Records what a read asks of its consumer; positions are set by the test."""

    positions: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    to_beginning: list[TopicPartition] = field(default_factory=list)
    paused: set[TopicPartition] = field(default_factory=set)
    assigned: list[TopicPartition] = field(default_factory=list)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.to_beginning.extend(tps)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)


async def test_seek_takes_a_start_per_partition_and_the_beginning_for_the_rest() -> None:
    consumer = FakeConsumer()
    await _seek(consumer, [A, B], {1: 7})
    assert consumer.assigned == [A, B] and consumer.seeks == [(B, 7)] and consumer.to_beginning == [A]
    every = FakeConsumer()
    await _seek(every, [A, B], 3)
    assert every.seeks == [(A, 3), (B, 3)] and not every.to_beginning


async def test_a_hole_cuts_the_fetch_and_its_partition_is_read_again_from_there() -> None:
    holes = Contiguity("events")
    holes.expect(0, 5)
    holes.expect(1, 0)
    consumer = FakeConsumer(positions={A: 9, B: 2})
    admitted = await _repair_holes(consumer, holes, {A: [M(5), M(7), M(8)], B: [M(0), M(1)]})
    assert {tp: [m.offset for m in ms] for tp, ms in admitted.items()} == {A: [5], B: [0, 1]}
    assert consumer.seeks == [(A, 6), (A, 6)]  # the hole, and the position that ran past it
    assert holes.counts["reread"] == 2


async def test_a_position_past_the_last_record_fetched_is_a_hole_too() -> None:
    holes = Contiguity("events")
    holes.expect(0, 0)
    consumer = FakeConsumer(positions={A: 4})
    admitted = await _repair_holes(consumer, holes, {A: [M(0), M(1)]})
    assert [m.offset for m in admitted[A]] == [0, 1] and consumer.seeks == [(A, 2)]


async def test_ends_leave_out_later_records_and_pause_what_reached_its_end() -> None:
    consumer = FakeConsumer(positions={A: 0, B: 3})
    ends = _Ends({A: 2, B: 3})
    await ends.begin(consumer, [A, B])
    assert ends.remaining == {A} and consumer.paused == {B}  # B had nothing to read
    assert [m.offset for m in ends.before(A, [M(0), M(1), M(2), M(3)])] == [0, 1]
    consumer.positions[A] = 2
    await ends.pause_reached(consumer)
    assert not ends.remaining and consumer.paused == {A, B}


async def test_a_live_read_has_no_end() -> None:
    consumer = FakeConsumer(positions={A: 0})
    ends = _Ends(None)
    await ends.begin(consumer, [A])
    assert ends.remaining == {A} and ends.before(A, [M(0), M(9)]) == [M(0), M(9)]
    await ends.pause_reached(consumer)
    assert not consumer.paused

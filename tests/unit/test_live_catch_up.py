"""LiveProjection judges catch-up by the consumer's position and resets per topic (issue 13 item 4).

The readers here stand in for LogReader (our class, not Kafka): Tansu never expires a record,
so a partition whose records all expired cannot be made on the test broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from projections.live import LiveProjection, OffsetGone, offset_reset
from projections.projector import EVENTS, HEARTBEATS, PROGRESS
from taskfold.broker.topics import TopicNames


class ExpiredReader:
    """A partition 0 whose records [0, end) all expired: fetches return nothing, the position is the end."""

    def __init__(self, end: int, fail: BaseException | None = None) -> None:
        self.end, self.fail = end, fail
        self.reading = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def end_offsets(self, topic: str) -> dict[int, int]:
        return {0: self.end}

    async def batches(self, topic: str, **_: object) -> AsyncIterator[list]:
        if self.fail is not None:
            raise self.fail
        self.reading = True
        while True:
            yield []
            await asyncio.sleep(0.01)

    def highwater(self, topic: str, partition: int) -> int | None:
        return self.end if self.reading else None

    def position(self, topic: str, partition: int) -> int | None:
        return self.end if self.reading else None


def projection(tmp_path: Path, readers: dict[str, ExpiredReader]) -> LiveProjection:
    live = LiveProjection("127.0.0.1:1", TopicNames(), tmp_path / "store", [])
    live._readers = readers  # type: ignore[assignment]
    return live


async def test_a_partition_whose_records_all_expired_is_caught_up(tmp_path: Path) -> None:
    live = projection(tmp_path, {EVENTS: ExpiredReader(0), PROGRESS: ExpiredReader(40), HEARTBEATS: ExpiredReader(0)})
    await live.start()
    try:
        await live.wait_caught_up(5.0)  # before: next offset 0 < 40 for ever, /readyz 503
        assert live.caught_up() and live.lag()[PROGRESS] == {0: 0}
    finally:
        await live.stop()


async def test_events_gone_from_the_log_stop_the_projection_naming_the_gap(tmp_path: Path) -> None:
    gone = OffsetOutOfRangeError({TopicPartition("taskfold.events", 0): 7})
    live = projection(tmp_path, {EVENTS: ExpiredReader(0, fail=gone), PROGRESS: ExpiredReader(0),
                                 HEARTBEATS: ExpiredReader(0)})
    await live.start()
    try:
        with pytest.raises(RuntimeError, match="taskfold.events no longer has partition 0 offset 7"):
            await live.wait_caught_up(5.0)
        assert isinstance(live.failure, OffsetGone) and "rebuild the projection" in str(live.failure)
    finally:
        await live.stop()


def test_each_topic_has_its_reset_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveProjection("127.0.0.1:1", TopicNames(), tmp_path / "store", [])
    try:
        resets = {role: reader._settings["auto_offset_reset"] for role, reader in live._readers.items()}
    finally:
        live.store.close()
    assert resets == {EVENTS: "none", PROGRESS: "earliest", HEARTBEATS: "earliest"}
    monkeypatch.setenv("TASKFOLD_EVENTS_RETENTION_ALLOWED", "true")
    assert offset_reset(EVENTS) == "earliest"

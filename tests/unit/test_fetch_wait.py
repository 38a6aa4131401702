"""Fetch waits that fit the demand: a tailing reader fetches quickly only while a caller waits on it."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from projections.live import WRITE_PATH_FETCH_WAIT_MS, LiveProjection
from projections.projector import EVENTS
from taskfold.broker import settings
from taskfold.broker.settings import DemandWait
from taskfold.broker.topics import TopicNames


def test_demand_wait_is_short_only_while_someone_waits() -> None:
    rule = settings.DemandWait(short_ms=20, long_ms=100)
    assert rule.wait_ms(0) == 100
    assert rule.wait_ms(1) == 20
    assert rule.wait_ms(7) == 20
    lingering = settings.DemandWait(short_ms=20, long_ms=100, linger_s=1.0)
    assert lingering.wait_ms(0, idle_s=0.5) == 20  # a client's next write usually follows soon
    assert lingering.wait_ms(0, idle_s=1.5) == 100


async def test_set_fetch_max_wait_reaches_the_next_fetch_and_refuses_zero() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", fetch_max_wait_ms=100)
    try:
        settings.set_fetch_max_wait(consumer, 20)
        assert consumer._fetch_max_wait_ms == 20  # what start() hands the fetcher
        with pytest.raises(ValueError, match=">= 1 ms"):
            settings.set_fetch_max_wait(consumer, 0)
    finally:
        await consumer.stop()


async def test_the_events_reader_fetches_quickly_only_during_a_wait(tmp_path) -> None:  # noqa: ANN001
    live = LiveProjection("127.0.0.1:1", TopicNames("q"), tmp_path / "store", [], tansu=True)
    try:
        events = live._readers[EVENTS]
        idle = settings.fetch_max_wait_ms(True)
        assert events._settings["fetch_max_wait_ms"] == idle
        seen: list[int] = []

        def waited() -> bool:
            seen.append(events._settings["fetch_max_wait_ms"])
            return True

        live._demand = DemandWait(WRITE_PATH_FETCH_WAIT_MS, idle, linger_s=0.05)
        await live.wait_for(waited, timeout=5)
        assert seen == [WRITE_PATH_FETCH_WAIT_MS]
        assert events._settings["fetch_max_wait_ms"] == WRITE_PATH_FETCH_WAIT_MS  # lingering
        deadline = asyncio.get_running_loop().time() + 5
        while events._settings["fetch_max_wait_ms"] != idle:
            assert asyncio.get_running_loop().time() < deadline, "the reader never went back to the long wait"
            await asyncio.sleep(0.01)
    finally:
        live.store.close()

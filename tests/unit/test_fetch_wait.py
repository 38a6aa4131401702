"""Fetch waits that fit the demand: a tailing reader fetches quickly only while a caller waits on it."""

import pytest
from aiokafka import AIOKafkaConsumer

from projections.live import WRITE_PATH_FETCH_WAIT_MS, LiveProjection
from projections.projector import EVENTS
from taskfold.broker import settings
from taskfold.broker.topics import TopicNames


def test_demand_wait_is_short_only_while_someone_waits() -> None:
    rule = settings.DemandWait(short_ms=20, long_ms=100)
    assert rule.wait_ms(0) == 100
    assert rule.wait_ms(1) == 20
    assert rule.wait_ms(7) == 20


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

        await live.wait_for(waited, timeout=5)
        assert seen == [WRITE_PATH_FETCH_WAIT_MS]
        assert events._settings["fetch_max_wait_ms"] == idle
    finally:
        live.store.close()

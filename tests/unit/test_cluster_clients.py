"""Kafka readiness without a cluster: every client we build constructs, for Kafka and for Tansu."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from projections.live import LiveProjection
from streams.app import WorkerOptions, build
from taskfold.broker.topics import TopicNames
from taskfold.log.eventlog import EventLog

NOWHERE = "127.0.0.1:1"  # never connected: the clients are built, not started


def worker_consumer(tmp_path: Path, tansu: bool) -> AIOKafkaConsumer:
    """The scheduler worker's group consumer, built by faust from our settings."""
    options = WorkerOptions(store="memory://", state_dir=tmp_path, read_heartbeats=False)
    app = build(NOWHERE, TopicNames(), tansu=tansu, partitions=4, options=options).app
    return app.consumer._thread._create_worker_consumer(app.transport)


@pytest.mark.parametrize("tansu", [False, True], ids=["kafka", "tansu"])
async def test_the_worker_sdk_and_projection_consumers_construct(tmp_path: Path, tansu: bool) -> None:
    worker = worker_consumer(tmp_path, tansu)
    session, request = worker._session_timeout_ms, worker._request_timeout_ms
    assert worker._heartbeat_interval_ms < session <= request
    assert worker._rebalance_timeout_ms <= min(request, 30_000)
    if not tansu:  # a real cluster: sessions of 10-15 s, heartbeats every 3 s
        assert 10_000 <= session <= 15_000 and worker._heartbeat_interval_ms == 3000
    sdk = EventLog(NOWHERE, TopicNames(), tansu=tansu).reader._consumer()
    live = LiveProjection(NOWHERE, TopicNames(), tmp_path / "store", [], tansu=tansu)
    try:
        projection = [reader._consumer() for reader in live._readers.values()]
        for consumer in [worker, sdk, *projection]:
            await consumer.stop()  # never started: stop() only marks it closed
    finally:
        live.store.close()

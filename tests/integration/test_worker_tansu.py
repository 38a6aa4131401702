"""The Tansu deviations that reach the faust worker, and the fixes for them (streams.faustcompat).

As in test_tansu_deviations.py: each test shows that the deviation is still there, and
that the fix answers right. When one fails because Tansu was fixed, drop the fix too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.app import WorkerOptions, build
from streams import faustcompat
from taskfold.broker import settings
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log import LogWriter, RawRecord

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tansu_only(broker: Broker) -> None:
    if not broker.is_tansu:
        pytest.skip("shows a Tansu deviation; this broker is not Tansu")


@contextlib.contextmanager
def faust_methods() -> Iterator[tuple[SimpleNamespace, SimpleNamespace]]:
    """(faust's own methods, the fixed ones) of AIOKafkaConsumerThread; the install state is restored."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as Thread

    was = faustcompat.fixes_installed()
    faustcompat.install_fixes()
    fixed = SimpleNamespace(highwaters=Thread._highwaters, worker_consumer=Thread._create_worker_consumer)
    faustcompat.uninstall_fixes()
    original = SimpleNamespace(highwaters=Thread._highwaters, worker_consumer=Thread._create_worker_consumer)
    try:
        yield original, fixed
    finally:
        (faustcompat.install_fixes if was else faustcompat.uninstall_fixes)()


async def test_faust_changelog_highwaters_come_from_list_offsets(broker: Broker, topics: TopicNames) -> None:
    """faust's recovery asks `_highwaters`, which is short on Tansu; the fix reads the Fetch high watermark."""
    async with LogWriter(broker.bootstrap, tansu=True) as writer:
        await writer.append(topics.progress, [RawRecord("q", b"row" * 30, partition=0)] * 50)  # one batch
    tp = TopicPartition(topics.progress, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    # What the methods use of faust's consumer thread: the aiokafka consumer and the transaction flag.
    thread = SimpleNamespace(consumer=SimpleNamespace(in_transaction=False), _ensure_consumer=lambda: consumer)
    try:
        with faust_methods() as (original, fixed):
            by_faust = (await original.highwaters(thread, [tp]))[tp]
            by_fix = (await fixed.highwaters(thread, [tp]))[tp]
    finally:
        await consumer.stop()
    assert by_faust < 50, "ListOffsets(LATEST) is right now: drop the _highwaters fix in faustcompat"
    assert by_fix == 50


async def test_faust_worker_consumer_waits_1500_ms_per_fetch(broker: Broker, topics: TopicNames) -> None:
    """faust hard-codes fetch_max_wait_ms=1500, which Tansu turns into up to 750 ms per record."""
    topology = build(broker.bootstrap, topics, tansu=True, partitions=4,
                     options=WorkerOptions(store="memory://", read_heartbeats=False))
    thread = topology.app.consumer._thread
    with faust_methods() as (original, fixed):
        by_faust = original.worker_consumer(thread, topology.app.transport)
        by_fix = fixed.worker_consumer(thread, topology.app.transport)
    try:
        assert by_faust._fetch_max_wait_ms == 1500
        assert by_fix._fetch_max_wait_ms == settings.fetch_max_wait_ms(broker)
    finally:
        for consumer in (by_faust, by_fix):
            await consumer.stop()

"""One test per Tansu deviation that taskfold.broker's settings, leavegroup and highwater work around (BROKER.md).

Each test shows that the deviation still exists, and where there is a fix, that the fix
works. When a test starts failing because the broker was fixed, delete the fix with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest

from taskfold.broker import highwater, leavegroup, settings
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log import LogReader, LogWriter, RawRecord

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tansu_only(broker: Broker) -> None:
    if not broker.is_tansu:
        pytest.skip("shows a Tansu deviation; this broker is not Tansu")


async def eventually(check: Callable[[], object], timeout: float, what: str) -> float:
    """Wait until check() is truthy; return the seconds it took, fail after `timeout`."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


@contextlib.contextmanager
def leave_group_fix(enabled: bool) -> Iterator[None]:
    was = leavegroup.installed()
    (leavegroup.install if enabled else leavegroup.uninstall)()
    try:
        yield
    finally:
        (leavegroup.install if was else leavegroup.uninstall)()


@contextlib.asynccontextmanager
async def admin(broker: Broker) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def members(client: AIOKafkaAdminClient, group: str) -> list[str]:
    (response,) = await client.describe_consumer_groups([group])
    (described,) = response.groups
    return [m[0] for m in described[5]]  # (error, group, state, protocol_type, protocol, members)


def group_consumer(broker: Broker, topic: str, group: str) -> AIOKafkaConsumer:
    # Fast group timeouts, set by hand so that settings.consumer_settings does not install
    # the LeaveGroup fix behind the test's back.
    return AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, group_id=group,
        **settings.group_timeouts(broker, fast=True), request_timeout_ms=10_000,
    )


async def join(consumer: AIOKafkaConsumer, timeout: float = 10.0) -> float:
    """Start a group consumer; return the seconds until it has its assignment."""
    t0 = time.monotonic()
    await consumer.start()
    await eventually(lambda: consumer.assignment(), timeout, "assignment")
    return time.monotonic() - t0


async def test_list_offsets_latest_is_short_after_a_multi_record_batch(broker: Broker, topics: TopicNames) -> None:
    """ListOffsets(LATEST) says first offset of the last batch + 1; Fetch says the real end."""
    async with LogWriter(broker.bootstrap, tansu=True) as writer:
        # Handed over together, so the producer puts them in one batch.
        positions = await writer.append(topics.events, [RawRecord("q", b"v" * 100, partition=0)] * 50)
    assert [p.offset for p in positions] == list(range(50))
    tp = TopicPartition(topics.events, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        by_list_offsets = (await consumer.end_offsets([tp]))[tp]
        by_fetch = (await highwater.end_offsets(consumer, [tp]))[tp]
    finally:
        await consumer.stop()
    assert by_list_offsets < 50, "ListOffsets(LATEST) is right now: drop the ListOffsets note in taskfold.broker.highwater"
    assert by_fetch == 50


async def test_fetch_with_zero_max_wait_returns_no_partitions(broker: Broker, topics: TopicNames) -> None:
    """Why highwater.end_offsets fetches with max_wait 1 ms: with 0, Tansu leaves every partition out."""
    async with LogWriter(broker.bootstrap, tansu=True) as writer:
        await writer.append(topics.events, [RawRecord("q", b"v", partition=0)] * 3)
    consumer = AIOKafkaConsumer(topics.events, bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        client = consumer._client
        node = client.cluster.leader_for_partition(TopicPartition(topics.events, 0))

        async def fetch(max_wait_ms: int) -> list[tuple[int, int]]:
            request = FetchRequest(max_wait_ms, 0, 1 << 20, 0, [(topics.events, [(0, 0, 1 << 20)])])
            response = await client.send(node, request)
            return [(p[0], p[2]) for _, parts in response.topics for p in parts]

        assert await fetch(0) == []
        assert await fetch(1) == [(0, 3)]
    finally:
        await consumer.stop()


async def tail_latency(broker: Broker, topic: str, fetch_max_wait_ms: int, samples: int = 3) -> float:
    """Median seconds from append to delivery to a live reader that waits at the end."""
    arrived: asyncio.Queue[float] = asyncio.Queue()
    async with LogWriter(broker.bootstrap, tansu=True) as writer, LogReader(
        broker.bootstrap, tansu=True, fetch_max_wait_ms=fetch_max_wait_ms
    ) as reader:

        async def tail() -> None:
            async with contextlib.aclosing(reader.read(topic, partitions=[0], live=True)) as stream:
                async for _ in stream:
                    arrived.put_nowait(time.monotonic())

        task = asyncio.create_task(tail())
        try:
            await writer.append(topic, [RawRecord("q", b"warm-up", partition=0)])
            await asyncio.wait_for(arrived.get(), 10)  # the reader is now parked at the end
            latencies = []
            for _ in range(samples):
                t0 = time.monotonic()
                await writer.append(topic, [RawRecord("q", b"x", partition=0)])
                latencies.append(await asyncio.wait_for(arrived.get(), 5) - t0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return statistics.median(latencies)


async def test_a_waiting_fetch_is_not_woken_promptly_by_new_data(broker: Broker, topics: TopicNames) -> None:
    """Why settings lowers fetch_max_wait_ms on Tansu: new data waits for max_wait/2."""
    slow = await tail_latency(broker, topics.events, fetch_max_wait_ms=500)
    fast = await tail_latency(broker, topics.progress, fetch_max_wait_ms=settings.fetch_max_wait_ms(broker))
    print(f"tail latency: {slow * 1000:.0f} ms with max_wait 500 ms, {fast * 1000:.0f} ms with the Tansu setting")
    # Appended right after the previous delivery, so a fresh Fetch is parked: Tansu looks
    # again after max_wait/2 (250 ms); Kafka would deliver within a few ms.
    assert slow > 0.15, "Tansu now wakes waiting fetches: drop fetch_max_wait_ms from settings"
    assert fast < 0.1


async def test_join_group_is_held_for_half_the_session(broker: Broker, topics: TopicNames) -> None:
    """A join takes about session_timeout/2, hence the short group timeouts in settings."""
    session_s = settings.TANSU_GROUP_TIMEOUTS_FAST.session_timeout_ms / 1000
    consumer = group_consumer(broker, topics.events, f"g-{uuid.uuid4().hex}")
    try:
        took = await join(consumer)
    finally:
        with leave_group_fix(True):
            await consumer.stop()
    assert took >= 0.4 * session_s, f"join took {took:.2f} s: Tansu no longer holds JoinGroup"
    assert took < session_s


async def test_first_generation_is_0_and_aiokafka_does_not_leave(broker: Broker, topics: TopicNames) -> None:
    """Without the fix, a stopped first-generation member stays in the group."""
    group = f"g-{uuid.uuid4().hex}"
    with leave_group_fix(False):
        consumer = group_consumer(broker, topics.events, group)
        await join(consumer)
        member = consumer._coordinator.member_id
        assert consumer._coordinator.generation == 0
        await consumer.stop()
    async with admin(broker) as client:
        assert await members(client, group) == [member], "Tansu or aiokafka now handles generation 0"


async def test_leave_group_fix_makes_a_restart_fast(broker: Broker, topics: TopicNames) -> None:
    """With the fix the member leaves, and a restart joins without waiting out the session."""
    group = f"g-{uuid.uuid4().hex}"
    session_s = settings.TANSU_GROUP_TIMEOUTS_FAST.session_timeout_ms / 1000
    with leave_group_fix(True):
        first = group_consumer(broker, topics.events, group)
        await join(first)
        assert first._coordinator.generation == 0
        await first.stop()
        async with admin(broker) as client:
            assert await members(client, group) == []
        second = group_consumer(broker, topics.events, group)
        try:
            restart = await join(second)
        finally:
            await second.stop()
    print(f"restart join with the LeaveGroup fix: {restart:.2f} s")
    # Without the fix the restart waits for the stale member's session to expire first
    # (about 4 s with a 2 s session), so staying under one session shows the fix works.
    assert restart < session_s


async def test_leave_group_fix_is_idempotent_and_reversible(broker: Broker) -> None:
    """Installing twice wraps once; uninstalling restores aiokafka's method."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    with leave_group_fix(True):
        patched = GroupCoordinator._maybe_leave_group
        leavegroup.install()
        assert GroupCoordinator._maybe_leave_group is patched
    with leave_group_fix(False):
        assert not leavegroup.installed()


async def test_idempotent_producer_fails(broker: Broker) -> None:
    """InitProducerId v0 (aiokafka) vs v3 (Tansu): idempotence must stay off."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(producer.start(), 15)
    finally:
        await producer.stop()
    assert settings.producer_settings(broker)["enable_idempotence"] is False

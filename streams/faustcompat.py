"""faust-streaming's settings for this broker, and its fixes for Tansu's deviations (BROKER.md).

The write side is a faust app; the aiokafka clients under it get the broker's settings
from `taskfold.broker.settings`, and faust reaches two Tansu deviations through aiokafka
that need fixes of its own, here. A fix for faust itself, needed on every broker, is in
`streams.patches`. `tests/integration/test_worker_tansu.py` shows each deviation.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from taskfold.broker import leavegroup
from taskfold.broker.highwater import end_offsets
from taskfold.broker.settings import (
    MAX_BATCH_BYTES,
    MAX_RECORD_BYTES,
    BrokerLike,
    fetch_max_wait_ms,
    group_timeouts,
    is_tansu,
    request_timeout_ms,
)


def faust_settings(broker: BrokerLike | bool, *, fast: bool = False) -> dict[str, Any]:
    """faust App settings that work on this broker (BROKER.md, "faust settings that worked").

    At-least-once (Tansu's transactions do not hide aborted records; the fold drops
    duplicates), no web server (a second worker on the machine would die on port 6066),
    no leader topic, and the group timeouts of `group_timeouts` in seconds.
    """
    settings: dict[str, Any] = {
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
        "topic_disable_leader": True,
        "broker_request_timeout": request_timeout_ms(broker) / 1000,
        "broker_commit_interval": 1.0,
        "web_enabled": False,
        "producer_acks": -1,
        # faust's default linger of 0 sends every changelog row and decision in its own
        # request; 5 ms batches them (as producer_settings does for our own producers).
        "producer_linger": 0.005,
        "producer_max_batch_size": MAX_BATCH_BYTES,
        "producer_max_request_size": MAX_RECORD_BYTES,
    }
    timeouts = group_timeouts(broker, fast=fast)
    settings.update(
        broker_session_timeout=timeouts["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=timeouts["heartbeat_interval_ms"] / 1000,
        broker_rebalance_timeout=timeouts["rebalance_timeout_ms"] / 1000,
    )
    return settings


_ORIGINAL: dict[str, Any] = {}


async def _highwaters_from_fetch(self: Any, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    # Replaces AIOKafkaConsumerThread._highwaters, which returns aiokafka's end_offsets
    # (ListOffsets) outside transactions; it runs in faust's consumer thread, on the
    # loop of the consumer it reads from.
    if self.consumer.in_transaction:
        return await _ORIGINAL["_highwaters"](self, partitions)
    return await end_offsets(self._ensure_consumer(), partitions)


def _worker_consumer_with_short_fetch_wait(self: Any, transport: Any) -> AIOKafkaConsumer:
    consumer = _ORIGINAL["_create_worker_consumer"](self, transport)
    # faust hard-codes fetch_max_wait_ms=1500; read before start() builds the fetcher.
    consumer._fetch_max_wait_ms = fetch_max_wait_ms(True)
    return consumer


_FIXES = {
    "_highwaters": _highwaters_from_fetch,
    "_create_worker_consumer": _worker_consumer_with_short_fetch_wait,
}


def install_fixes() -> None:
    """Deviations that reach faust-streaming 0.15.3 through aiokafka; idempotent.

    1. ListOffsets(LATEST) is short on Tansu (see `taskfold.broker.highwater`). faust asks
       for the ends of changelog partitions in `faust/tables/recovery.py`
       (`_build_highwaters` -> `consumer.highwaters` -> `AIOKafkaConsumerThread._highwaters`
       in `faust/transport/drivers/aiokafka.py`, which calls aiokafka's `end_offsets`).
       Recovery then stops early, or fails with `ConsistencyError: persisted offset >
       highwater`. The replacement answers with `highwater.end_offsets` (Fetch high watermark).
    2. A parked Fetch is not woken by new data (see `settings.fetch_max_wait_ms`), and
       faust's worker consumer hard-codes `fetch_max_wait_ms=1500`: every record would wait
       up to 750 ms. The replacement `_create_worker_consumer` sets the Tansu value.
    Both replace methods on the class, so they cover every faust app in the process.
    """
    for name, fix in _FIXES.items():
        current = getattr(AIOKafkaConsumerThread, name)
        if current is not fix:
            _ORIGINAL.setdefault(name, current)
            setattr(AIOKafkaConsumerThread, name, fix)


def uninstall_fixes() -> None:
    """Restore faust's own methods (for tests that show the deviations)."""
    for name, original in _ORIGINAL.items():
        setattr(AIOKafkaConsumerThread, name, original)


def fixes_installed() -> bool:
    """True if install_fixes() is in effect."""
    return all(getattr(AIOKafkaConsumerThread, name) is fix for name, fix in _FIXES.items())


def apply_fixes(broker: BrokerLike | bool) -> None:
    """Install every client fix a faust worker needs, only if the broker is Tansu."""
    if is_tansu(broker):
        leavegroup.install()
        install_fixes()

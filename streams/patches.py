"""A fix for faust-streaming 0.15.3 itself, needed on every broker (Tansu's are in faustcompat).

faust pauses the stream partitions while it recovers tables, but the aiokafka fetcher may
already have fetched them: those records are consumed (the position moves past them) and
dropped. After recovery faust seeks the stream partitions back to their committed offsets
(`Consumer.perform_seek` -> `AIOKafkaConsumerThread.seek_to_committed` -> aiokafka's
`seek_to_committed`), and aiokafka seeks only `if offset and offset > 0`. A partition with
no committed offset (a new group, or workers that never lived a commit interval) keeps the
advanced position, and the records fetched during recovery are never processed: in
`tests/integration/test_worker.py` a restarted worker skipped 80 events this way.

The replacement seeks such partitions to their beginning, which is what
`consumer_auto_offset_reset="earliest"` promises; the scheduler skips what its rows
already reflect, by offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

_ORIGINAL: dict[str, Any] = {}


async def seek_to_committed_or_beginning(consumer: AIOKafkaConsumer) -> Mapping[TopicPartition, int | None]:
    """aiokafka's seek_to_committed, plus a seek to the beginning where it did not seek."""
    committed = await consumer.seek_to_committed()
    unsought = [tp for tp, offset in committed.items() if not offset]  # None or 0
    if unsought:
        await consumer.seek_to_beginning(*unsought)
    return committed


async def _seek_to_committed(self: Any) -> Mapping[TopicPartition, int | None]:
    # Replaces AIOKafkaConsumerThread.seek_to_committed; runs in faust's consumer thread.
    return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer())


def install() -> None:
    """Replace faust's seek_to_committed on the class (idempotent)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if AIOKafkaConsumerThread.seek_to_committed is not _seek_to_committed:
        _ORIGINAL.setdefault("seek_to_committed", AIOKafkaConsumerThread.seek_to_committed)
        AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed


def uninstall() -> None:
    """Restore faust's own method (for the test that shows the bug)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if "seek_to_committed" in _ORIGINAL:
        AIOKafkaConsumerThread.seek_to_committed = _ORIGINAL["seek_to_committed"]

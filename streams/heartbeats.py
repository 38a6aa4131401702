"""Agent liveness for the scheduler: the whole `heartbeats` topic, read by every worker.

Liveness is needed wherever an agent's queues are scheduled, so each worker reads every
partition (like a faust GlobalTable), without a consumer group. The timers must not judge
leases before this board has read the topic up to the end it had at start: an empty
board would make every agent look silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import aclosing

from schemas.codec import PoisonMessage
from taskfold.log import ConsumedRecord, LogReader
from taskfold.core.telemetry import Heartbeat
from taskfold.log.wire import decode_record

log = logging.getLogger(__name__)


def sign_of_life(record: ConsumedRecord) -> tuple[str, int] | None:
    """(agent id, sent_at ms) of a heartbeat record, or None when it is not a heartbeat."""
    if record.value is None:
        return None  # a tombstone: compaction's delete marker, not a sign of life
    try:
        beat = decode_record(record.value)
    except PoisonMessage as exc:
        log.warning("undecodable heartbeat at %s: %s", record.position, exc.reason)
        return None
    if not isinstance(beat, Heartbeat):
        log.warning("%s on the heartbeats topic at %s, not a Heartbeat", type(beat).__name__, record.position)
        return None
    return beat.agent_id, beat.sent_at


class HeartbeatBoard(Mapping[str, int]):
    """agent id -> last heartbeat (ms, the agent's `sent_at`); `ready` once caught up."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self.ready = asyncio.Event()

    def __getitem__(self, agent_id: str) -> int:
        return self._seen[agent_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, agent_id: str, sent_at: int) -> None:
        """Record a heartbeat; an older one (a replay, a skewed clock) never moves time back."""
        if sent_at > self._seen.get(agent_id, -1):
            self._seen[agent_id] = sent_at

    async def follow(self, reader: LogReader, topic: str) -> None:
        """Read `topic` from the beginning and forever; set `ready` at the end it had at start."""
        ends = await reader.end_offsets(topic)
        behind = {p for p, end in ends.items() if end > 0}
        if not behind:
            self.ready.set()
        # Compacted on Kafka, so holes are real there; a missed beat is made up by the next one.
        async with aclosing(reader.read(topic, live=True, contiguous=False)) as records:
            async for record in records:
                beat = sign_of_life(record)
                if beat is not None:
                    self.note(*beat)
                if record.partition in behind and record.offset + 1 >= ends[record.partition]:
                    behind.discard(record.partition)
                    if not behind:
                        self.ready.set()

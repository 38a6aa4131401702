"""The progress stream: chunks go to the `progress` topic in order, in batches, off the handler's path.

A handler's `progress()` only queues its chunk, so streaming tokens does not wait for a
broker round trip each. One sender appends the queue in order (same key, same partition,
one append at a time), so chunks keep their order. Before an attempt reports its outcome
the agent flushes, so every chunk of an attempt is on the log before its TaskCompleted.
Progress is telemetry: a failed append is logged and counted, never a failed attempt.
"""

from __future__ import annotations

import asyncio
import logging

from taskfold.log.records import RawRecord
from taskfold.log.writer import LogWriter
from taskfold.core.telemetry import ProgressChunk
from taskfold.log.wire import encode_record

log = logging.getLogger(__name__)

MAX_BATCH = 500


class ProgressStream:
    """Queues progress chunks and appends them to the progress topic in order."""

    def __init__(self, writer: LogWriter, topic: str, max_queued: int = 10_000) -> None:
        self.writer, self.topic = writer, topic
        self.sent = 0  # chunks appended (or given up on), in queue order
        self.failed = 0
        self._queue: asyncio.Queue[ProgressChunk] = asyncio.Queue(max_queued)
        self._queued = 0
        self._progress = asyncio.Condition()

    async def put(self, chunk: ProgressChunk) -> None:
        """Queue a chunk; waits only when max_queued chunks are already waiting (back-pressure)."""
        await self._queue.put(chunk)
        self._queued += 1

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every chunk queued so far is appended; False if that took longer than timeout."""
        target = self._queued
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self.sent >= target), timeout)
            except TimeoutError:
                return False
        return True

    async def run(self) -> None:
        """Append queued chunks until cancelled."""
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = []
            for chunk in batch:
                value, headers = encode_record(chunk)
                records.append(RawRecord(key=chunk.queue, value=value, headers=headers))
            try:
                await self.writer.append(self.topic, records)
            except Exception as exc:  # telemetry must not take the agent down
                self.failed += len(batch)
                log.warning("could not append %d progress chunk(s): %s", len(batch), exc)
            async with self._progress:
                self.sent += len(batch)
                self._progress.notify_all()

"""The transcripts view: the progress chunks each attempt streamed, in log order.

Tables (keys NUL-joined):
* `chunks`        task_id, queue, position key -> {position, partition, offset, chunk}
                  (`chunk` is the ProgressChunk as JSON; the attempt is in it)
* `queue_chunks`  queue, position key -> task_id (a queue's stream reads the chunk row)
* `chunk_counts`  task_id, queue -> {chunks, by_attempt: {attempt: chunks}, last_position}
* `chunk_ids`     chunk_id -> position of its first copy: a chunk sent twice is kept once

Chunks are keyed by log position rather than by attempt: a stream resumes by position,
and a zombie attempt's late chunks must not sort before ones already delivered.
"""

from __future__ import annotations

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join, task_key
from taskfold.core.telemetry import ProgressChunk

CHUNKS = "chunks"
QUEUE_CHUNKS = "queue_chunks"
CHUNK_COUNTS = "chunk_counts"
CHUNK_IDS = "chunk_ids"


class TranscriptsView:
    """Progress chunks by task and by queue."""

    name = "transcripts"

    def apply(self, change: Change, rows: Rows) -> None:
        """Transcripts are made of progress chunks only."""

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        chunk = item.record
        if not isinstance(chunk, ProgressChunk):
            return
        position = f"{item.partition}:{item.offset}"
        if rows.get(CHUNK_IDS, chunk.chunk_id) is not None:
            return
        rows.put(CHUNK_IDS, chunk.chunk_id, position)
        rows.put(CHUNKS, join(chunk.task_id, chunk.queue, item.key), {
            "position": position, "partition": item.partition, "offset": item.offset,
            "chunk": chunk.model_dump(mode="json")})
        rows.put(QUEUE_CHUNKS, join(chunk.queue, item.key), chunk.task_id)
        key = task_key(chunk.task_id, chunk.queue)
        counts = rows.get(CHUNK_COUNTS, key) or {"chunks": 0, "by_attempt": {}, "last_position": None}
        by_attempt = dict(counts["by_attempt"])
        attempt = str(chunk.attempt)
        by_attempt[attempt] = by_attempt.get(attempt, 0) + 1
        rows.put(CHUNK_COUNTS, key, {"chunks": counts["chunks"] + 1,
                                     "by_attempt": dict(sorted(by_attempt.items(), key=lambda kv: int(kv[0]))),
                                     "last_position": position})

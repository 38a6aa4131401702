"""The Celery app of the comparison benchmark (imported by the Celery workers bench starts).

Each task records when it started and finished in a Redis list, so the driver measures
Celery exactly as it measures taskfold: submit→start and submit→complete per task.
Redis priorities: `queue_order_strategy=priority` with steps 0/3/6/9 (0 served first).
"""

from __future__ import annotations

import json
import os
import time

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
DONE = "bench:done"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,  # one task per slot, as taskfold agents get
    broker_transport_options={"queue_order_strategy": "priority", "priority_steps": [0, 3, 6, 9]},
    task_default_queue="bench",
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.work")
def work(task_id: str, submitted_ns: int, sleep_ms: int) -> None:
    started = time.time_ns()
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    finished = time.time_ns()
    record = {"id": task_id, "submitted": submitted_ns, "started": started, "finished": finished}
    _redis().rpush(DONE, json.dumps(record))


_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(REDIS_URL)
    return _client

"""Count the Fetch requests of every process of a benchmark (bench/fetchcount.py runs it).

Put this directory on PYTHONPATH and set TASKFOLD_FETCHCOUNT_DIR: each Python process
then counts its Fetch requests per (client id, max_wait, topics) and whether the answer
carried records, and rewrites DIR/<pid>.json once a second (processes end by signal, so
an exit hook would be lost).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

_DIR = os.environ.get("TASKFOLD_FETCHCOUNT_DIR")


def _install(directory: str) -> None:
    from aiokafka import conn

    counts: dict[str, list[int]] = {}
    original = conn.AIOKafkaConnection.send

    def send(self, request, expect_response=True):  # noqa: ANN001 - aiokafka's signature
        result = original(self, request, expect_response)
        if getattr(request, "API_KEY", None) != 1 or not expect_response:
            return result
        struct = request.prepare(self._versions)
        topics = ",".join(sorted(t for t, _ in struct.topics))
        key = f"{self._client_id}|{struct.max_wait_time}|{topics}"
        row = counts.setdefault(key, [0, 0])
        row[0] += 1

        async def answered():  # noqa: ANN202
            response = await result
            if any(p[-1] for _, parts in response.topics for p in parts):
                row[1] += 1
            return response

        return answered()

    conn.AIOKafkaConnection.send = send
    label = " ".join(os.path.basename(a) for a in sys.argv[:4])

    def dump() -> None:
        while True:
            time.sleep(1.0)
            path = os.path.join(directory, f"{os.getpid()}.json")
            with open(path + ".tmp", "w") as out:
                json.dump({"process": label, "counts": counts}, out)
            os.replace(path + ".tmp", path)

    threading.Thread(target=dump, daemon=True, name="fetchcount").start()


if _DIR:
    try:
        _install(_DIR)
    except ImportError:  # a process without aiokafka fetches nothing
        pass

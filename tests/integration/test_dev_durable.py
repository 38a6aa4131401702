"""`taskfold dev --data-dir` keeps the log across restarts, and its processes resume (issue 13, section 4).

The broker is the real Tansu on `s3://`, served from a temporary directory by s3rver
(`tools/s3dir.js`). s3rver is installed on demand by `scripts/install-tools`, the
README's install step, so a fresh clone runs this too (it needs node and npm).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from projections.store import Store
from taskfold.broker.harness import start_broker
from taskfold.broker.s3dir import INSTALL, REPO_ROOT, LocalS3, S3rverNotFound, find_s3dir
from taskfold.broker.topics import TopicNames, ensure_topics
from tests.integration.test_dev_supervision import UP_S, alive, running_dev, session, taskfold, until

pytestmark = pytest.mark.integration

TASKS = 12
PROBE = "kept-by-test"  # written into the gateway's store between runs: a wiped store loses it


@pytest.fixture(scope="module")
def s3rver_installed() -> None:
    """s3rver in tools/node_modules, installed by the README's install step if it is missing."""
    try:
        find_s3dir()
        return
    except S3rverNotFound:
        pass
    done = subprocess.run([str(REPO_ROOT / INSTALL)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{INSTALL} failed:\n{done.stdout}\n{done.stderr}"
    find_s3dir()  # raises, naming what is missing, if it still is not there


async def _append_and_read(bootstrap: str, value: bytes) -> tuple[int, list[bytes]]:
    """Append `value` to partition 0 of a topic; its offset, and every value of that partition."""
    topics = TopicNames("kept.")
    await ensure_topics(bootstrap, topics, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        offset = (await producer.send_and_wait(topics.events, value, partition=0)).offset
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.events, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        values: list[bytes] = []
        while len(values) <= offset:
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 30)
            values += [record.value for record in batch.get(tp, [])]
        return offset, values
    finally:
        await consumer.stop()


def test_a_restarted_broker_appends_after_the_kept_log(s3rver_installed: None, tmp_path: Path) -> None:
    # s3rver alone ignores If-None-Match: the restarted Tansu reset the watermark and wrote offset 0 again.
    seen = []
    for value in (b"first", b"second"):
        storage = LocalS3(tmp_path, tmp_path / "s3rver.log").start()
        try:
            with start_broker(storage=storage.storage_url(), storage_env=storage.tansu_env()) as broker:
                seen.append(asyncio.run(_append_and_read(broker.bootstrap, value)))
        finally:
            storage.stop()
    assert seen == [(0, [b"first"]), (1, [b"first", b"second"])]


def _replay(cwd: Path) -> list[dict]:
    done = taskfold(cwd, "replay", "--json")
    assert done.returncode == 0, done.stderr
    return sorted((json.loads(line) for line in done.stdout.splitlines()), key=lambda row: row["task_id"])


def _all_completed(cwd: Path, count: int) -> list[dict] | None:
    rows = _replay(cwd)
    return rows if len(rows) == count and all(row["state"] == "completed" for row in rows) else None


def _submit(cwd: Path, task_ids: list[str]) -> None:
    tasks = [{"queue": "demo", "task_type": "echo", "task_id": task_id, "payload": {"n": task_id}}
             for task_id in task_ids]
    reply = httpx.post(f"{session(cwd)['gateway']}/v1/tasks/batch", json={"tasks": tasks}, timeout=60)
    assert reply.status_code == 200, reply.text


def _stop(dev: subprocess.Popen, output) -> None:  # noqa: ANN001 - test_cli.Output
    dev.send_signal(signal.SIGINT)
    assert dev.wait(timeout=60) == 0, output.text


def _processed(worker_log: Path) -> list[int]:
    """The records each run of worker-1 processed, from its stop report."""
    return [int(n) for n in re.findall(r"processed: .*?\brecords (\d+)", worker_log.read_text())]


@contextmanager
def _gateway_store(cwd: Path) -> Iterator[Store]:
    """The store dev's gateway kept (dev is stopped: nothing else has it open)."""
    store = Store(cwd / "data" / "state" / "gateway" / "gateway")
    try:
        yield store
    finally:
        store.close()


def test_dev_with_a_data_dir_keeps_history_and_resumes_where_it_stopped(s3rver_installed: None,
                                                                        tmp_path: Path) -> None:
    args = ("--demo", "--data-dir", "data", "--gateway-port", "0")
    worker_log = tmp_path / ".taskfold" / "logs" / "worker-1.log"
    with running_dev(tmp_path, *args) as (dev, output):
        out = output.wait_for("Ctrl-C to stop", deadline=UP_S)
        assert "the log is kept in data" in out and "in memory" not in out
        _submit(tmp_path, [f"t{n}" for n in range(TASKS)])
        before = until(lambda: _all_completed(tmp_path, TASKS), 90, "the tasks completing")
        _stop(dev, output)
    with _gateway_store(tmp_path) as store:
        events_before = store.meta("counts")["events"]
        batch = store.batch()
        batch.put("_meta", PROBE, True)
        batch.commit()

    with running_dev(tmp_path, *args) as (dev, output):
        out = output.wait_for("Ctrl-C to stop", deadline=UP_S)
        assert "(new)" not in out, out  # the topics were found, not created again
        assert _replay(tmp_path) == before  # the log came back whole: replay folds the same states
        until(lambda: f"1 queues, {TASKS} tasks" in worker_log.read_text(), UP_S, "worker-1 recovering its tables")
        _submit(tmp_path, ["after"])
        until(lambda: _all_completed(tmp_path, TASKS + 1), 90, "the task submitted after the restart completing")
        _stop(dev, output)

    first, second = _processed(worker_log)
    # The second run read on from its committed offsets: the new events, not the history again.
    assert events_before > second > 0, f"run 1 processed {first} records, the log had {events_before} events " \
                                       f"when it stopped, run 2 processed {second}"
    with _gateway_store(tmp_path) as store:
        counts = store.meta("counts")
        assert store.meta(PROBE) is True  # the second run served the same store, not a fresh one...
        assert counts.get("dropped_by_position", 0) == 0  # ...and read on from its checkpoint, nothing twice
        assert counts["events"] > events_before


def test_s3rver_started_for_dev_dies_with_it(s3rver_installed: None, tmp_path: Path) -> None:
    # Else a broker orphaned by a SIGKILLed dev could still write where the next dev's broker writes.
    owner = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time; from pathlib import Path; "
         "from taskfold.broker.s3dir import LocalS3; from taskfold.cli.cluster import _terminate_with; "
         "s = LocalS3(Path(sys.argv[1]), Path(sys.argv[1]) / 'log', preexec=_terminate_with(os.getpid())).start(); "
         "print(s._proc.pid, flush=True); time.sleep(120)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    s3rver = int(owner.stdout.readline())
    try:
        owner.kill()
        owner.wait(10)
        until(lambda: not alive(s3rver), 10, "s3rver stopping with its owner")
    finally:
        if alive(s3rver):  # the test failed: do not leave it serving
            os.kill(s3rver, signal.SIGKILL)

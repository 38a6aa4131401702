"""Issue 10, items 2 and 3 on the real broker: a misrouted event gets the same rejection from the
worker, replay, the audit and the projection; a future stamp and out-of-order stamps do not
hide a task that completed before the cut time from `replay --until`, `audit --until` or
`?as_of=`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from projections import queries
from projections.gateway import errors, reads
from projections.gateway.deps import ANONYMOUS_ADMIN, Runtime
from projections.live import LiveProjection
from projections.rebuild import rebuild
from projections.views import all_views
from taskfold.audit.logaudit import audit_log
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.edge import now_ms
from taskfold.core.requests import cancel_request, submission
from taskfold.cli.cluster import LocalCluster, LogWatcher
from taskfold.core.events import TaskAssigned
from taskfold.core.fold.placement import home_partition
from taskfold.log.eventlog import Cut, EventLog
from taskfold.log.records import RawRecord
from taskfold.log.foldlog import fold_log
from taskfold.core.state import TaskState
from taskfold.core.testing import Events
from taskfold.log.wire import encode_event

pytestmark = pytest.mark.integration
PARTITIONS = 4  # tests/conftest.py TEST_PARTITIONS
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def log(broker: Broker, topics: TopicNames) -> AsyncIterator[EventLog]:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as opened:
        yield opened


async def test_a_misrouted_cancel_is_rejected_by_the_worker_replay_audit_and_projection(
        broker: Broker, topics: TopicNames, log: EventLog, tmp_path: Path) -> None:
    home, wrong = home_partition("beta", PARTITIONS), home_partition("demo", PARTITIONS)
    assert home != wrong
    cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, tmp_path / "state", log_dir=tmp_path)
    async with LogWatcher(log) as watcher:
        try:
            cluster.worker("worker-1", "--fast-rebalance", "--tick-ms", "50")
            cluster.agent("agent-1", "--queue", "beta=1")
            # Scheduled a little ahead, so the worker reads the cancel before it could assign.
            task = submission("beta", "echo", task_id="t-1", not_before=now_ms() + 3000)
            await log.append([task])
            cancel = cancel_request("beta", "t-1", reason="keyed by the wrong queue")
            (at,) = await log.writer.append(topics.events, [RawRecord("demo", *encode_event(cancel))])
            assert at.partition == wrong
            await watcher.wait_for(lambda ledger: ledger.state("beta").task("t-1") is not None
                                   and ledger.state("beta").task("t-1").state == TaskState.completed,
                                   60, "t-1 assigned by the worker and completed")
        finally:
            cluster.stop_all(timeout=20)
    reason = f"misrouted: queue beta lives in partition {home}, not {wrong}"
    # The worker judged the cancel as everyone does: it assigned the task, and the assignment counted.
    assert sum(v.accepted for e, v in watcher.entries if isinstance(e, TaskAssigned)) == 1
    assert [v.reason for e, v in watcher.entries if e.event_id == cancel.event_id] == [reason]

    replayed = await fold_log(log)
    assert replayed.ledger.state("beta").task("t-1").state == TaskState.completed
    audited = await audit_log(log)
    assert [(v.rule, v.position, v.detail) for v in audited.violations] == [("misrouted", str(at), reason)]

    store = tmp_path / "store"
    await rebuild(broker.bootstrap, topics, store, all_views(), tansu=broker.is_tansu)
    live = LiveProjection(broker.bootstrap, topics, store, all_views(), tansu=broker.is_tansu)
    try:
        rejected, _ = queries.rejections(live.store)
        assert [(r["position"], r["reason"]) for r in rejected] == [(str(at), reason)]
        assert queries.get_task(live.store, "t-1")["state"] == "completed"
    finally:
        live.store.close()


def _stamped_log(now: int) -> tuple[list, Events]:
    """A task that completes before `now`, after an event stamped a day ahead, with stamps out of order."""
    e = Events(queue="beta", seed=f"skew-{now}", now=now - 10_000)
    ahead = e.submit("from-the-future", at=now + DAY_MS)
    events = [e.join("a1", at=now - 9_000), ahead, e.submit("t-1", at=now - 8_000),
              e.assign("t-1", "a1", at=now - 7_000), e.start("t-1", "a1", at=now - 7_024),  # 24 ms backwards
              e.complete("t-1", "a1", at=now - 6_000)]
    return events, e


async def _as_of_over_http(live: LiveProjection, log: EventLog, task_id: str, as_of: int) -> httpx.Response:
    class Auth:
        def authorize(self, request, roles):  # noqa: ANN001, ANN202
            return ANONYMOUS_ADMIN

    app = FastAPI()
    errors.install(app)
    app.include_router(reads.router)
    app.state.runtime = Runtime(live=live, log=log, auth=Auth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        return await http.get(f"/v1/tasks/{task_id}", params={"as_of": str(as_of)})


def _replay_until(broker: Broker, topics: TopicNames, until: int) -> dict[str, str]:
    env = dict(os.environ, TASKFOLD_BOOTSTRAP=broker.bootstrap, TASKFOLD_TOPIC_PREFIX=topics.prefix,
               TASKFOLD_BROKER="tansu" if broker.is_tansu else "kafka")
    done = subprocess.run([sys.executable, "-m", "taskfold", "replay", "--until", str(until), "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {row["task_id"]: row["state"] for row in map(json.loads, done.stdout.splitlines())}


async def test_a_future_stamp_and_out_of_order_stamps_keep_history_as_of_now(
        broker: Broker, topics: TopicNames, log: EventLog, tmp_path: Path) -> None:
    now = now_ms()
    events, _ = _stamped_log(now)
    positions = await log.append(events)
    until = now_ms()
    assert len({p.partition for p in positions}) == 1

    as_of = await fold_log(log, Cut(until_ms=until))
    assert as_of.ledger.state("beta").task("t-1").state == TaskState.completed
    assert as_of.ledger.state("beta").task("from-the-future") is None  # rejected for clock skew
    assert _replay_until(broker, topics, until) == {"t-1": "completed"}
    audited = await audit_log(log, Cut(until_ms=until))
    assert [(v.rule, v.position) for v in audited.violations] == [("stamped-ahead", str(positions[1]))]
    assert audited.ledger.state("beta").task("t-1").state == TaskState.completed
    assert audited.fold.end_ms == now - 6_000

    live = LiveProjection(broker.bootstrap, topics, tmp_path / "store", all_views(), tansu=broker.is_tansu)
    await live.start()
    try:
        await live.wait_applied(positions[-1].partition, positions[-1].offset, timeout=30)
        answer = await _as_of_over_http(live, log, "t-1", until)
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "completed"
        # The start stamped 24 ms before the assign counts from the assign's time on.
        assert (await _as_of_over_http(live, log, "t-1", now - 7_000)).json()["state"] == "running"
        assert (await _as_of_over_http(live, log, "t-1", now - 7_010)).json()["state"] == "queued"
    finally:
        await live.stop()

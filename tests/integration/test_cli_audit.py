"""`taskfold audit` and `taskfold audit explain` against a real broker: a clean log passes,
a stuck task and a projection store with a wrong verdict fail naming their rule, and a
real scheduler decision is explained with its candidates and scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from projections.rebuild import rebuild
from projections.store import Store
from projections.views import all_views
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog
from taskfold.log.records import RawRecord
from taskfold.core.scheduling.decide import decide
from taskfold.core.scheduling.model import Fleet, QueuePolicy
from taskfold.core.testing import Events

MINUTE = 60_000


def cli_env(broker: Broker, topics: TopicNames) -> dict[str, str]:
    return dict(os.environ, TASKFOLD_BOOTSTRAP=broker.bootstrap, TASKFOLD_TOPIC_PREFIX=topics.prefix,
                TASKFOLD_BROKER="tansu" if broker.is_tansu else "kafka", COLUMNS="220")


def taskfold(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskfold", *args], env=env, capture_output=True, text=True,
                          timeout=60)


async def append(broker: Broker, topics: TopicNames, events: list[Event], poison: bool = False) -> list[str]:
    """Append the events (and, if asked, an undecodable record first); their positions."""
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        if poison:
            junk = RawRecord(key=events[0].queue, value=b"\xc3\x01not-an-avro-fingerprint")
            await log.writer.append(topics.events, [junk])
        return [str(p) for p in await log.append(events)]


async def test_a_clean_log_passes_and_poison_is_only_counted(broker, topics) -> None:
    e = Events(queue="emails")
    events = [e.join("a1", slots=2), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1"), e.assign("t2", "a1"),
              e.start("t1", "a1"), e.complete("t1", "a1"), e.complete("t1", "a1"), e.fail("t2", "a1", retryable=False)]
    await append(broker, topics, events, poison=True)
    env = cli_env(broker, topics)

    table = taskfold(env, "audit")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "audit passed" in table.stdout and "poison 1" in table.stdout
    report = json.loads(taskfold(env, "audit", "--json", "--require-terminal").stdout)
    assert report["ok"] and report["poison"] == 1 and report["violations"] == []
    assert report["states"] == {"completed": 1, "dead_lettered": 1} and report["accepted"] == 8


async def test_a_stuck_task_fails_the_audit_as_overdue_and_a_cut_before_it_passes(broker, topics) -> None:
    e = Events(queue="reports")
    events = [e.join("a1"), e.submit("stuck", at=1_000), e.submit("fine", at=1_001), e.assign("fine", "a1"),
              e.complete("fine", "a1", at=10 * MINUTE)]
    await append(broker, topics, events)
    env = cli_env(broker, topics)

    done = taskfold(env, "audit", "--deadline-ms", str(MINUTE))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "overdue" in done.stdout and "stuck" in done.stdout and "audit FAILED" in done.stdout
    # Before the completion the log's newest event is the assignment at 1,002 ms: nobody had waited a minute.
    earlier = taskfold(env, "audit", "--deadline-ms", str(MINUTE), "--until", str(5 * MINUTE))
    assert earlier.returncode == 0, earlier.stdout
    assert taskfold(env, "audit", "--deadline-ms", str(20 * MINUTE)).returncode == 0


async def test_a_store_that_recorded_a_wrong_verdict_fails_as_mismatch_and_over_slots(broker, topics,
                                                                                      tmp_path: Path) -> None:
    e = Events(queue="ml")
    events = [e.join("a1"), e.submit("t1"), e.submit("t2"), e.assign("t1", "a1"), e.assign("t2", "a1"),
              e.complete("t1", "a1")]
    positions = await append(broker, topics, events)
    path = tmp_path / "projections"
    await rebuild(broker.bootstrap, topics, path, all_views(), tansu=broker.is_tansu)
    env = cli_env(broker, topics)
    clean = taskfold(env, "audit", "--store", str(path), "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["store"]["compared"] == len(events)

    # A faulty projection: it recorded t2's assignment as accepted (a1 has one slot, held by t1).
    store = Store(path)
    batch = store.batch()
    for key, row in store.scan("task_history"):
        if row["position"] == positions[4]:
            assert row["verdict"]["outcome"] == "rejected"
            batch.put("task_history", key, dict(row, verdict={"outcome": "accepted", "reason": None, "ref": None}))
    batch.commit()
    store.close()

    done = taskfold(env, "audit", "--store", str(path), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["by_rule"] == {"verdict-mismatch": 1, "over-slots": 1}
    assert {v["position"] for v in report["violations"]} == {positions[4]}
    table = taskfold(env, "audit", "--store", str(path))
    assert "verdict-mismatch" in table.stdout and "audit FAILED" in table.stdout
    missing = taskfold(env, "audit", "--store", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no projection store" in missing.stdout + missing.stderr


async def test_explain_shows_a_scheduler_decision_with_candidates_and_scores(broker, topics) -> None:
    e = Events(queue="gpu", now=100_000)
    seated = [e.join("busy", slots=1, capabilities=["cuda"]), e.join("idle", slots=2, capabilities=["cuda"]),
              e.join("cpu", slots=4), e.submit("other"), e.submit("job", required_capabilities=["cuda"])]
    ledger = Ledger()
    for event in seated:
        ledger.apply(event)
    decisions = decide(ledger.state("gpu"), Fleet(), QueuePolicy(), queue="gpu", now_ms=e.now + 1, heartbeats={})
    job = next(d for d in decisions if d.task_id == "job")
    assert job.agent_id == "idle" and sum(not c.eligible for c in job.candidates) == 2  # busy is full, cpu lacks cuda
    e.now += 1
    await append(broker, topics, seated + decisions + [e.start("job", "idle"), e.complete("job", "idle")])
    env = cli_env(broker, topics)

    done = taskfold(env, "audit", "explain", "job")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "task job in queue gpu" in out and "completed" in out
    assert "idle (chosen)" in out and f"strategy {job.strategy}" in out
    for candidate in job.candidates:
        assert f"{candidate.load}/{candidate.slots}" in out and (candidate.reason or "") in out
    assert out.count("TaskAssigned") == 1  # the decision about "other" is not about this task
    assert "TaskSubmitted" in out and "TaskStarted" in out and "TaskCompleted" in out
    unknown = taskfold(env, "audit", "explain", "nope")
    assert unknown.returncode == 1 and "unknown task" in unknown.stderr and "nope" in unknown.stderr


async def test_explain_says_a_waiting_task_waits_on_quarantined_agents(broker, topics) -> None:
    e = Events(queue="breakers", now=100_000)
    events = [e.join("a1", slots=2)]
    for n in range(2):
        events += [e.submit(f"f{n}"), e.assign(f"f{n}", "a1"), e.fail(f"f{n}", "a1", error="out of memory")]
    await append(broker, topics, events + [e.submit("stuck")])
    env = cli_env(broker, topics)

    out = taskfold(env, "audit", "explain", "stuck", "--breaker-failures", "2", "--breaker-cooldown-ms", "60000")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "not terminal: every agent that can take it is quarantined or on probation" in out.stdout
    assert "a1 is quarantined until 1970-01-01T00:02:40.007Z after 2 consecutive failures, the last on task f1 " \
           "(failed) at 1970-01-01T00:01:40.007Z" in out.stdout
    # With the default breaker (3 failures) a1 was never quarantined: the wait is unexplained.
    default = taskfold(env, "audit", "explain", "stuck")
    assert "unexplained since" in default.stdout and "quarantined" not in default.stdout
    bad = taskfold(env, "audit", "explain", "stuck", "--breaker-failures", "0")
    assert bad.returncode == 2 and "breaker-failures" in bad.stdout + bad.stderr

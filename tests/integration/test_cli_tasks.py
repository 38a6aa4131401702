"""`taskfold status | result | cancel | redrive | queues | agents` on the real broker (and one
run through a real gateway): what they print, and their exit codes for bad input (2),
unknown tasks and refusals (1) and unfinished tasks (3)."""

from __future__ import annotations

import asyncio
import json

import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log.eventlog import EventLog
from taskfold.core.testing import Events
from tests.integration.test_cli import cli_env, taskfold, total_records

pytestmark = pytest.mark.integration


async def append(broker: Broker, topics: TopicNames, *events) -> None:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        await log.append(list(events))


async def test_status_and_result_of_a_completed_task(broker, topics) -> None:
    env = cli_env(broker, topics)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "t-1", "--payload", '{"to": "a@b.c"}').returncode == 0
    pending = taskfold(env, "result", "t-1")
    assert pending.returncode == 3, pending
    assert "task t-1 is queued: not finished yet" in pending.stdout
    e = Events(queue="emails")
    await append(broker, topics, e.join("agent-1", slots=2), e.assign("t-1", "agent-1"), e.start("t-1", "agent-1"),
                 e.complete("t-1", "agent-1", result='{"sent": true}'))
    shown = taskfold(env, "status", "t-1")
    assert shown.returncode == 0, shown
    assert "completed" in shown.stdout and "agent-1" in shown.stdout and "1 of 3" in shown.stdout
    as_json = json.loads(taskfold(env, "status", "t-1", "--json").stdout)
    assert (as_json["state"], as_json["result"]) == ("completed", {"sent": True})
    done = taskfold(env, "result", "t-1", "--wait", "--timeout", "30")
    assert (done.returncode, done.stdout) == (0, '{"sent": true}\n')


async def test_result_wait_times_out_with_exit_3(broker, topics) -> None:
    env = cli_env(broker, topics)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "slow").returncode == 0
    waited = taskfold(env, "result", "slow", "--wait", "--timeout", "0.5")
    assert waited.returncode == 3, waited
    assert "task slow is still queued after 0.5 s" in waited.stdout


async def test_unknown_task_and_bad_input(broker, topics) -> None:
    env = cli_env(broker, topics)
    for verb in ("status", "result", "cancel", "redrive"):
        unknown = taskfold(env, verb, "ghost")
        assert unknown.returncode == 1, unknown
        assert "no task ghost" in unknown.stdout, unknown
    bad = [(["result", "x", "--timeout", "-1"], "--timeout"), (["result", "x", "--timeout", "5"], "--timeout"),
           (["redrive", "x", "--extra-attempts", "0"], "--extra-attempts"), (["status", " "], "TASK"),
           (["status", "x", "--gateway", "localhost:1"], "--gateway")]
    for args, field in bad:
        done = taskfold(env, *args)
        assert done.returncode == 2, (args, done)
        assert field in done.stdout + done.stderr, (args, done)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "r").returncode == 0
    long = taskfold(env, "cancel", "r", "--reason", "x" * 5000)
    assert long.returncode == 2 and "invalid reason" in long.stdout, long
    assert await total_records(broker, topics) == 1


async def test_cancel_then_redrive_refused_then_redrive_a_dead_letter(broker, topics) -> None:
    env = cli_env(broker, topics)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "c-1").returncode == 0
    cancelled = taskfold(env, "cancel", "c-1", "--reason", "not needed")
    assert cancelled.returncode == 0, cancelled
    assert "cancel of task c-1 accepted at" in cancelled.stdout and "it is cancelled" in cancelled.stdout
    again = taskfold(env, "cancel", "c-1")
    assert again.returncode == 1 and "rejected: task c-1 is already cancelled" in again.stdout, again
    refused = taskfold(env, "redrive", "c-1")
    assert refused.returncode == 1 and "only dead-lettered tasks can be redriven" in refused.stdout, refused
    assert taskfold(env, "submit", "emails", "send", "--task-id", "d-1", "--max-attempts", "1").returncode == 0
    e = Events(queue="emails")
    await append(broker, topics, e.join("agent-1"), e.assign("d-1", "agent-1"), e.start("d-1", "agent-1"),
                 e.fail("d-1", "agent-1", retryable=False, error="smtp down"))
    failed = taskfold(env, "result", "d-1")
    assert failed.returncode == 1 and "task d-1 dead-lettered:" in failed.stdout, failed
    redriven = taskfold(env, "redrive", "d-1", "--extra-attempts", "2")
    assert redriven.returncode == 0 and "it is queued" in redriven.stdout, redriven


async def test_queues_and_agents_tables(broker, topics) -> None:
    env = cli_env(broker, topics)
    for task in ("a", "b", "c"):
        assert taskfold(env, "submit", "emails", "send", "--task-id", task).returncode == 0
    e = Events(queue="emails")
    await append(broker, topics, e.join("agent-7", slots=4), e.assign("a", "agent-7"), e.start("a", "agent-7"))
    table = taskfold(env, "queues")
    assert table.returncode == 0, table
    row = next(line for line in table.stdout.splitlines() if "emails" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[:4] == ["emails", "2", "0", "1"] and cells[-1] == "1/4", cells
    rows = [json.loads(line) for line in taskfold(env, "queues", "--json").stdout.splitlines()]
    assert rows[0]["queue"] == "emails" and rows[0]["depth"] == 2
    agents = taskfold(env, "agents")
    assert agents.returncode == 0 and "agent-7" in agents.stdout and "emails:1/4" in agents.stdout, agents

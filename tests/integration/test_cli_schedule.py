"""`taskfold schedule add|list|pause|resume|rm` on the real broker: each prints the schedules
fold's verdict; a bad cron, timezone or interval is exit 2 naming it, with nothing appended."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import cli_env, taskfold, total_records

pytestmark = pytest.mark.integration


async def test_schedule_verbs(broker, topics) -> None:
    env = cli_env(broker, topics)
    added = taskfold(env, "schedule", "add", "reports", "report.render", "--id", "nightly", "--cron", "30 2 * * *",
                     "--timezone", "Europe/Berlin", "--misfire", "run_once", "--payload", '{"kind": "daily"}')
    assert added.returncode == 0, added
    assert added.stdout.startswith("schedule nightly in queue reports: accepted at ")
    again = taskfold(env, "schedule", "add", "reports", "report.render", "--id", "nightly", "--every", "30s")
    assert again.returncode == 2 and "already exists in queue reports" in again.stderr, again
    assert taskfold(env, "schedule", "add", "emails", "digest", "--id", "often", "--every", "5m").returncode == 0

    listed = taskfold(env, "schedule", "list", "--json")
    rows = {r["schedule_id"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["nightly"]["cron"] == "30 2 * * *" and rows["often"]["interval_ms"] == 300_000
    assert rows["nightly"]["task"]["payload"] == {"kind": "daily"} and rows["nightly"]["state"] == "active"

    paused = taskfold(env, "schedule", "pause", "nightly")
    assert paused.returncode == 0 and "is paused: accepted" in paused.stdout, paused
    twice = taskfold(env, "schedule", "pause", "nightly")
    assert twice.returncode == 1 and "already paused" in twice.stderr, twice
    assert "is active: accepted" in taskfold(env, "schedule", "resume", "nightly").stdout
    assert "is deleted: accepted" in taskfold(env, "schedule", "rm", "nightly").stdout
    gone = taskfold(env, "schedule", "pause", "nightly")
    assert gone.returncode == 2 and "no schedule nightly" in gone.stderr, gone
    table = taskfold(env, "schedule", "list")
    assert "often" in table.stdout and "nightly" not in table.stdout


@pytest.mark.parametrize(("args", "named"), [(["--cron", "61 * * * *"], "invalid cron"),
                                             (["--cron", "* * * * *", "--timezone", "Mars/X"], "invalid timezone"),
                                             (["--every", "500"], "invalid interval_ms"),
                                             (["--every", "5x"], "--every")])
async def test_bad_definitions_exit_2_naming_the_field(broker, topics, args, named) -> None:
    env = cli_env(broker, topics)
    result = taskfold(env, "schedule", "add", "reports", "report.render", *args)
    assert result.returncode == 2, result
    assert named in result.stderr + result.stdout
    assert await total_records(broker, topics) == 0

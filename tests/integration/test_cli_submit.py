"""`taskfold submit` says what the fold made of the submit, on the real broker: accepted, a
duplicate of the same request (exit 0), a key reused for a different request (exit 2, nothing
appended), rejected (exit 1); unknown dependencies are refused before appending; payloads come
from a file or stdin; piped output is not wrapped."""

from __future__ import annotations

import json
import subprocess
import sys

from taskfold.core.requests import build
from taskfold.core.events import TaskRedriven
from taskfold.log.eventlog import EventLog
from tests.integration.test_cli import cli_env, taskfold, total_records
from tests.integration.test_write_api import dead_letter_events


def env_for(broker, topics) -> dict[str, str]:
    env = cli_env(broker, topics)
    env.pop("COLUMNS", None)  # as in a pipe from an interactive shell, where COLUMNS is not exported
    return env


async def test_a_duplicate_says_which_task_and_a_different_request_is_refused(broker, topics) -> None:
    env = env_for(broker, topics)
    args = ["submit", "emails", "send", "--payload", '{"to": "ada@example.com"}', "--priority", "high",
            "--idempotency-key", "signup-42"]
    first = taskfold(env, *args, "--task-id", "welcome-1")
    assert first.returncode == 0, first
    assert first.stdout.startswith("submitted task welcome-1 to queue emails at ")
    again = taskfold(env, *args)  # the task id left to default: the same request
    assert again.returncode == 0, again
    assert again.stdout.strip() == ("duplicate: idempotency key 'signup-42' was already used by task welcome-1 "
                                    "(nothing new submitted)")
    before = await total_records(broker, topics)
    other = taskfold(env, *args[:-4], "--idempotency-key", "signup-42", "--task-id", "welcome-2")
    assert other.returncode == 2, other
    assert "idempotency key 'signup-42' was already used by task welcome-1" in other.stdout
    assert "task_id, priority differ" in other.stdout and "nothing submitted" in other.stdout
    assert await total_records(broker, topics) == before


async def test_a_rejected_submit_says_why_and_exits_1(broker, topics) -> None:
    env = env_for(broker, topics)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "t-1").returncode == 0
    again = taskfold(env, "submit", "emails", "send", "--task-id", "t-1")
    assert again.returncode == 1, again
    assert again.stdout.startswith("rejected: task t-1 was already submitted")


async def test_unknown_dependencies_are_refused_unless_they_may_follow(broker, topics) -> None:
    env = env_for(broker, topics)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "known").returncode == 0
    refused = taskfold(env, "submit", "reports", "build", "--depends-on", "known", "--depends-on", "ghost")
    assert refused.returncode == 2, refused
    assert "invalid depends_on: unknown task id(s) ghost:" in refused.stdout
    assert await total_records(broker, topics) == 1
    across = taskfold(env, "submit", "reports", "build", "--task-id", "r-1", "--depends-on", "known")
    assert across.returncode == 0, across
    later = taskfold(env, "submit", "reports", "build", "--task-id", "r-2", "--depends-on", "ghost",
                     "--dependencies-may-follow", "--on-dependency-failure", "run")
    assert later.returncode == 0, later
    bad = taskfold(env, "submit", "reports", "build", "--on-dependency-failure", "ignore")
    assert bad.returncode == 2 and "invalid on_dependency_failure" in bad.stdout
    replayed = taskfold(env, "replay", "--json")
    states = {row["task_id"]: row["state"] for row in map(json.loads, replayed.stdout.splitlines())}
    assert states == {"known": "queued", "r-1": "blocked", "r-2": "blocked"}


async def test_payload_from_a_file_and_from_stdin(broker, topics, tmp_path) -> None:
    env = env_for(broker, topics)
    big = {"rows": ["x" * 100] * 3000}  # 300 kB: past what one argv string may hold on Linux (128 kB)
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(big))
    from_file = taskfold(env, "submit", "bulk", "load", "--task-id", "f", "--payload", f"@{path}")
    assert from_file.returncode == 0, from_file
    from_stdin = subprocess.run([sys.executable, "-m", "taskfold", "submit", "bulk", "load", "--task-id", "s",
                                 "--payload", "-"], env=env, input='{"from": "stdin"}', capture_output=True,
                                text=True, timeout=60)
    assert from_stdin.returncode == 0, from_stdin
    missing = taskfold(env, "submit", "bulk", "load", "--payload", f"@{tmp_path / 'nope.json'}")
    assert missing.returncode == 2 and f"cannot read {tmp_path / 'nope.json'}" in missing.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{oops")
    bad = taskfold(env, "submit", "bulk", "load", "--payload", f"@{broken}")
    assert bad.returncode == 2 and f"invalid payload: {broken}: not valid JSON" in bad.stdout
    assert await total_records(broker, topics) == 2


async def test_piped_output_is_not_wrapped(broker, topics) -> None:
    env = env_for(broker, topics)
    task_id = "a-task-id-long-enough-that-the-line-passes-eighty-columns-" + "x" * 40
    done = taskfold(env, "submit", "emails", "send", "--task-id", task_id)
    assert done.returncode == 0, done
    assert len(done.stdout.splitlines()) == 1 and task_id in done.stdout


async def test_a_retry_after_a_redrive_is_still_the_same_request(broker, topics) -> None:
    env = env_for(broker, topics)
    args = ["submit", "jobs", "t", "--task-id", "j-1", "--max-attempts", "1", "--idempotency-key", "j"]
    assert taskfold(env, *args).returncode == 0
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        await log.append(dead_letter_events("jobs", "j-1"))
        await log.append([build(TaskRedriven, queue="jobs", task_id="j-1", extra_attempts=2)])
    again = taskfold(env, *args)
    assert again.returncode == 0, again
    assert again.stdout.startswith("duplicate: idempotency key 'j' was already used by task j-1")

"""The first CLI verbs against a real broker: submit (and its refusals), replay, tail, dev."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.log.eventlog import EventLog


def cli_env(broker: Broker, topics: TopicNames) -> dict[str, str]:
    return dict(os.environ, TASKFOLD_BOOTSTRAP=broker.bootstrap, TASKFOLD_TOPIC_PREFIX=topics.prefix,
                TASKFOLD_BROKER="tansu" if broker.is_tansu else "kafka", COLUMNS="200")


def taskfold(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskfold", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


async def total_records(broker: Broker, topics: TopicNames) -> int:
    async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
        return sum((await log.end_offsets()).values())


@pytest.mark.parametrize("args, field", [
    (["--payload", "{not json"], "payload"),
    (["--priority", "urgent"], "priority"),
    (["--timeout-ms", "-5"], "timeout_ms"),
    (["--max-attempts", "0"], "max_attempts"),
    (["--label", "novalue"], "--label"),
    (["--not-before", "yesterday"], "not a time"),
])
async def test_bad_submit_names_the_field_and_appends_nothing(broker, topics, args, field) -> None:
    env = cli_env(broker, topics)
    done = taskfold(env, "submit", "emails", "send", *args)
    assert done.returncode == 2, done
    assert field in done.stdout + done.stderr
    assert await total_records(broker, topics) == 0


async def test_submit_then_replay_shows_the_states(broker, topics) -> None:
    env = cli_env(broker, topics)
    first = taskfold(env, "submit", "emails", "send", "--task-id", "t-1", "--payload", '{"to": "x@y.z"}',
                     "--priority", "critical")
    assert first.returncode == 0, first.stderr
    assert "submitted task t-1" in first.stdout
    assert taskfold(env, "submit", "reports", "build", "--task-id", "t-2", "--depends-on", "t-1").returncode == 0
    assert taskfold(env, "submit", "emails", "send", "--task-id", "t-1").returncode == 1  # rejected by the fold
    done = taskfold(env, "replay", "--json")
    assert done.returncode == 0, done.stderr
    states = {row["task_id"]: row["state"] for row in map(json.loads, done.stdout.splitlines())}
    assert states == {"t-1": "queued", "t-2": "blocked"}
    table = taskfold(env, "replay")
    assert "rejected 1" in table.stdout and "accepted 2" in table.stdout


async def test_tail_prints_new_events_with_their_verdicts(broker, topics) -> None:
    env = cli_env(broker, topics)
    assert taskfold(env, "submit", "emails", "send", "--task-id", "old").returncode == 0
    tail = subprocess.Popen([sys.executable, "-m", "taskfold", "tail"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = Output(tail)
    try:
        output.wait_for("following", deadline=30)
        assert taskfold(env, "submit", "emails", "send", "--task-id", "old").returncode == 1  # rejected
        assert taskfold(env, "submit", "emails", "send", "--task-id", "new").returncode == 0
        seen = output.wait_for("task=new", deadline=30)
        assert "rejected: task old was already submitted" in seen
        assert "task=new" in seen and "accepted" in seen.split("task=new")[1]
    finally:
        tail.send_signal(signal.SIGINT)
        tail.wait(timeout=10)


@pytest.mark.integration
def test_dev_demo_runs_a_task_to_completion_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKFOLD_BOOTSTRAP", "TASKFOLD_BROKER")}
    env["TASKFOLD_BROKER"] = "tansu"
    dev = subprocess.Popen([sys.executable, "-m", "taskfold", "dev", "--demo"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = Output(dev).wait_for("Ctrl-C to stop", deadline=60)
        assert "worker-1" in out and "demo-agent-2" in out
        session = json.loads((tmp_path / ".taskfold" / "dev.json").read_text())
        assert session["bootstrap"] in out
        submitted = taskfold(env, "submit", "demo", "echo", "--task-id", "hello", "--payload", '{"hi": 1}', cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr  # found the broker through dev.json
        deadline, states = time.monotonic() + 90, {}
        while states.get("hello") != "completed":
            assert time.monotonic() < deadline, f"task not completed in time: {states}"
            done = taskfold(env, "replay", "--json", cwd=tmp_path)
            states = {row["task_id"]: row["state"] for row in map(json.loads, done.stdout.splitlines())}
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
    assert not (tmp_path / ".taskfold" / "dev.json").exists()
    host, port = session["bootstrap"].rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


class Output:
    """Collects a child's output on a thread, so waiting never blocks on a half-read pipe buffer."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.text = ""
        self._changed = threading.Condition()
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._changed:
                self.text += line
                self._changed.notify_all()

    def wait_for(self, marker: str, deadline: float) -> str:
        """All output so far, once `marker` is in it; AssertionError after `deadline` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: marker in self.text, timeout=deadline):
                raise AssertionError(f"{marker!r} not seen in {deadline} s; output so far:\n{self.text}")
            return self.text

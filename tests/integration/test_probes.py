"""Health, readiness and metrics of a real worker and a real agent, with JSON logs, on the real broker.

A `taskfold worker` (TASKFOLD_LOG_FORMAT=json, --loglevel info) and a `taskfold agent --demo`
run as children with `--http-port 0`; the test reads the port each prints, waits for both
`/readyz` to say 200, submits a task, waits until the agent's `/metrics` counts it completed,
and reads both `/metrics`. Then SIGTERM stops both within a bound, exit code 0, and every
line the worker wrote (stderr and stdout) is one JSON object.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from taskfold.core.testing import Events
from taskfold.log.eventlog import EventLog
from tests.integration.test_cli import Output, cli_env

pytestmark = pytest.mark.integration

STOP_BOUND_S = 30.0  # SIGTERM to exit, with the agent's drain timeout at 5 s


def wait_until(check: Callable[[], object], deadline: float, what: str, detail: Callable[[], str] = str) -> object:
    """Poll `check()` until it returns something truthy; fail naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not (found := check()):
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline} s. {detail()}")
        time.sleep(0.1)
    return found


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} scraped from url/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def ready(url: str, seen: list[tuple[int, dict]]) -> bool:
    """True once url/readyz says 200; every answer is kept in `seen`."""
    try:
        answer = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.TransportError:
        return False
    seen.append((answer.status_code, answer.json()))
    return answer.status_code == 200


def start(argv: list[str], env: dict[str, str], other: Path, *,
          read: str = "stdout") -> tuple[subprocess.Popen, Output]:
    """A `taskfold ARGV` child: the stream `read` is collected, the other one goes to the file `other`."""
    with other.open("wb") as out:
        streams = {"stdout": out, "stderr": out, read: subprocess.PIPE}
        process = subprocess.Popen([sys.executable, "-m", "taskfold", *argv], env=env, text=True, **streams)
    if read == "stderr":
        process.stdout = process.stderr  # Output reads `stdout`
    return process, Output(process)


def url_in(output: Output, marker: str) -> str:
    text = output.wait_for(marker, deadline=60)
    return re.search(rf"{re.escape(marker)}(http://[\d.]+:\d+)", text).group(1)


def stop(process: subprocess.Popen) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds it took)."""
    began = time.monotonic()
    process.terminate()
    try:
        code = process.wait(STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"pid {process.pid} still running {STOP_BOUND_S} s after SIGTERM")
    return code, time.monotonic() - began


async def test_worker_and_agent_serve_health_readiness_and_metrics(broker: Broker, topics: TopicNames,
                                                                  tmp_path: Path) -> None:
    env = {**cli_env(broker, topics), "TASKFOLD_STATE_DIR": str(tmp_path / "state")}
    worker, worker_out = start(["worker", "--fast-rebalance", "--loglevel", "info", "--http-port", "0"],
                               {**env, "TASKFOLD_LOG_FORMAT": "json"}, tmp_path / "worker.err")
    agent, agent_out = start(["agent", "--demo", "--agent-id", "probe-1", "-q", "demo=2", "--drain-timeout", "5",
                              "--http-port", "0"], env, tmp_path / "agent.out", read="stderr")
    try:
        worker_url = url_in(worker_out, '"message": "taskfold worker worker-1: http: ')
        agent_url = url_in(agent_out, "agent probe-1: http: ")
        assert httpx.get(f"{worker_url}/healthz").json() == {"status": "ok"}
        readies: list[tuple[int, dict]] = []
        wait_until(lambda: ready(worker_url, readies), 60, "the worker's /readyz 200", lambda: str(readies[-3:]))
        wait_until(lambda: ready(agent_url, readies), 60, "the agent's /readyz 200", lambda: str(readies[-3:]))
        assert all(body.get("why_not") for code, body in readies if code == 503), readies  # 503 says why
        e = Events(queue="demo", seed=topics.prefix)
        async with EventLog(broker.bootstrap, topics, tansu=broker.is_tansu) as log:
            await log.append([e.submit("t1", task_type="sleep", payload='{"ms": 30}')])
        completed = ("taskfold_agent_attempts_total", (("agent", "probe-1"), ("outcome", "completed")))
        wait_until(lambda: samples(agent_url).get(completed) == 1, 60, "the agent's metrics counting t1 completed",
                   lambda: agent_out.text)
        agent_seen, worker_seen = samples(agent_url), samples(worker_url)
    finally:
        codes = {"agent": stop(agent), "worker": stop(worker)}
    duration = ("taskfold_agent_attempt_duration_seconds_count",
                (("outcome", "completed"), ("queue", "demo"), ("task_type", "sleep")))
    assert agent_seen[duration] == 1
    assert agent_seen[("taskfold_agent_slots", (("agent", "probe-1"), ("queue", "demo")))] == 2
    assert agent_seen[("taskfold_agent_ready", ())] == 1
    accepted = worker_seen[("taskfold_worker_events_folded_total", (("outcome", "accepted"),))]
    assert accepted >= 4  # AgentJoined, TaskSubmitted, TaskAssigned, TaskStarted (and soon TaskCompleted)
    assert worker_seen[("taskfold_worker_appended_events_total", (("what", "decisions"),))] >= 1
    assert worker_seen[("taskfold_worker_ready", ())] == 1
    assert worker_seen[("taskfold_worker_partitions", ())] == 4
    assert all(n == 0 for (name, _), n in worker_seen.items() if name == "taskfold_worker_lag_records")
    print(f"SIGTERM to exit: {', '.join(f'{name} {s:.1f} s' for name, (_, s) in codes.items())}")
    assert {name: code for name, (code, _) in codes.items()} == {"agent": 0, "worker": 0}, agent_out.text
    lines = [*(tmp_path / "worker.err").read_text().splitlines(), *worker_out.text.splitlines()]
    assert any('"logger": "faust' in line or '"logger": "aiokafka' in line for line in lines)  # faust's own, too
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(record), line
    assert any(json.loads(line)["message"].endswith("stopped") for line in worker_out.text.splitlines())

"""`taskfold gateway` and the gateway of `taskfold dev`, as real processes on the real broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames, ensure_topics

from tests.integration.test_cli import Output, cli_env

TOKENS = "sub-tok:submitter,adm-tok:admin"
SUBMITTER = {"Authorization": "Bearer sub-tok"}


@contextmanager
def running_gateway(env: dict[str, str], cwd: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen, Output]]:
    """A `taskfold gateway --port 0` process; (url, process, output) once it serves; stopped with SIGINT."""
    process = subprocess.Popen([sys.executable, "-m", "taskfold", "gateway", "--port", "0", *args], env=env, cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(process)
    try:
        line = next(l for l in output.wait_for("gateway: http", deadline=60).splitlines() if l.startswith("gateway: "))
        yield line.split()[1], process, output
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, output.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def closed(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def wait_until(check, deadline: float, what: str) -> None:
    """Poll `check()` until true; AssertionError naming `what` after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"{what} not seen within {deadline} s"
        time.sleep(0.05)


def events_applied(url: str) -> int:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("taskfold_projection_events_total "):
            return int(float(line.split()[1]))
    return 0


def test_two_gateways_side_by_side_with_auth(broker: Broker, topics: TopicNames, tmp_path: Path) -> None:
    env = {**cli_env(broker, topics), "TASKFOLD_TOKENS": TOKENS}
    with running_gateway(env, tmp_path) as (a, _, out_a), running_gateway(env, tmp_path) as (b, _, _):
        assert a != b
        assert "docs at /docs" in out_a.text
        assert httpx.post(f"{a}/v1/tasks", json={"queue": "q", "task_type": "t"}).status_code == 401
        created = httpx.post(f"{a}/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "x"}, headers=SUBMITTER)
        assert created.status_code == 201, created.text
        wait_until(lambda: events_applied(b) == 1, 30, "the other gateway applying the submit")
        again = httpx.post(f"{b}/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "x"}, headers=SUBMITTER)
        assert again.status_code == 409 and "already submitted" in again.text
        stores = sorted(p.name for p in (tmp_path / ".taskfold" / "gateway").iterdir())
        assert stores == sorted([a.rsplit(":", 1)[1], b.rsplit(":", 1)[1]])  # one store each, named by port
    assert closed(a) and closed(b)


def test_read_only_gateway_serves_a_prebuilt_store_and_refuses_writes(broker, topics, tmp_path: Path) -> None:
    env = {**cli_env(broker, topics), "TASKFOLD_TOKENS": TOKENS}
    store = tmp_path / "built"
    with running_gateway(env, tmp_path, "--store", str(store)) as (url, _, _):
        kept = httpx.post(f"{url}/v1/tasks", json={"queue": "q", "task_type": "t", "task_id": "kept"}, headers=SUBMITTER)
        assert kept.status_code == 201
    with running_gateway(env, tmp_path, "--store", str(store), "--read-only") as (url, _, out):
        assert "read-only" in out.text
        refused = httpx.post(f"{url}/v1/tasks", json={"queue": "q", "task_type": "t"}, headers=SUBMITTER)
        assert refused.status_code == 405
        assert refused.json()["error"]["code"] == "read_only"
        assert httpx.post(f"{url}/v1/tasks/kept/cancel", headers=SUBMITTER).status_code == 405
        assert httpx.get(f"{url}/readyz").status_code == 200
        read = httpx.get(f"{url}/v1/tasks/kept", headers=SUBMITTER)
        assert read.status_code == 200 and read.json()["state"] == "queued"


def test_gateway_without_tokens_refuses_to_start(broker, topics, tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env(broker, topics).items() if k not in ("TASKFOLD_TOKENS", "TASKFOLD_TOKENS_FILE")}
    done = subprocess.run([sys.executable, "-m", "taskfold", "gateway", "--port", "0"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TASKFOLD_TOKENS" in done.stdout + done.stderr


async def test_gateway_refuses_a_store_built_from_another_log(broker, topics, tmp_path: Path) -> None:
    env = {**cli_env(broker, topics), "TASKFOLD_TOKENS": TOKENS}
    store = tmp_path / "store"
    with running_gateway(env, tmp_path, "--store", str(store)) as (url, _, _):
        async with httpx.AsyncClient() as client:
            created = await client.post(f"{url}/v1/tasks", json={"queue": "q", "task_type": "t"}, headers=SUBMITTER)
        assert created.status_code == 201
    other = TopicNames(topics.prefix + "other.")
    await ensure_topics(broker.bootstrap, other, partitions=4)
    done = subprocess.run([sys.executable, "-m", "taskfold", "gateway", "--port", "0", "--store", str(store)],
                          env={**env, "TASKFOLD_TOPIC_PREFIX": other.prefix}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "built from another log" in done.stderr


@pytest.mark.integration
def test_dev_starts_a_gateway_without_auth_and_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKFOLD_BOOTSTRAP", "TASKFOLD_BROKER", "TASKFOLD_TOKENS")}
    env["TASKFOLD_BROKER"] = "tansu"
    dev = subprocess.Popen([sys.executable, "-m", "taskfold", "dev", "--workers", "0", "--gateway-port", "0"],
                           env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = Output(dev).wait_for("Ctrl-C to stop", deadline=90)
        line = next(l for l in out.splitlines() if l.startswith("gateway: http"))
        url = line.split()[1]
        assert line.endswith("(dashboard at /, docs at /docs)")
        assert "authentication is OFF" in out
        session = json.loads((tmp_path / ".taskfold" / "dev.json").read_text())
        assert session["gateway"] == url
        created = httpx.post(f"{url}/v1/tasks", json={"queue": "demo", "task_type": "echo"})  # no token needed
        assert created.status_code == 201, created.text
        assert httpx.get(f"{url}/docs").status_code == 200
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
    assert closed(url)

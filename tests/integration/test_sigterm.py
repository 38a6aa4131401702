"""SIGTERM, as an orchestrator sends it, stops every process cleanly: exit 0 within a bound.

The running worker and agent have theirs elsewhere (test_worker.py, test_agent_stop.py,
test_agent_sdk.py, test_probes.py; the dependency relay and the schedules' beat run inside
the worker). Here: the gateway, with a Server-Sent Events stream still open; `taskfold
dev` with everything it starts, and while it starts; a worker whose broker never answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames
from tests.integration.test_cli import Output, cli_env
from tests.integration.test_dev_supervision import UP_S, _zombie, alive, child_pid, running_dev, session, until
from tests.integration.test_gateway_cli import closed

pytestmark = pytest.mark.integration

STOP_S = 15.0  # uvicorn's graceful shutdown gives open connections 5 s
DEV_STOP_S = 60.0


def start_gateway(env: dict[str, str], cwd: Path, store: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "taskfold", "gateway", "--no-auth", "--port", "0",
                                "--store", str(store)], env=env, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    line = next(line for line in Output(process).wait_for("gateway: http", deadline=60).splitlines()
                if line.startswith("gateway: "))
    return process, line.split()[1]


def test_the_gateway_stops_on_sigterm_with_a_stream_open(broker: Broker, topics: TopicNames, tmp_path: Path) -> None:
    env, store = cli_env(broker, topics), tmp_path / "store"
    gateway, url = start_gateway(env, tmp_path, store)
    opened, ended = threading.Event(), threading.Event()

    def follow() -> None:  # an SSE client that never hangs up by itself
        try:
            with httpx.stream("GET", f"{url}/v1/queues/demo/events", timeout=None) as stream:
                opened.set()
                for _ in stream.iter_lines():
                    pass
        except httpx.HTTPError:
            pass
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    try:
        assert opened.wait(30), "the event stream did not open"
        began = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(STOP_S)
        took = time.monotonic() - began
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()
    print(f"gateway: SIGTERM to exit {took:.1f} s with an open stream")
    assert code == 0 and closed(url) and ended.wait(10)
    again, url = start_gateway(env, tmp_path, store)  # the store was closed: it opens again
    again.send_signal(signal.SIGTERM)
    assert again.wait(STOP_S) == 0


def test_dev_stops_everything_it_started_on_sigterm(tmp_path: Path) -> None:
    with running_dev(tmp_path, "--demo", "--gateway-port", "0") as (dev, output):
        output.wait_for("Ctrl-C to stop", deadline=UP_S)
        logs = tmp_path / ".taskfold" / "logs"
        until(lambda: "ready" in (logs / "worker-1.log").read_text(), UP_S, "worker-1 ready")
        children = {**session(tmp_path)["processes"], "broker": child_pid(tmp_path, "broker", "--listener-url")}
        began = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(DEV_STOP_S) == 0, output.text
        took = time.monotonic() - began
    print(f"dev: SIGTERM to exit {took:.1f} s ({', '.join(sorted(children))})")
    assert not [name for name, pid in children.items() if alive(pid) and not _zombie(pid)]
    assert "stopped" in (logs / "worker-1.log").read_text()
    for agent in ("demo-agent-1", "demo-agent-2"):
        assert "left its queues" in (logs / f"{agent}.log").read_text(), agent
    assert not (tmp_path / ".taskfold" / "dev.json").exists()


def test_dev_stopped_while_starting_leaves_no_broker_behind(tmp_path: Path) -> None:
    with running_dev(tmp_path, "--demo", "--gateway-port", "0") as (dev, output):
        output.wait_for("taskfold dev is up", deadline=UP_S)  # the broker runs; the children are starting
        broker = child_pid(tmp_path, "broker", "--listener-url")
        dev.send_signal(signal.SIGTERM)
        code = dev.wait(DEV_STOP_S)
        leaked = alive(broker) and not _zombie(broker)
        if leaked:
            os.kill(broker, signal.SIGTERM)
    assert not leaked, f"the embedded broker (pid {broker}) outlived dev; dev said:\n{output.text}"
    assert code == 0, output.text
    assert not (tmp_path / ".taskfold" / "dev.json").exists()


def test_a_worker_stopped_while_its_broker_does_not_answer_exits_cleanly(tmp_path: Path) -> None:
    hole = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers a request
    connected = threading.Event()

    def accept() -> None:
        held = []
        while True:
            try:
                held.append(hole.accept()[0])
            except OSError:
                return
            connected.set()

    threading.Thread(target=accept, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFOLD_")}
    env |= {"TASKFOLD_BOOTSTRAP": f"127.0.0.1:{hole.getsockname()[1]}", "TASKFOLD_BROKER": "kafka",
            "TASKFOLD_STATE_DIR": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-m", "taskfold", "worker"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        assert connected.wait(60), "the worker never connected"
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(STOP_S)
    finally:
        hole.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert code == 0, worker.stdout.read()

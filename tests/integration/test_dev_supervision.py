"""`taskfold dev` looks after what it started, and runs once per state directory (issue 10, item 5).

Each test runs a real `taskfold dev` (its own Tansu broker) in a temporary directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_cli import Output

pytestmark = pytest.mark.integration

UP_S = 90.0


def dev_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFOLD_")}
    return {**env, "TASKFOLD_BROKER": "tansu", "COLUMNS": "200"}


def taskfold(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskfold", *args], env=dev_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@contextmanager
def running_dev(cwd: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Output]]:
    """A `taskfold dev ARGS` in `cwd`, up; killed at the end if the test did not stop it."""
    dev = subprocess.Popen([sys.executable, "-m", "taskfold", "dev", *args], env=dev_env(), cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = Output(dev)
        yield dev, output
    finally:
        if dev.poll() is None:  # a failed test: stop it the clean way, or its broker and children outlive it
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait()


def until(condition: Callable[[], object], deadline_s: float, what: str) -> object:
    """condition()'s first truthy value; AssertionError naming `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen in {deadline_s} s"
        time.sleep(0.2)
    return found


def session(cwd: Path) -> dict:
    return json.loads((cwd / ".taskfold" / "dev.json").read_text())


def child_pid(cwd: Path, *argv: str) -> int:
    """The one process running in `cwd` whose command line holds `argv` (other tests' devs run elsewhere)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cwd").resolve() == cwd.resolve():
                args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if any(args[i:i + len(argv)] == list(argv) for i in range(len(args))):
                    found.append(int(proc.name))
        except OSError:
            continue  # gone, or not ours to look at
    assert len(found) == 1, f"{argv} runs as {found} in {cwd}"
    return found[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_worker_is_reported_and_restarted_and_tasks_still_complete(tmp_path: Path) -> None:
    with running_dev(tmp_path, "--demo", "--no-gateway") as (dev, output):
        output.wait_for("Ctrl-C to stop", deadline=UP_S)
        worker_log = tmp_path / ".taskfold" / "logs" / "worker-1.log"
        until(lambda: "ready" in worker_log.read_text(), UP_S, "worker-1 ready")
        old = child_pid(tmp_path, "--worker-id", "worker-1")
        os.kill(old, signal.SIGKILL)
        out = output.wait_for("restarted worker-1 (pid ", deadline=60)
        new = int(re.search(r"restarted worker-1 \(pid (\d+)\)", out).group(1))
        assert new != old and alive(new)
        report = out.split("worker-1 was killed by SIGKILL; last lines of .taskfold/logs/worker-1.log:\n", 1)
        assert len(report) == 2, out
        assert "  | taskfold worker worker-1: starting on" in report[1].split("restarting worker-1 in 1 s")[0]
        until(lambda: session(tmp_path)["processes"]["worker-1"] == new, 10, "dev.json naming the new worker")

        submitted = taskfold(tmp_path, "submit", "demo", "echo", "--task-id", "after", "--payload", '{"hi": 1}')
        assert submitted.returncode == 0, submitted.stderr

        def completed() -> bool:
            done = taskfold(tmp_path, "replay", "--json")
            return any(json.loads(row) == {**json.loads(row), "task_id": "after", "state": "completed"}
                       for row in done.stdout.splitlines())

        until(completed, 120, "the task submitted after the restart completing")
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0, output.text
    assert not alive(new) or _zombie(new)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_child_that_keeps_dying_makes_dev_give_up_and_exit_non_zero(tmp_path: Path) -> None:
    # Holding worker-1's lock makes every `taskfold worker --worker-id worker-1` exit at once.
    workers = tmp_path / ".taskfold" / "workers"
    workers.mkdir(parents=True)
    with (workers / "worker-1.lock").open("a") as held, running_dev(tmp_path, "--no-gateway") as (dev, output):
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = dev.wait(timeout=180)
        out = output.wait_for("stopping", deadline=10)
    assert code == 1, out
    assert "worker-1 exited with code 2; last lines of .taskfold/logs/worker-1.log:" in out
    assert "in use by another worker" in out  # the worker's own words, from its log
    assert [line for line in out.splitlines() if line.startswith("restarted worker-1")].__len__() == 5
    assert "worker-1 exited with code 2 again after 5 restarts within 60 s; giving up" in out
    assert not (tmp_path / ".taskfold" / "dev.json").exists()
    bootstrap = re.search(r"broker: tansu at (\S+)", out).group(1)
    host, port = bootstrap.rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


def test_a_second_dev_in_the_same_directory_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    with running_dev(tmp_path, "--workers", "0", "--no-gateway") as (first, output):
        out = output.wait_for("Ctrl-C to stop", deadline=UP_S)
        bootstrap = re.search(r"broker: tansu at (\S+)", out).group(1)
        before = (tmp_path / ".taskfold" / "dev.json").read_bytes()
        second = taskfold(tmp_path, "dev", "--workers", "0", "--no-gateway")
        assert second.returncode == 2, second.stdout + second.stderr
        assert (f"taskfold dev is already running in .taskfold (pid {first.pid}, broker {bootstrap}, gateway none); "
                "stop it first or use another TASKFOLD_STATE_DIR") in second.stdout + second.stderr
        assert "starting the broker" not in second.stdout + second.stderr
        assert (tmp_path / ".taskfold" / "dev.json").read_bytes() == before
        assert first.poll() is None
        assert taskfold(tmp_path, "replay").returncode == 0  # the first one still answers through dev.json
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 0
    # Once the first has stopped, the directory is free again.
    with running_dev(tmp_path, "--workers", "0", "--no-gateway") as (third, output):
        output.wait_for("Ctrl-C to stop", deadline=UP_S)
        third.send_signal(signal.SIGINT)
        assert third.wait(timeout=60) == 0


def test_a_restarted_gateway_keeps_its_url(tmp_path: Path) -> None:
    import httpx

    with running_dev(tmp_path, "--workers", "0", "--gateway-port", "0") as (dev, output):
        output.wait_for("Ctrl-C to stop", deadline=UP_S)
        url = session(tmp_path)["gateway"]
        old = child_pid(tmp_path, "gateway", "--name", "gateway")
        os.kill(old, signal.SIGKILL)
        output.wait_for("restarted gateway (pid ", deadline=60)

        def serves() -> bool:
            try:
                return httpx.post(f"{url}/v1/tasks", json={"queue": "demo", "task_type": "echo"}).status_code == 201
            except httpx.TransportError:
                return False

        until(serves, UP_S, f"the restarted gateway answering at {url}")
        assert child_pid(tmp_path, "gateway", "--name", "gateway") != old
        assert session(tmp_path)["gateway"] == url
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=60) == 0, output.text


def test_the_children_of_a_killed_dev_stop_with_it(tmp_path: Path) -> None:
    with running_dev(tmp_path, "--demo", "--no-gateway") as (dev, output):
        output.wait_for("Ctrl-C to stop", deadline=UP_S)
        worker_log = tmp_path / ".taskfold" / "logs" / "worker-1.log"
        until(lambda: "ready" in worker_log.read_text(), UP_S, "worker-1 ready")
        children = session(tmp_path)["processes"]
        broker = child_pid(tmp_path, "broker", "--listener-url")
        try:
            dev.kill()
            dev.wait()
            until(lambda: not any(alive(pid) and not _zombie(pid) for pid in children.values()), 60,
                  f"the children {children} stopping after dev was killed")
        finally:
            os.kill(broker, signal.SIGTERM)  # the embedded broker is not dev's child: it outlives a SIGKILL
    # The next dev in the directory can take the worker locks again.
    with running_dev(tmp_path, "--no-gateway") as (again, output):
        output.wait_for("Ctrl-C to stop", deadline=UP_S)
        until(lambda: worker_log.read_text().count("ready") >= 2, UP_S, "the new worker-1 ready")
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=60) == 0, output.text

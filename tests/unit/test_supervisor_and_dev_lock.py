"""`taskfold dev`'s supervisor and its single-instance lock, without a broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

from taskfold.broker.topics import TopicNames
from taskfold.cli.cluster import LocalCluster
from taskfold.config import Settings
from taskfold.broker.connection import DevLock, DevRunning
from taskfold.cli.supervision import RestartPolicy, Supervisor, exit_text, last_lines, sigterm_unwinds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exited(code: int) -> subprocess.Popen:
    """A finished process with this exit code."""
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait(timeout=30)
    return process


def test_a_child_that_exits_is_reported_with_its_log_and_restarted_with_backoff(tmp_path: Path) -> None:
    cluster = LocalCluster("127.0.0.1:1", TopicNames(), True, tmp_path, log_dir=tmp_path)
    (tmp_path / "worker-1.log").write_text("starting\nTraceback: boom\n")
    cluster.processes["worker-1"] = exited(3)
    said, clock, started = [], Clock(), []

    def start() -> subprocess.Popen:
        started.append(clock.now)
        cluster.processes["worker-1"] = exited(3)
        return cluster.processes["worker-1"]

    supervisor = Supervisor(cluster, said.append, RestartPolicy(max_restarts=3, window_s=60.0), clock=clock)
    supervisor.watch("worker-1", start)
    reason = None
    while reason is None and clock.now < 100:
        reason = supervisor.check()
        clock.now += 0.5
    assert started == [1.0, 3.5, 8.0]  # after 1 s, 2 s, 4 s
    assert said[0] == (f"worker-1 exited with code 3; last lines of {tmp_path / 'worker-1.log'}:\n"
                       "  | starting\n  | Traceback: boom")
    assert said[1] == "restarting worker-1 in 1 s" and said[2].startswith("restarted worker-1 (pid ")
    assert reason is not None and "worker-1 exited with code 3 again after 3 restarts within 60 s; giving up" in reason


def test_restarts_outside_the_window_do_not_count(tmp_path: Path) -> None:
    cluster = LocalCluster("127.0.0.1:1", TopicNames(), True, tmp_path, log_dir=tmp_path)
    cluster.processes["gateway"] = exited(1)
    clock = Clock()

    def start() -> subprocess.Popen:
        cluster.processes["gateway"] = exited(1)
        clock.now += 100  # it ran for a while before exiting
        return cluster.processes["gateway"]

    supervisor = Supervisor(cluster, lambda _: None, RestartPolicy(max_restarts=1, window_s=60.0), clock=clock)
    supervisor.watch("gateway", start)
    for _ in range(50):
        assert supervisor.check() is None
        clock.now += 0.5


def test_exit_text_names_the_signal() -> None:
    assert exit_text(2) == "exited with code 2"
    assert exit_text(-signal.SIGKILL) == "was killed by SIGKILL"


def test_last_lines_of_a_missing_log_say_so(tmp_path: Path) -> None:
    assert last_lines(tmp_path / "nope.log")[0].startswith("(cannot read")


def settings_in(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / ".taskfold")


def test_a_second_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from taskfold.config import Settings; "
        "from taskfold.broker.connection import DevLock; "
        f"lock = DevLock.take(Settings(state_dir=Path({str(settings.state_dir)!r}))); "
        "lock.record(broker='127.0.0.1:4567', gateway='http://127.0.0.1:8080'); print('locked', flush=True); "
        "time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DevRunning) as refused:
            DevLock.take(settings)
        assert str(refused.value) == (
            f"taskfold dev is already running in {settings.state_dir} (pid {holder.pid}, broker 127.0.0.1:4567, "
            "gateway http://127.0.0.1:8080); stop it first or use another TASKFOLD_STATE_DIR")
        holder.send_signal(signal.SIGKILL)  # the OS releases the flock of a process that dies
        holder.wait(timeout=30)
        lock = DevLock.take(settings)
        assert json.loads((settings.state_dir / "dev.lock").read_text()) == {"pid": lock.facts["pid"]}
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_sigterm_during_an_event_loop_callback_unwinds_the_start_up() -> None:
    # The handler runs wherever the main thread is; inside a callback, asyncio drops any
    # exception but KeyboardInterrupt and SystemExit, and the start-up carried on.
    async def starting() -> str:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(5)
        return "the start-up went on"

    before = signal.getsignal(signal.SIGTERM)
    began = time.monotonic()
    try:
        with pytest.raises(typer.Exit) as stopped, sigterm_unwinds():
            asyncio.run(starting())
    finally:
        signal.signal(signal.SIGTERM, before)  # the handler ignores further SIGTERMs; not in pytest
    assert stopped.value.exit_code == 0 and time.monotonic() - began < 2

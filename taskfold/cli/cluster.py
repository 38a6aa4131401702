"""A local fleet of taskfold processes (workers, agents) and a live fold of the log to watch
them by: what `taskfold dev`, the end-to-end tests and the benchmarks run on."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from taskfold.broker.topics import TopicNames
from taskfold.core.events import Event
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog, Poison
from taskfold.core.state import Verdict


@dataclass
class LocalCluster:
    """Child processes of `python -m taskfold …` sharing one broker and topic prefix."""

    bootstrap: str
    topics: TopicNames
    tansu: bool
    state_dir: Path
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    die_with_parent: bool = False  # children get SIGTERM when this process dies, even by SIGKILL (Linux)

    def env(self) -> dict[str, str]:
        """The environment every child gets: where the broker, topics and state are."""
        return {**os.environ, "TASKFOLD_BOOTSTRAP": self.bootstrap, "TASKFOLD_TOPIC_PREFIX": self.topics.prefix,
                "TASKFOLD_BROKER": "tansu" if self.tansu else "kafka", "TASKFOLD_STATE_DIR": str(self.state_dir)}

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        """Start `python -m taskfold ARGS` under `name`; output goes to log_dir/name.log if set."""
        if name in self.processes and self.processes[name].poll() is None:
            raise ValueError(f"process {name} is already running")
        out = open(self.log_dir / f"{name}.log", "ab") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        preexec = _terminate_with(os.getpid()) if self.die_with_parent else None
        self.processes[name] = subprocess.Popen([sys.executable, "-m", "taskfold", *args], env=self.env(),
                                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                                preexec_fn=preexec)
        return self.processes[name]

    def worker(self, name: str, *args: str) -> subprocess.Popen:
        """Start a scheduler worker with its own state directory."""
        return self.spawn(name, "worker", "--worker-id", name, *args)

    def agent(self, name: str, *args: str) -> subprocess.Popen:
        """Start a demo agent called `name`."""
        return self.spawn(name, "agent", "--demo", "--agent-id", name, *args)

    def gateway(self, name: str, *args: str) -> subprocess.Popen:
        """Start an HTTP gateway called `name` (its store is <state_dir>/gateway/<name>)."""
        return self.spawn(name, "gateway", "--name", name, *args)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send a signal to one child and, for SIGKILL, reap it."""
        process = self.processes[name]
        process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(timeout=10)

    def stop(self, name: str, timeout: float = 30.0) -> int | None:
        """SIGTERM one child and wait for it (SIGKILL past the timeout); its exit code."""
        process = self.processes[name]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every child: agents and gateways first (agents drain), then workers.

        Each group is signalled at once and shares one deadline: stopped one after another,
        children that each drain for a while added up (dev took 60 s to stop on a loaded machine).
        """
        for workers in (False, True):
            group = [p for n, p in self.processes.items() if ("worker" in n) == workers and p.poll() is None]
            for process in group:
                process.terminate()
            deadline = time.monotonic() + timeout
            for process in group:
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)

    def output(self, name: str) -> str:
        """What a child printed (when log_dir is set)."""
        path = self.log_dir / f"{name}.log" if self.log_dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def tails(self, lines: int = 12) -> str:
        """The last lines each child printed, with its exit code: what a timed-out wait reports."""
        parts = []
        for name, process in sorted(self.processes.items()):
            tail = self.output(name).splitlines()[-lines:]
            state = "running" if process.poll() is None else f"exited {process.returncode}"
            parts.append(f"--- {name} ({state})\n" + "\n".join(tail))
        return "\n".join(parts)


_PR_SET_PDEATHSIG = 1


def _terminate_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when `parent` dies; None where there is no prctl."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork, not in the child
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def wait_for_ready_file(process: subprocess.Popen, path: Path, timeout: float) -> dict | None:
    """The JSON a child writes to `path` once ready; None if it exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        if process.poll() is not None:
            return None
        time.sleep(0.05)
    return None


class LogWatcher:
    """Folds the events topic live in the background; tests and benchmarks wait on its ledger."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.ledger = Ledger()
        self.entries: list[tuple[Event, Verdict]] = []
        self.seen_at: dict[str, float] = {}  # event id -> monotonic time it was read back
        self.poison: list[Poison] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> LogWatcher:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _follow(self) -> None:
        try:
            async for entry in self.log.read(live=True):
                if isinstance(entry, Poison):
                    self.poison.append(entry)
                else:
                    self.seen_at.setdefault(entry.event.event_id, time.monotonic())
                    self.entries.append((entry.event, self.ledger.apply(entry.event, entry.where)))
                async with self._changed:
                    self._changed.notify_all()
        finally:
            async with self._changed:  # wake waiters so a dead reader is reported, not waited on
                self._changed.notify_all()

    def _failed(self) -> bool:
        return self._task is not None and self._task.done()

    async def wait_for(self, condition: Callable[[Ledger], bool], timeout: float, what: str = "condition") -> None:
        """Return once `condition(ledger)` holds; TimeoutError naming `what` after `timeout` seconds."""
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self._failed() or condition(self.ledger))
        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{what} did not happen within {timeout} s; {await self.diagnosis()}") from None
        if not condition(self.ledger) and self._failed():
            raise RuntimeError(f"the log reader stopped while waiting for {what}") from self._task.exception()

    async def diagnosis(self, timeout: float = 30.0) -> str:
        """The watcher's view against a fresh read of the log: tells a stalled reader from a stalled fleet."""
        try:
            fresh = await asyncio.wait_for(self._fresh_fold(), timeout)
        except Exception as exc:  # a diagnosis must not hide the timeout it explains
            return f"watcher folded {len(self.entries)} events; a fresh read failed: {exc!r}"
        count, ledger = fresh
        return (f"watcher folded {len(self.entries)} events {_task_states(self.ledger)}; "
                f"a fresh read folds {count} events {_task_states(ledger)}")

    async def _fresh_fold(self) -> tuple[int, Ledger]:
        ledger, count = Ledger(), 0
        async for entry in self.log.read():
            if not isinstance(entry, Poison):
                ledger.apply(entry.event, entry.where)
                count += 1
        return count, ledger


def _task_states(ledger: Ledger) -> dict[str, dict[str, int]]:
    return {queue: dict(Counter(task.state.value for task in state.tasks.values()))
            for queue, state in sorted(ledger.queues.items())}

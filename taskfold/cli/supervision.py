"""Keeping `taskfold dev`'s children up: a child that exits is reported with the last lines
of its log and started again after a backoff; one that keeps exiting is given up on.

The supervisor is polled (`check()`) from dev's main loop; it never blocks:

1. A child that exited is reported: its exit code (or the signal that killed it) and the
   last lines of its log file.
2. If it was already restarted `max_restarts` times within `window_s`, give up: `check()`
   returns why, and dev stops everything and exits non-zero.
3. Otherwise its restart is due after `first_delay_s`, doubled for every restart still in
   the window, at most `max_delay_s`; a later `check()` starts it with the same arguments.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import typer

from taskfold.cli.cluster import LocalCluster

TAIL_LINES = 10


@dataclass(frozen=True)
class RestartPolicy:
    """How soon a child is started again, and when to stop trying."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 60.0

    def delay(self, recent_restarts: int) -> float:
        """Seconds before the next restart, given the restarts still in the window."""
        return min(self.max_delay_s, self.first_delay_s * 2 ** min(recent_restarts, 16))


@dataclass
class _Watched:
    start: Callable[[], subprocess.Popen]
    restarts: list[float] = field(default_factory=list)  # when it was restarted (monotonic)
    due: float | None = None  # when the pending restart is due


class Supervisor:
    """Watches named children of a LocalCluster and restarts them (see the module docstring)."""

    def __init__(self, cluster: LocalCluster, say: Callable[[str], None], policy: RestartPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster, self.say, self.policy, self._clock = cluster, say, policy or RestartPolicy(), clock
        self._watched: dict[str, _Watched] = {}

    def watch(self, name: str, start: Callable[[], subprocess.Popen]) -> None:
        """Supervise the running child `name`; `start()` starts it again."""
        self._watched[name] = _Watched(start)

    def pids(self) -> dict[str, int]:
        """The process id of every watched child."""
        return {name: self.cluster.processes[name].pid for name in self._watched}

    def check(self) -> str | None:
        """Report exits and start children whose restart is due; why to give up, or None."""
        now = self._clock()
        for name, watched in self._watched.items():
            if watched.due is None:
                code = self.cluster.processes[name].poll()
                if code is not None:
                    reason = self._exited(name, watched, code, now)
                    if reason is not None:
                        return reason
            elif now >= watched.due:
                watched.due = None
                watched.restarts.append(now)
                process = watched.start()
                self.say(f"restarted {name} (pid {process.pid})")
        return None

    def _exited(self, name: str, watched: _Watched, code: int, now: float) -> str | None:
        policy = self.policy
        watched.restarts = [t for t in watched.restarts if now - t < policy.window_s]
        log = self.cluster.log_dir / f"{name}.log" if self.cluster.log_dir else None
        tail = "\n".join(f"  | {line}" for line in last_lines(log)) if log else "  (no log)"
        self.say(f"{name} {exit_text(code)}; last lines of {log}:\n{tail}")
        if len(watched.restarts) >= policy.max_restarts:
            return (f"{name} {exit_text(code)} again after {len(watched.restarts)} restarts within "
                    f"{policy.window_s:.0f} s; giving up (its log: {log})")
        delay = policy.delay(len(watched.restarts))
        watched.due = now + delay
        self.say(f"restarting {name} in {delay:.0f} s")
        return None


def exit_text(code: int) -> str:
    """'exited with code 1', or 'was killed by SIGKILL' for a negative code."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def last_lines(path: Path, lines: int = TAIL_LINES, max_bytes: int = 16_384) -> list[str]:
    """The last `lines` lines of a log file (read from its last `max_bytes`)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return [f"(cannot read {path}: {exc})"]
    return [line for line in text.splitlines() if line.strip()][-lines:] or ["(empty)"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a command was starting.

    A KeyboardInterrupt, because asyncio lets only that (and SystemExit) out of a callback
    or task step: a plain BaseException raised by the handler while the loop ran a callback
    was logged and dropped, and the start-up went on (a worker connecting to a broker that
    never answered outlived its SIGTERM by more than 15 s on a loaded machine).
    """


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    raise Terminated


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Inside, SIGTERM unwinds the command like Ctrl-C (every `finally` runs: children and broker
    stop), and it then exits 0: an orchestrator's stop is a clean stop, even before start-up ends.

    Without it, a SIGTERM before dev's own handlers are installed killed dev outright and left
    the embedded broker running (it is not dev's child).
    """
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except Terminated:
        raise typer.Exit(0) from None
    finally:
        if signal.getsignal(signal.SIGTERM) is _terminate:
            signal.signal(signal.SIGTERM, previous)

"""Where the broker is: an argument, TASKFOLD_BOOTSTRAP, or the running `taskfold dev`.

`taskfold dev` records its broker in `<state_dir>/dev.json`; every other process (CLI
commands, agents, workers) started in the same directory finds it there.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from taskfold.broker.harness import ENV_BROKER, fetch_cluster_id
from taskfold.broker.topics import TopicNames
from taskfold.config import Settings


class NoBroker(ConnectionError):
    """No broker was named, or the one named does not answer."""


@dataclass(frozen=True)
class Connection:
    """A broker to talk to, whether it is Tansu (for the client fixes), and the topic names."""

    bootstrap: str
    tansu: bool
    topics: TopicNames


def session_file(settings: Settings) -> Path:
    """Where `taskfold dev` records the broker it started."""
    return settings.state_dir / "dev.json"


def write_session(settings: Settings, bootstrap: str, tansu: bool, extra: dict | None = None) -> Path:
    """Record a running dev broker so other processes in this directory find it."""
    path = session_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"bootstrap": bootstrap, "tansu": tansu, "topic_prefix": settings.topic_prefix,
            "pid": os.getpid(), **(extra or {})}
    # Written aside and renamed: dev rewrites it while other commands may be reading it.
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(body, indent=2))
    os.replace(partial, path)
    return path


class DevRunning(RuntimeError):
    """Another `taskfold dev` runs in this state directory."""


class DevLock:
    """`<state_dir>/dev.lock`: flocked by the running `taskfold dev`, holding its pid, broker and gateway.

    The OS releases a flock when its process dies, however it dies, so a SIGKILLed dev
    never blocks the next one. The file itself stays (unlinking a locked file would let
    two processes lock two different files of the same name).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd
        self.facts: dict = {"pid": os.getpid()}

    @classmethod
    def take(cls, settings: Settings) -> DevLock:
        """Lock the state directory for this process; DevRunning naming the holder if another has it."""
        path = settings.state_dir / "dev.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DevRunning(_holder(path, settings.state_dir)) from None
        lock = cls(path, fd)
        lock.record()
        return lock

    def record(self, **facts: object) -> None:
        """Add facts (broker, gateway) for a second dev to name."""
        self.facts.update(facts)
        body = json.dumps(self.facts).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, body, 0)

    def release(self) -> None:
        """Unlock (closing the file releases the flock)."""
        os.ftruncate(self._fd, 0)
        os.close(self._fd)


def _holder(path: Path, state_dir: Path) -> str:
    try:
        facts = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        facts = {}  # caught between its truncate and its write
    about = (f"pid {facts.get('pid', 'unknown')}, broker {facts.get('broker', 'starting')}, "
             f"gateway {facts.get('gateway', 'none')}")
    return (f"taskfold dev is already running in {state_dir} ({about}); "
            "stop it first or use another TASKFOLD_STATE_DIR")


def answers(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when the first broker address accepts a TCP connection."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


async def connect(
    bootstrap: str | None = None, topics: TopicNames | None = None, tansu: bool | None = None
) -> Connection:
    """Resolve the broker: `bootstrap`, else TASKFOLD_BOOTSTRAP, else `.taskfold/dev.json` of `taskfold dev`."""
    settings = Settings()
    chosen = bootstrap or settings.bootstrap
    prefix = settings.topic_prefix
    if not chosen:
        path = session_file(settings)
        if not path.exists():
            raise NoBroker("no broker: pass --bootstrap, set TASKFOLD_BOOTSTRAP=host:port, "
                           "or start `taskfold dev` in this directory")
        session = json.loads(path.read_text())
        if not answers(session["bootstrap"]):
            raise NoBroker(f"the `taskfold dev` recorded in {path} ({session['bootstrap']}) does not answer; "
                           "start it again or set TASKFOLD_BOOTSTRAP")
        chosen, prefix = session["bootstrap"], session.get("topic_prefix", prefix)
        tansu = session.get("tansu") if tansu is None else tansu
    if tansu is None:
        tansu = await is_tansu(chosen)
    return Connection(chosen, bool(tansu), topics or TopicNames(prefix))


async def is_tansu(bootstrap: str) -> bool:
    """TASKFOLD_BROKER if set, else whether the cluster id names Tansu (as harness.detect_tansu)."""
    declared = os.environ.get(ENV_BROKER, "").strip().lower()
    if declared:
        return declared == "tansu"
    try:
        cluster_id = await fetch_cluster_id(bootstrap, timeout=5.0)
    except Exception as exc:
        raise NoBroker(f"no broker answers at {bootstrap}: {exc}") from None
    return cluster_id is not None and "tansu" in cluster_id.lower()

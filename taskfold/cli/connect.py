"""Finding the broker a command talks to, and the dev-session file that `taskfold dev` leaves."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import typer

from taskfold.broker.topics import TopicNames
from taskfold.config import Settings


@dataclass(frozen=True)
class Target:
    """A broker to talk to and the topic names on it."""

    bootstrap: str
    tansu: bool
    topics: TopicNames


def session_file(settings: Settings) -> Path:
    """Where `taskfold dev` records the broker it started."""
    return settings.state_dir / "dev.json"


def write_session(settings: Settings, bootstrap: str, tansu: bool, extra: dict | None = None) -> Path:
    """Record a running dev broker so other commands in this directory find it."""
    path = session_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"bootstrap": bootstrap, "tansu": tansu, "topic_prefix": settings.topic_prefix,
            "pid": os.getpid(), **(extra or {})}
    path.write_text(json.dumps(body, indent=2))
    return path


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def resolve(bootstrap: str | None, settings: Settings | None = None) -> Target:
    """--bootstrap, else TASKFOLD_BOOTSTRAP, else the running `taskfold dev`; a clear error otherwise."""
    settings = settings or Settings()
    topics = TopicNames(settings.topic_prefix)
    chosen = bootstrap or settings.bootstrap
    if chosen:
        from taskfold.broker.harness import detect_tansu

        try:
            tansu, _ = detect_tansu(chosen, timeout=5.0)
        except Exception as exc:
            raise typer.BadParameter(f"no broker answers at {chosen}: {exc}", param_hint="--bootstrap") from None
        return Target(chosen, tansu, topics)
    path = session_file(settings)
    if path.exists():
        session = json.loads(path.read_text())
        if _answers(session["bootstrap"]):
            return Target(session["bootstrap"], bool(session["tansu"]), TopicNames(session["topic_prefix"]))
    raise typer.BadParameter(
        "no broker: start one with `taskfold dev` in this directory, or set TASKFOLD_BOOTSTRAP=host:port",
        param_hint="--bootstrap",
    )

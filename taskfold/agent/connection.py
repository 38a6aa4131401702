"""Where an agent's broker is: an argument, TASKFOLD_BOOTSTRAP, or the running `taskfold dev`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from taskfold.broker.harness import ENV_BROKER, fetch_cluster_id
from taskfold.broker.topics import TopicNames
from taskfold.cli.connect import session_file
from taskfold.config import Settings


class NoBroker(ConnectionError):
    """No broker was named and no `taskfold dev` session was found."""


@dataclass(frozen=True)
class Connection:
    """A broker to talk to, whether it is Tansu (for the client fixes), and the topic names."""

    bootstrap: str
    tansu: bool
    topics: TopicNames


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
            raise NoBroker("no broker: pass bootstrap, set TASKFOLD_BOOTSTRAP=host:port, "
                           "or start `taskfold dev` in this directory")
        session = json.loads(path.read_text())
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

"""How CLI commands find the broker: `taskfold.broker.connection`, with errors shown as CLI errors."""

from __future__ import annotations

import asyncio

import typer

from taskfold.config import Settings
from taskfold.broker.connection import Connection, NoBroker, connect

Target = Connection


def resolve(bootstrap: str | None, settings: Settings | None = None) -> Connection:
    """--bootstrap, else TASKFOLD_BOOTSTRAP, else the running `taskfold dev`; a clear CLI error otherwise."""
    del settings  # read from the environment by connect(); kept for callers that pass it
    try:
        return asyncio.run(connect(bootstrap))
    except NoBroker as exc:
        raise typer.BadParameter(str(exc), param_hint="--bootstrap") from None

"""`taskfold queues` and `taskfold agents`: the fleet as rich tables (also drawn by `taskfold top`)."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from taskfold.cli.reach import BOOTSTRAP, GATEWAY, TOKEN, answering, open_client
from taskfold.cli.render import cli_console
from taskfold.clients import AgentView, QueueView
from taskfold.core.edge import now_ms

JSON = typer.Option(False, "--json", help="print one JSON object per line instead of a table")
RUNNING = ("assigned", "running")


def queues(as_json: bool = JSON, bootstrap: str = BOOTSTRAP, gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """Every queue: tasks waiting, running and finished, the oldest wait, its agents' slots and load."""
    console = cli_console(highlight=False)
    with answering(console), open_client(bootstrap, gateway, token) as client:
        rows = client.queues()
    if as_json:
        for row in rows:
            print(row.model_dump_json())
        return
    console.print(queue_table(rows))


def agents(as_json: bool = JSON, bootstrap: str = BOOTSTRAP, gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """Every agent: its queues with load/slots, and how long ago it last sent a heartbeat."""
    console = cli_console(highlight=False)
    with answering(console), open_client(bootstrap, gateway, token) as client:
        rows = client.agents()
    if as_json:
        for row in rows:
            print(row.model_dump_json())
        return
    console.print(agent_table(rows, now_ms()))


def queue_table(rows: list[QueueView], title: str = "queues") -> Table:
    """One row per queue."""
    table = Table(title=title, title_justify="left")
    # Short headers: the table fits 96 columns with a queue name of 20 characters.
    for name in ("queue", "waiting", "blocked", "running", "retry", "done", "dead", "cancel", "oldest",
                 "agents", "load"):
        table.add_column(name, justify="left" if name == "queue" else "right", overflow="fold")
    for row in rows:
        running = sum(row.count(s) for s in RUNNING)
        table.add_row(row.queue, str(row.depth), str(row.count("blocked")), str(running),
                      str(row.count("retry_wait")), str(row.count("completed")),
                      Text(str(row.count("dead_lettered")), style="red" if row.count("dead_lettered") else ""),
                      str(row.count("cancelled")), _age(row.oldest_waiting_age_ms), str(row.agents),
                      f"{row.load}/{row.slots}")
    if not rows:
        table.caption = "no queue yet: nothing was submitted"
    return table


def agent_table(rows: list[AgentView], now_ms: int, title: str = "agents") -> Table:
    """One row per agent."""
    table = Table(title=title, title_justify="left")
    for name in ("agent", "status", "queues (load/slots)", "load/slots", "heartbeat"):
        table.add_column(name, justify="right" if name == "load/slots" else "left", overflow="fold")
    for row in rows:
        status = "draining" if row.draining and row.active else "active" if row.active else "left"
        seats = " ".join(f"{s.queue}:{s.load}/{s.slots}" for s in row.seats if s.active) or "-"
        beat = _age(now_ms - row.last_heartbeat_at) + " ago" if row.last_heartbeat_at else "-"
        table.add_row(row.agent_id, Text(status, style={"active": "green", "left": "dim"}.get(status, "yellow")),
                      seats, f"{row.load}/{row.slots}", beat)
    if not rows:
        table.caption = "no agent yet: none has joined a queue or sent a heartbeat"
    return table


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = max(0, ms) / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

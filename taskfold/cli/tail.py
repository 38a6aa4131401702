"""`taskfold tail`: print events live, with the verdict the fold gives each."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from taskfold.cli.connect import resolve
from taskfold.cli.render import cli_console, event_line
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import EventLog, Poison


def tail(
    queue: str = typer.Option(None, help="only this queue"),
    task: str = typer.Option(None, help="only this task"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="print history too, not only new events"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Follow the events topic. History is folded first so verdicts are right; Ctrl-C stops."""
    console = cli_console(highlight=False)
    target = resolve(bootstrap)
    try:
        asyncio.run(_follow(console, target, queue, task, from_beginning))
    except KeyboardInterrupt:
        pass


async def _follow(console: Console, target, queue: str | None, task: str | None, from_beginning: bool) -> None:
    ledger = Ledger()
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        ends = await log.end_offsets()
        if not from_beginning:
            console.print(f"[dim]folding history to {ends}, then following…[/]")
        async for entry in log.read(live=True):
            verdict = None if isinstance(entry, Poison) else ledger.apply(entry.event, entry.where)
            historic = entry.offset < ends.get(entry.partition, 0)
            if historic and not from_beginning:
                continue
            if isinstance(entry, Poison) or _wanted(entry.event, queue, task):
                console.print(event_line(entry, verdict))


def _wanted(event, queue: str | None, task: str | None) -> bool:
    return (queue is None or event.queue == queue) and (task is None or event.task == task)

"""`taskfold replay`: fold the log and print the task states it gives."""

from __future__ import annotations

import asyncio
import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from taskfold.cli.connect import resolve
from taskfold.cli.render import parse_offsets, parse_time, show_time, state_counts, task_table
from taskfold.log.eventlog import Cut, EventLog
from taskfold.replay import Replay, records_to_read, replay as fold_log


def replay(
    until: str = typer.Option(None, help="as of this time (ISO-8601 or epoch ms), by the events' occurred_at"),
    offsets: str = typer.Option(None, help="as of these positions, e.g. 0:120,1:80 (records before them)"),
    limit: int = typer.Option(50, help="rows of the task table (0 for all)"),
    as_json: bool = typer.Option(False, "--json", help="print task states as JSON lines instead of a table"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Replay the events topic through the fold and print every task's state."""
    console = Console(stderr=as_json)
    if until and offsets:
        raise typer.BadParameter("give --until or --offsets, not both")
    try:
        cut = Cut(until_ms=parse_time(until) if until else None, offsets=parse_offsets(offsets) if offsets else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    target = resolve(bootstrap)
    result = asyncio.run(_run(console, target, cut))
    if as_json:
        for queue in result.ledger.queues.values():
            for task in queue.tasks.values():
                print(json.dumps({"task_id": task.task_id, "queue": task.queue, "state": task.state.value,
                                  "attempt": task.attempt, "agent_id": task.agent_id, "reason": task.reason}))
        return
    _report(console, result, cut, limit)


async def _run(console: Console, target, cut: Cut) -> Replay:
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        total = await records_to_read(log, cut)
        columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True, disable=total < 5000) as bar:
            job = bar.add_task("replay", total=total)
            return await fold_log(log, cut, progress=lambda n: bar.advance(job, n))


def _report(console: Console, result: Replay, cut: Cut, limit: int) -> None:
    where = f" as of {show_time(cut.until_ms)}" if cut.until_ms is not None else (
        f" as of offsets {cut.offsets}" if cut.offsets else "")
    console.print(task_table(result.ledger.queues, limit, f"tasks{where}"))
    counts = ", ".join(f"{state} {n}" for state, n in sorted(state_counts(result.ledger.queues).items()))
    verdicts = ", ".join(f"{v} {n}" for v, n in sorted(result.verdicts.items()))
    console.print(f"{result.records} records in {result.seconds:.2f} s ({result.events_per_second:,.0f}/s); "
                  f"verdicts: {verdicts or 'none'}; poison: {len(result.poison)}")
    console.print(f"tasks by state: {counts or 'none'}")
    for poison in result.poison[:20]:
        console.print(f"[red]poison at {poison.position}[/]: {poison.reason}")

"""`taskfold status | result | cancel | redrive TASK`: one task, through the client (`reach`)."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from taskfold.cli.reach import (BOOTSTRAP, EXIT_NO, EXIT_NOT_FINISHED, GATEWAY, QUEUE, TOKEN, answering,
                                open_client, task_id_argument)
from taskfold.cli.render import STATE_STYLE, cli_console, show_time
from taskfold.clients import Receipt, TaskView

TASK = typer.Argument(..., metavar="TASK", help="the task id", callback=task_id_argument)
JSON = typer.Option(False, "--json", help="print JSON instead of a table")


def status(task_id: str = TASK, queue: str = QUEUE, as_json: bool = JSON, bootstrap: str = BOOTSTRAP,
           gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """Show a task: its state, attempt, agent, times and outcome."""
    console = cli_console(highlight=False)
    with answering(console), open_client(bootstrap, gateway, token) as client:
        task = client.get(task_id, queue=queue)
    if as_json:
        print(task.model_dump_json())
        return
    console.print(task_table(task))


def result(task_id: str = TASK, wait: bool = typer.Option(False, "--wait", help="wait until the task ends"),
           timeout: float = typer.Option(None, min=0, help="with --wait: give up after this many seconds (exit 3)"),
           queue: str = QUEUE, bootstrap: str = BOOTSTRAP, gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """Print a finished task's result as JSON (exit 0); its error if it failed or was cancelled (exit 1)."""
    console = cli_console(highlight=False)
    if timeout is not None and not wait:
        raise typer.BadParameter("--timeout goes with --wait", param_hint="--timeout")
    with answering(console), open_client(bootstrap, gateway, token) as client:
        task = client.wait(task_id, timeout=timeout, queue=queue) if wait else client.get(task_id, queue=queue)
    if not task.finished:
        console.print(f"task {task_id} is {task.state.value}: not finished yet (wait for it with --wait)",
                      markup=False, style="yellow")
        raise typer.Exit(EXIT_NOT_FINISHED)
    if task.state.value != "completed":
        why = task.error or task.reason or "no reason recorded"
        console.print(f"task {task_id} {task.state.value.replace('_', '-')}: {why}", markup=False, style="red")
        raise typer.Exit(EXIT_NO)
    print(json.dumps(task.result))


def cancel(task_id: str = TASK, reason: str = typer.Option(None, help="why (recorded on the event)"),
           queue: str = QUEUE, bootstrap: str = BOOTSTRAP, gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """Ask for a task to be cancelled: at once if it waits, through its agent if one holds it."""
    console = cli_console(highlight=False)
    with answering(console), open_client(bootstrap, gateway, token) as client:
        receipt = client.cancel(task_id, reason=reason, queue=queue)
    console.print(_told("cancel", receipt), markup=False)


def redrive(task_id: str = TASK,
            extra_attempts: int = typer.Option(1, min=1, max=1000, help="attempts to add to max_attempts"),
            reason: str = typer.Option(None, help="why (recorded on the event)"), queue: str = QUEUE,
            bootstrap: str = BOOTSTRAP, gateway: str = GATEWAY, token: str = TOKEN) -> None:
    """Put a dead-lettered task back in its queue with more attempts."""
    console = cli_console(highlight=False)
    with answering(console), open_client(bootstrap, gateway, token) as client:
        receipt = client.redrive(task_id, extra_attempts=extra_attempts, reason=reason, queue=queue)
    console.print(_told("redrive", receipt), markup=False)


def _told(what: str, receipt: Receipt) -> str:
    task = receipt.task
    now = f"; it is {task.state.value}" if task is not None else ""
    if receipt.duplicate:
        return f"{what} of task {receipt.task_id} was already applied (duplicate){now}"
    return f"{what} of task {receipt.task_id} accepted at {receipt.position}{now}"


def task_table(task: TaskView) -> Table:
    """A task as a two-column table."""
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    state = task.state.value + (" (cancel requested)" if task.cancel_requested else "")
    rows = [("task", task.task_id), ("queue", task.queue), ("type", task.task_type),
            ("state", Text(state, style=STATE_STYLE.get(task.state.value, ""))), ("priority", task.priority),
            ("attempt", f"{task.attempt} of {task.max_attempts}"), ("agent", task.agent_id or "-"),
            ("submitted", show_time(task.submitted_at)), ("started", show_time(task.started_at)),
            ("finished", show_time(task.finished_at))]
    if task.waiting_on:
        rows.append(("waiting on", ", ".join(task.waiting_on)))
    if task.result is not None:
        rows.append(("result", json.dumps(task.result)))
    for name, value in (("error", task.error), ("reason", task.reason)):
        if value:
            rows.append((name, value))
    for name, value in rows:
        table.add_row(name, value)
    return table

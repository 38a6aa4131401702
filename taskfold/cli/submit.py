"""`taskfold submit`: append one TaskSubmitted."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from taskfold.cli.connect import resolve
from taskfold.cli.render import parse_time
from taskfold.client import InvalidRequest, submission
from taskfold.log.eventlog import EventLog


def submit(
    queue: str = typer.Argument(..., help="queue name"),
    task_type: str = typer.Argument(..., help="task type the agents handle"),
    payload: str = typer.Option("null", "--payload", "-p", help="payload as JSON text"),
    priority: str = typer.Option("medium", help="critical | high | medium | low"),
    task_id: str = typer.Option(None, help="task id (default: a new uuid4)"),
    timeout_ms: int = typer.Option(300_000, help="timeout of one attempt, ms"),
    max_attempts: int = typer.Option(3, help="attempts before dead-lettering"),
    not_before: str = typer.Option(None, help="do not start before this time (ISO-8601 or epoch ms)"),
    depends_on: list[str] = typer.Option([], "--depends-on", help="task id this task waits for (repeatable)"),
    session_id: str = typer.Option(None, help="session for sticky assignment"),
    correlation_id: str = typer.Option(None, help="workflow or conversation id"),
    concurrency_key: str = typer.Option(None, help="at most --concurrency-limit running tasks per key"),
    concurrency_limit: int = typer.Option(1),
    label: list[str] = typer.Option([], "--label", help="key=value an agent must carry (repeatable)"),
    capability: list[str] = typer.Option([], "--capability", help="capability an agent must have (repeatable)"),
    idempotency_key: str = typer.Option(None, help="a retried submit with this key is a duplicate"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Submit a task: validate, then append a TaskSubmitted and print its position."""
    console = Console()
    try:
        labels = dict(_split_label(item) for item in label)
        when = parse_time(not_before) if not_before else None
        event = submission(
            queue, task_type, payload=payload, priority=priority, task_id=task_id, timeout_ms=timeout_ms,
            max_attempts=max_attempts, not_before=when, depends_on=depends_on, session_id=session_id,
            correlation_id=correlation_id, concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit, labels=labels, required_capabilities=capability,
            idempotency_key=idempotency_key,
        )
    except InvalidRequest as exc:
        for field, reason in exc.problems:
            console.print(f"[red]invalid {field}[/]: {reason}")
        raise typer.Exit(2) from None
    except ValueError as exc:
        console.print(f"[red]invalid input[/]: {exc}")
        raise typer.Exit(2) from None
    target = resolve(bootstrap)
    (position,) = asyncio.run(_append(target, event))
    console.print(f"submitted task [bold]{event.task_id}[/] to queue {queue} at {position} (event {event.event_id})")


def _split_label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--label: {item!r} is not key=value")
    return key, value


async def _append(target, event):
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        return await log.append([event])

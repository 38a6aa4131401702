"""`taskfold schedule add|list|pause|resume|rm`: recurring schedules, straight on the log.

1. Build the event from the options: a bad cron, timezone, interval or template field is
   exit 2 naming it, and nothing is appended.
2. Fold every schedule of the log to its end (`recurring.ScheduleBook`): adding an id the
   queue already has, or changing an id no queue has, is exit 2; nothing is appended.
3. Append, fold up to the appended offset, and print the schedules fold's verdict:
   accepted (exit 0) or rejected (exit 1, a race lost to another writer).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field

import typer
from pydantic import ValidationError
from rich.table import Table

from taskfold.cli.connect import resolve
from taskfold.cli.render import cli_console, parse_time, show_time
from taskfold.cli.submit import _payload_text, _split_label
from taskfold.core.events import Event, ScheduleCreated, ScheduleDeleted, SchedulePaused, ScheduleResumed
from taskfold.log.eventlog import Cut, EventLog, Poison
from taskfold.core.scheduling.recurring import ScheduleBook, definition_problems, describe, key_of
from taskfold.core.state import Verdict
from taskfold.core.edge import now_ms

EXIT_REJECTED = 1
EXIT_INVALID = 2

schedule_app = typer.Typer(no_args_is_help=True, help="Recurring schedules: add, list, pause, resume, rm.")

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str, option: str) -> int:
    """Milliseconds from '1500', '30s', '5m', '2h' or '1d'; BadParameter naming the option otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)?\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 1500, 30s, 5m, 2h, 1d)", param_hint=option)
    return int(match.group(1)) * _UNITS[match.group(2) or "ms"]


@dataclass
class Folded:
    """Every schedule of the log, and the next offset of each partition read."""

    book: ScheduleBook = field(default_factory=ScheduleBook)
    read_to: dict[int, int] = field(default_factory=dict)


async def _fold(log: EventLog, folded: Folded, cut: Cut | None = None, wanted: tuple[int, int] | None = None,
                ) -> Verdict | None:
    """Fold the log from where `folded` stopped; the schedules fold's verdict on the event at `wanted`."""
    found = None
    start = dict(folded.read_to) or None
    async for entry in log.read(start=start, cut=cut):
        folded.read_to[entry.partition] = entry.offset + 1
        if isinstance(entry, Poison):
            continue
        verdict = folded.book.apply(entry.event)
        if wanted == (entry.partition, entry.offset):
            found = verdict
    return found


def _fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    cli_console(stderr=True, highlight=False).print(message, markup=False, style="red")
    return typer.Exit(code)


async def _append(target, event: Event, folded: Folded) -> str:  # noqa: ANN001 - a Target
    """Step 3: append and read the verdict back."""
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        (position,) = await log.append([event])
        cut = Cut(offsets={position.partition: position.offset + 1})
        verdict = await _fold(log, folded, cut, (position.partition, position.offset))
    if verdict is None or verdict.outcome == "rejected":
        raise _fail(f"rejected: {verdict.reason if verdict else 'no verdict read back'} "
                    f"(the event appended at {position} changed nothing)", EXIT_REJECTED)
    return f"{verdict.outcome} at {position} (event {event.event_id})"


async def _book(target) -> Folded:  # noqa: ANN001 - a Target
    folded = Folded()
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        await _fold(log, folded)
    return folded


def _created(options: dict) -> ScheduleCreated:
    """Step 1 for `add`: the event, or exit 2 naming the field."""
    try:
        event = ScheduleCreated(event_id=str(uuid.uuid4()), occurred_at=now_ms(), **options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(f"invalid {problems}; nothing appended") from None
    problems = definition_problems(event)
    if problems:
        raise _fail("invalid " + "; ".join(f"{f}: {r}" for f, r in problems) + "; nothing appended")
    return event


@schedule_app.command("add")
def add(
    queue: str = typer.Argument(..., help="queue the fired tasks go to"),
    task_type: str = typer.Argument(..., help="task type of the fired tasks"),
    cron: str = typer.Option(None, help="cron expression, e.g. '*/15 * * * *' (or --every)"),
    every: str = typer.Option(None, help="interval: 1500, 30s, 5m, 2h, 1d (or --cron)"),
    timezone: str = typer.Option("UTC", help="IANA timezone the cron expression is read in"),
    schedule_id: str = typer.Option(None, "--id", help="schedule id (default: a new uuid4)"),
    start_at: str = typer.Option(None, help="no slot before this time (ISO-8601 or epoch ms); an interval's anchor"),
    misfire: str = typer.Option("skip", help="after downtime: skip | run_once"),
    misfire_grace: str = typer.Option("60s", help="a slot this late still fires"),
    payload: str = typer.Option("null", "--payload", "-p", help="payload: JSON text, @FILE or -"),
    priority: str = typer.Option("medium", help="critical | high | medium | low"),
    timeout_ms: int = typer.Option(300_000, help="timeout of one attempt, ms"),
    max_attempts: int = typer.Option(3, help="attempts before dead-lettering"),
    concurrency_key: str = typer.Option(None, help="at most --concurrency-limit running tasks per key"),
    concurrency_limit: int = typer.Option(1),
    label: list[str] = typer.Option([], "--label", help="key=value an agent must carry (repeatable)"),
    capability: list[str] = typer.Option([], "--capability", help="capability an agent must have (repeatable)"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Create a recurring schedule: each slot of --cron or --every submits a task."""
    try:
        options = dict(queue=queue, task_type=task_type, cron=cron, timezone=timezone, misfire=misfire,
                       interval_ms=parse_duration(every, "--every") if every is not None else None,
                       misfire_grace_ms=parse_duration(misfire_grace, "--misfire-grace"),
                       start_at=parse_time(start_at) if start_at else None, priority=priority,
                       schedule_id=schedule_id or str(uuid.uuid4()), payload=_payload_text(payload),
                       timeout_ms=timeout_ms, max_attempts=max_attempts, concurrency_key=concurrency_key,
                       concurrency_limit=concurrency_limit, labels=dict(_split_label(x) for x in label),
                       required_capabilities=capability, actor="cli")
    except ValueError as exc:
        raise _fail(f"invalid input: {exc}") from None
    event = _created(options)
    target = resolve(bootstrap)
    folded = asyncio.run(_book(target))
    existing = folded.book.schedules.get((queue, event.schedule_id))
    if existing is not None and not existing.deleted:
        raise _fail(f"invalid --id: schedule {event.schedule_id} already exists in queue {queue}; nothing appended")
    told = asyncio.run(_append(target, event, folded))
    cli_console(highlight=False).print(f"schedule {event.schedule_id} in queue {queue}: {told}", markup=False)


@schedule_app.command("list")
def list_(
    queue: str = typer.Option(None, help="only this queue"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """List the live schedules with their state, fires so far and next slot."""
    folded = asyncio.run(_book(resolve(bootstrap)))
    now = now_ms()
    rows = [describe(s, now) for (q, _), s in sorted(folded.book.schedules.items())
            if not s.deleted and (queue is None or q == queue)]
    console = cli_console(highlight=False)
    if as_json:
        for row in rows:
            console.print(json.dumps(row), markup=False)
        return
    table = Table("schedule", "queue", "when", "misfire", "state", "fired", "next slot (UTC)")
    for r in rows:
        when = f"{r['cron']} ({r['timezone']})" if r["cron"] else f"every {r['interval_ms']} ms"
        table.add_row(str(r["schedule_id"]), str(r["queue"]), when, str(r["misfire"]), str(r["state"]),
                      str(r["fired"]), show_time(r["next_slot"]))  # type: ignore[arg-type]
    console.print(table)


def _change(kind: type[Event], schedule_id: str, queue: str | None, bootstrap: str | None) -> None:
    target = resolve(bootstrap)
    folded = asyncio.run(_book(target))
    found = sorted(q for (q, sid), s in folded.book.schedules.items()
                   if sid == schedule_id and not s.deleted and queue in (None, q))
    if not found:
        raise _fail(f"invalid schedule id: no schedule {schedule_id}" + (f" in queue {queue}" if queue else ""))
    if len(found) > 1:
        raise _fail(f"invalid --queue: schedule {schedule_id} is in queues {', '.join(found)}; name one")
    event = kind(event_id=str(uuid.uuid4()), queue=found[0], occurred_at=now_ms(),
                 actor="cli", schedule_id=schedule_id)
    key = key_of(event)
    told = asyncio.run(_append(target, event, folded))
    state = describe(folded.book.schedules[key])["state"]  # type: ignore[index]
    cli_console(highlight=False).print(f"schedule {schedule_id} in queue {found[0]} is {state}: {told}",
                                       markup=False)


_QUEUE = typer.Option(None, help="the schedule's queue, when its id is in several")
_BOOTSTRAP = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)")


@schedule_app.command("pause")
def pause(schedule_id: str, queue: str = _QUEUE, bootstrap: str = _BOOTSTRAP) -> None:
    """Stop a schedule firing until it is resumed."""
    _change(SchedulePaused, schedule_id, queue, bootstrap)


@schedule_app.command("resume")
def resume(schedule_id: str, queue: str = _QUEUE, bootstrap: str = _BOOTSTRAP) -> None:
    """Fire a paused schedule again from its next slot (the slots of the pause never fire)."""
    _change(ScheduleResumed, schedule_id, queue, bootstrap)


@schedule_app.command("rm")
def rm(schedule_id: str, queue: str = _QUEUE, bootstrap: str = _BOOTSTRAP) -> None:
    """Delete a schedule: it never fires again."""
    _change(ScheduleDeleted, schedule_id, queue, bootstrap)

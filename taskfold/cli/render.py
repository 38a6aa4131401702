"""How the CLI shows times, events, verdicts and task tables."""

from __future__ import annotations

import os
import sys
from collections import Counter
from datetime import datetime, timezone
from typing import IO, Any

from rich.console import Console
from rich.errors import MarkupError
from rich.table import Table
from rich.text import Text

from taskfold.core.events import Event
from taskfold.log.eventlog import Poison, Recorded
from taskfold.core.state import QueueState, Verdict
from taskfold.ops import logs

VERDICT_STYLE = {"accepted": "green", "duplicate": "yellow", "rejected": "red"}
STATE_STYLE = {"completed": "green", "dead_lettered": "red", "cancelled": "magenta", "running": "cyan",
               "assigned": "cyan", "retry_wait": "yellow", "blocked": "dim", "scheduled": "dim"}


PIPE_WIDTH = 1000  # columns when the output is a pipe or a file: wide enough that tables need not fold


def cli_console(*, stderr: bool = False, **options: Any) -> Console:
    """A Console for the CLI; when its stream is not a terminal, lines are never wrapped.

    Rich wraps at 80 columns when it cannot ask a terminal, which splits words in output
    piped to a file or to grep. Off a terminal: soft wrap, and tables get PIPE_WIDTH
    columns unless COLUMNS says otherwise.
    """
    console = Console(stderr=stderr, **options)
    if not console.is_terminal:
        console.soft_wrap = True
        if "COLUMNS" not in os.environ:
            console.width = PIPE_WIDTH
    return console


class JsonLines:
    """Stands in for a Console with TASKFOLD_LOG_FORMAT=json: each printed line is a JSON object."""

    def __init__(self, logger: str, stream: IO[str]) -> None:
        self.logger, self.stream = logger, stream

    def print(self, text: object = "", *args: object, markup: bool = True, **options: object) -> None:
        """One status line as JSON, its rich markup removed."""
        try:
            plain = Text.from_markup(str(text)).plain if markup else str(text)
        except MarkupError:  # text that only looks like markup (an error message with brackets)
            plain = str(text)
        logs.status(plain, logger=self.logger, stream=self.stream)


def status_console(logger: str, *, stderr: bool = False) -> Console | JsonLines:
    """The command's Console for people, or JSON lines when the process logs JSON."""
    return JsonLines(logger, sys.stderr if stderr else sys.stdout) if logs.json_logs() else cli_console(stderr=stderr)


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from an integer or an ISO-8601 time (UTC if no zone)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO-8601 like 2026-11-23T19:40:00Z, or epoch ms)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def show_time(ms: int | None) -> str:
    """ISO-8601 UTC with milliseconds, or '-'."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_offsets(text: str) -> dict[int, int]:
    """`0:120,1:80` as {partition: offset}."""
    cut: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, sep, offset = part.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"--offsets: {part!r} is not partition:offset (e.g. 0:120,1:80)")
        cut[int(partition)] = int(offset)
    if not cut:
        raise ValueError("--offsets: give at least one partition:offset")
    return cut


def _detail(event: Event) -> str:
    fields = {"task_type", "priority", "attempt", "error", "retryable", "slots", "reason", "outcome",
              "dependency_id", "strategy", "workflow_id"}
    shown = [f"{k}={getattr(event, k).value if hasattr(getattr(event, k), 'value') else getattr(event, k)}"
             for k in sorted(fields) if getattr(event, k, None) is not None]
    return " ".join(shown)


def event_line(entry: Recorded | Poison, verdict: Verdict | None) -> Text:
    """One line for `taskfold tail`: position, time, queue, type, task, agent, details, verdict."""
    line = Text()
    if isinstance(entry, Poison):
        line.append(f"{str(entry.position):>8}  ", style="dim")
        line.append("POISON ", style="bold red")
        line.append(f"key={entry.key} {entry.reason}")
        return line
    event = entry.event
    line.append(f"{str(entry.position):>8}  ", style="dim")
    line.append(f"{show_time(event.occurred_at)}  ")
    line.append(f"{event.queue:<10} ", style="blue")
    line.append(f"{event.event_type:<20}", style="bold")
    line.append(f" task={event.task or '-'} agent={event.agent or '-'} {_detail(event)}  ")
    if verdict is not None:
        line.append(str(verdict), style=VERDICT_STYLE[verdict.outcome])
    return line


def task_table(queues: dict[str, QueueState], limit: int, title: str) -> Table:
    """The tasks of every queue, most recently submitted last, at most `limit` rows."""
    table = Table(title=title, show_lines=False)
    for column in ("queue", "task", "type", "priority", "state", "attempt", "agent", "note"):
        table.add_column(column, overflow="fold")
    rows = sorted((t for q in queues.values() for t in q.tasks.values()), key=lambda t: (t.submitted_at, t.task_id))
    for task in rows[-limit:] if limit else rows:
        state = task.state.value + (" (cancel requested)" if task.cancel_requested else "")
        note = task.reason or task.error or ""
        table.add_row(task.queue, task.task_id, task.task_type, task.priority.value,
                      Text(state, style=STATE_STYLE.get(task.state.value, "")), str(task.attempt),
                      task.agent_id or "-", note[:80])
    return table


def state_counts(queues: dict[str, QueueState]) -> Counter:
    """How many tasks are in each state, over all queues."""
    return Counter(t.state.value for q in queues.values() for t in q.tasks.values())

"""`taskfold submit`: append one TaskSubmitted and say what the fold made of it.

1. Build the event from the options (`taskfold.core.requests`): a bad field is exit 2 and nothing
   is appended. `--payload @FILE` reads the payload from a file, `--payload -` from stdin.
2. If the submit names dependencies (without `--dependencies-may-follow`) or an
   idempotency key, fold the whole events log (every queue) to its end first: a
   dependency no queue holds, or a key already used for a different request
   (`taskfold.core.submits`), is exit 2 naming it, and nothing is appended.
3. Append, fold the queue's partition up to the appended offset, and print the verdict:
   accepted (exit 0); a duplicate of the same request (exit 0, nothing new); a duplicate
   of a different request that landed meanwhile (exit 2); rejected (exit 1).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer

from taskfold.cli.connect import resolve
from taskfold.cli.render import cli_console, parse_time
from taskfold.core.requests import InvalidRequest, submission
from taskfold.core.events import TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Cut, EventLog, Poison
from taskfold.log.records import Position
from taskfold.core.state import Task, Verdict
from taskfold.core.submits import (conflict_reason, duplicate_reason, request_differences, unknown_dependencies,
                              unknown_reason)

EXIT_REJECTED = 1  # the fold rejected the event (it was appended and changed nothing)
EXIT_INVALID = 2  # refused before appending: a bad field, an unknown dependency, a key reused differently


@dataclass
class Folded:
    """The log as folded so far: the ledger, the next offset of each partition read, and the
    accepted TaskSubmitted of each (queue, idempotency key), for comparing requests (a
    redrive changes the folded task's max_attempts, not the request that created it)."""

    ledger: Ledger = field(default_factory=Ledger)
    read_to: dict[int, int] = field(default_factory=dict)
    keyed: dict[tuple[str, str], TaskSubmitted] = field(default_factory=dict)

    def request(self, queue: str, key: str, task: Task) -> TaskSubmitted | Task:
        """The submit that first used `key` in `queue` (the folded task if not seen)."""
        return self.keyed.get((queue, key), task)


@dataclass(frozen=True)
class Told:
    """What submit prints, and its exit code."""

    text: str
    code: int = 0


def submit(
    queue: str = typer.Argument(..., help="queue name"),
    task_type: str = typer.Argument(..., help="task type the agents handle"),
    payload: str = typer.Option("null", "--payload", "-p", help="payload: JSON text, @FILE (a file) or - (stdin)"),
    priority: str = typer.Option("medium", help="critical | high | medium | low"),
    task_id: str = typer.Option(None, help="task id (default: a new uuid4)"),
    timeout_ms: int = typer.Option(300_000, help="timeout of one attempt, ms"),
    max_attempts: int = typer.Option(3, help="attempts before dead-lettering"),
    not_before: str = typer.Option(None, help="do not start before this time (ISO-8601 or epoch ms)"),
    depends_on: list[str] = typer.Option([], "--depends-on", help="task id this task waits for (repeatable)"),
    on_dependency_failure: str = typer.Option("cancel", help="cancel | run: what to do when a dependency fails"),
    dependencies_may_follow: bool = typer.Option(False, "--dependencies-may-follow",
                                                 help="--depends-on may name tasks not submitted yet"),
    session_id: str = typer.Option(None, help="session for sticky assignment"),
    correlation_id: str = typer.Option(None, help="workflow or conversation id"),
    concurrency_key: str = typer.Option(None, help="at most --concurrency-limit running tasks per key"),
    concurrency_limit: int = typer.Option(1),
    label: list[str] = typer.Option([], "--label", help="key=value an agent must carry (repeatable)"),
    capability: list[str] = typer.Option([], "--capability", help="capability an agent must have (repeatable)"),
    idempotency_key: str = typer.Option(None, help="a retry with this key and the same request is a duplicate"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Submit a task: validate, append a TaskSubmitted, and print the fold's verdict on it."""
    console = cli_console(highlight=False)
    try:
        labels = dict(_split_label(item) for item in label)
        when = parse_time(not_before) if not_before else None
        event = submission(
            queue, task_type, payload=_payload_text(payload), priority=priority, task_id=task_id,
            timeout_ms=timeout_ms, max_attempts=max_attempts, not_before=when, depends_on=depends_on,
            on_dependency_failure=on_dependency_failure, dependencies_may_follow=dependencies_may_follow,
            session_id=session_id, correlation_id=correlation_id, concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit, labels=labels, required_capabilities=capability,
            idempotency_key=idempotency_key,
        )
    except InvalidRequest as exc:
        for field, reason in _named_source(exc.problems, payload):
            console.print(f"[red]invalid {field}[/]: ", end="")
            console.print(reason, markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    except ValueError as exc:
        console.print("[red]invalid input[/]: ", end="")
        console.print(str(exc), markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    target = resolve(bootstrap)
    told = asyncio.run(_submit(target, event, task_id_given=task_id is not None))
    console.print(told.text, markup=False, style="red" if told.code else None)
    if told.code:
        raise typer.Exit(told.code)


def _payload_text(payload: str) -> str:
    """The payload's JSON text: as given, from a file (`@path`), or from standard input (`-`)."""
    if payload == "-":
        return sys.stdin.read()
    if payload.startswith("@"):
        path = Path(payload[1:])
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest([("payload", f"{path} is not UTF-8 text")]) from None
        except OSError as exc:
            raise InvalidRequest([("payload", f"cannot read {path}: {exc.strerror or exc}")]) from None
    return payload


def _named_source(problems: list[tuple[str, str]], payload: str) -> list[tuple[str, str]]:
    """Problems of a payload read from a file or stdin name where it came from."""
    source = "standard input" if payload == "-" else payload[1:] if payload.startswith("@") else None
    if source is None:
        return problems
    return [(f, f"{source}: {r}" if f == "payload" and source not in r else r) for f, r in problems]


def _split_label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--label: {item!r} is not key=value")
    return key, value


async def _submit(target, event: TaskSubmitted, *, task_id_given: bool) -> Told:  # noqa: ANN001 - a Target
    """Steps 2 and 3 of the module docstring."""
    folded = Folded()
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        if (event.depends_on and not event.dependencies_may_follow) or event.idempotency_key is not None:
            await _fold(log, folded)
            refusal = _refusal(folded, event, task_id_given)
            if refusal is not None:
                return refusal
        (position,) = await log.append([event])
        cut = Cut(offsets={position.partition: position.offset + 1})
        start = {position.partition: folded.read_to.get(position.partition, 0)}
        verdict = await _fold(log, folded, start, cut, position)
    if verdict is None:
        return Told(f"appended task {event.task_id} to queue {event.queue} at {position}, but its verdict could not "
                    "be read back: `taskfold tail --from-beginning` shows it", EXIT_REJECTED)
    return _told(folded, event, position, verdict, task_id_given)


async def _fold(log: EventLog, folded: Folded, start: dict[int, int] | None = None, cut: Cut | None = None,
                wanted: Position | None = None) -> Verdict | None:
    """Fold from `start` to the end (or the cut) into `folded`; the verdict of the event at `wanted`."""
    found = None
    async for entry in log.read(start=start, cut=cut):
        folded.read_to[entry.partition] = entry.offset + 1
        if isinstance(entry, Poison):
            continue
        event = entry.event
        verdict = folded.ledger.apply(event, entry.where)
        if isinstance(event, TaskSubmitted) and event.idempotency_key is not None and verdict.outcome == "accepted":
            folded.keyed[(event.queue, event.idempotency_key)] = event
        if wanted is not None and (entry.partition, entry.offset) == (wanted.partition, wanted.offset):
            found = verdict
    return found


def _refusal(folded: Folded, event: TaskSubmitted, task_id_given: bool) -> Told | None:
    """Why the log as folded refuses this submit before it is appended, or None."""
    ledger = folded.ledger
    if event.depends_on and not event.dependencies_may_follow:
        def known(task_id: str) -> bool:
            return task_id == event.task_id or any(q.task(task_id) is not None for q in ledger.queues.values())

        unknown = unknown_dependencies(event.depends_on, known)
        if unknown:
            return Told(f"invalid depends_on: {unknown_reason(unknown)} (--dependencies-may-follow); "
                        "nothing submitted", EXIT_INVALID)
    key = event.idempotency_key
    state = ledger.state(event.queue)
    original = state.task(state.idempotency[key]) if key is not None and key in state.idempotency else None
    if original is None:
        return None
    differences = request_differences(event, folded.request(event.queue, key, original), task_id_given=task_id_given)
    if differences:
        return Told(f"conflict: {conflict_reason(key, original.task_id, differences)}; nothing submitted",
                    EXIT_INVALID)
    return None


def _told(folded: Folded, event: TaskSubmitted, position: Position, verdict: Verdict, task_id_given: bool) -> Told:
    """What to print for the fold's verdict on the appended event."""
    ledger = folded.ledger
    if verdict.outcome == "accepted":
        return Told(f"submitted task {event.task_id} to queue {event.queue} at {position} (event {event.event_id})")
    if verdict.outcome == "rejected":
        return Told(f"rejected: {verdict.reason} (the event appended at {position} changed nothing)", EXIT_REJECTED)
    key, original = event.idempotency_key, ledger.state(event.queue).task(verdict.ref or event.task_id)
    if key is None or original is None:
        return Told(f"duplicate: {verdict.reason} (nothing new submitted)")
    differences = request_differences(event, folded.request(event.queue, key, original), task_id_given=task_id_given)
    if differences:
        return Told(f"conflict: {conflict_reason(key, original.task_id, differences)}; the event appended at "
                    f"{position} changed nothing", EXIT_INVALID)
    return Told(f"duplicate: {duplicate_reason(key, original.task_id)} (nothing new submitted)")

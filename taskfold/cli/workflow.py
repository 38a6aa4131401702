"""`taskfold workflow submit FILE`: append a workflow's node submits and print each node's verdict.

1. Read the spec (JSON, or YAML for any other file name; `-` reads standard input as
   YAML, which JSON is a part of) and check it whole (`taskfold.workflows`): a bad field, a
   duplicate name, an unknown node reference or a cycle is exit 2 naming the nodes, and
   nothing is appended.
2. Fold the partitions of the workflow's queues: a node already submitted under this
   workflow id with other fields (its key `workflow:<id>:<node>` names the request) is
   exit 2 naming the key and what differs, and nothing is appended.
3. Append every node's TaskSubmitted in dependency order (one append).
4. Fold on up to what was appended and print each node's verdict: exit 0 when every node
   was accepted or a duplicate (the workflow was submitted before), 1 when the fold
   rejected one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from taskfold.broker.topics import queue_partition
from taskfold.cli.connect import resolve
from taskfold.cli.render import cli_console
from taskfold.core.requests import InvalidRequest
from taskfold.core.events import TaskSubmitted
from taskfold.core.fold import Ledger
from taskfold.log.eventlog import Cut, EventLog, Poison
from taskfold.log.records import Position
from taskfold.core.state import Verdict
from taskfold.core.submits import conflict_reason, request_differences
from taskfold.workflows import node_of, parse_spec, workflow_events
from taskfold.workflows.spec import WorkflowSpec

EXIT_REJECTED = 1
EXIT_INVALID = 2

workflow_app = typer.Typer(no_args_is_help=True, help="Workflows: DAGs of tasks over one or more queues.")


@workflow_app.command("submit")
def submit(
    file: str = typer.Argument(..., help="the workflow: a .json file, a YAML file, or - (stdin)"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
) -> None:
    """Submit a workflow: check it whole, append one task per node, print each node's verdict."""
    console = cli_console(highlight=False)
    try:
        spec = parse_spec(load(file))
    except InvalidRequest as exc:
        for field, reason in exc.problems:
            console.print(f"[red]invalid {field}[/]: ", end="")
            console.print(reason, markup=False)
        console.print("nothing submitted", markup=False)
        raise typer.Exit(EXIT_INVALID) from None
    target = resolve(bootstrap)
    lines, code = asyncio.run(_submit(target, spec))
    for line in lines:
        console.print(line, markup=False)
    raise typer.Exit(code)


def load(file: str) -> Any:
    """The parsed document of a workflow file; InvalidRequest naming the file when it is not JSON/YAML."""
    source = "standard input" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest([("file", f"cannot read {source}: {getattr(exc, 'strerror', None) or exc}")]) from None
    try:
        return json.loads(text) if file.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if file.endswith(".json") else "YAML"
        raise InvalidRequest([("file", f"{source} is not {kind}: {exc}")]) from None


@dataclass
class Folded:
    """The partitions of the workflow's queues as folded so far, and each node submit accepted there."""

    ledger: Ledger = field(default_factory=Ledger)
    read_to: dict[int, int] = field(default_factory=dict)
    submits: dict[tuple[str, str], TaskSubmitted] = field(default_factory=dict)  # (queue, key) -> first accepted

    async def fold(self, log: EventLog, partitions: list[int], cut: Cut | None = None) -> dict[tuple[int, int], Verdict]:
        """Fold the partitions from where this stopped to their end (or the cut); the verdict at each position."""
        verdicts = {}
        async for entry in log.read(start={p: self.read_to.get(p, 0) for p in partitions}, cut=cut):
            self.read_to[entry.partition] = entry.offset + 1
            if isinstance(entry, Poison):
                continue
            event = entry.event
            verdict = verdicts[(entry.partition, entry.offset)] = self.ledger.apply(event, entry.where)
            if isinstance(event, TaskSubmitted) and event.idempotency_key is not None and verdict.accepted:
                self.submits.setdefault((event.queue, event.idempotency_key), event)
        return verdicts


def changed_nodes(folded: Folded, events: list[TaskSubmitted]) -> list[str]:
    """A line per node already submitted under this workflow id with other fields."""
    out = []
    for event in events:
        original = folded.submits.get((event.queue, event.idempotency_key or ""))
        differences = request_differences(event, original, task_id_given=True) if original is not None else []
        if differences:
            out.append(f"conflict: {conflict_reason(event.idempotency_key or '', original.task_id, differences)}")
    return out


async def _submit(target: Any, spec: WorkflowSpec) -> tuple[list[str], int]:
    """Steps 2 and 3 of the module docstring, after folding the workflow's partitions once to refuse a change."""
    events = workflow_events(spec)
    folded = Folded()
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        count = len(await log.reader.partitions(log.topics.events))
        partitions = sorted({queue_partition(e.queue, count) for e in events})
        await folded.fold(log, partitions)
        conflicts = changed_nodes(folded, events)
        if conflicts:
            return [*conflicts, "nothing submitted"], EXIT_INVALID
        positions = await log.append(events)
        cut = Cut(offsets={p: max(q.offset for q in positions if q.partition == p) + 1
                           for p in {q.partition for q in positions}})
        verdicts = await folded.fold(log, partitions, cut)
    return _told(spec, events, positions, verdicts)


def _told(spec: WorkflowSpec, events: list[TaskSubmitted], positions: list[Position],
          verdicts: dict[tuple[int, int], Verdict]) -> tuple[list[str], int]:
    """A line per node with its verdict, a summary line, and the exit code."""
    lines, code, outcomes = [], 0, set()
    for event, position in zip(events, positions, strict=True):
        verdict = verdicts.get((position.partition, position.offset))
        shown = "not read back (`taskfold tail` shows it)" if verdict is None else str(verdict)
        code = EXIT_REJECTED if verdict is None or verdict.outcome == "rejected" else code
        outcomes.add(verdict.outcome if verdict is not None else "unknown")
        name = node_of(event.task_id, event.correlation_id, event.idempotency_key)
        lines.append(f"{name}: task {event.task_id} at {position}: {shown}")
    lines.append(f"workflow {spec.workflow_id}: {len(events)} nodes, "
                 + ("submitted" if outcomes == {"accepted"} else "already submitted" if outcomes == {"duplicate"}
                    else ", ".join(sorted(outcomes))))
    return lines, code

"""`taskfold workflow submit FILE`: append a workflow's node submits and print each node's verdict.

1. Read the spec (JSON, or YAML for any other file name; `-` reads standard input as
   YAML, which JSON is a part of) and check it whole (`taskfold.workflows`): a bad field, a
   duplicate name, an unknown node reference or a cycle is exit 2 naming the nodes, and
   nothing is appended.
2. Append every node's TaskSubmitted in dependency order (one append).
3. Fold the partitions written to, up to what was appended, and print each node's
   verdict: exit 0 when every node was accepted or a duplicate (the workflow was
   submitted before), 1 when the fold rejected one.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml

from taskfold.cli.connect import resolve
from taskfold.cli.render import cli_console
from taskfold.client import InvalidRequest
from taskfold.fold import Ledger
from taskfold.log.eventlog import Cut, EventLog, Poison
from taskfold.state import Verdict
from taskfold.workflows import parse_spec, submit_workflow
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


async def _submit(target: Any, spec: WorkflowSpec) -> tuple[list[str], int]:
    """Steps 2 and 3 of the module docstring."""
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        appended = await submit_workflow(log, spec)
        positions = appended.positions
        cut = Cut(offsets={p.partition: max(q.offset for q in positions.values() if q.partition == p.partition) + 1
                           for p in positions.values()})
        wanted = {(p.partition, p.offset): node for node, p in positions.items()}
        verdicts: dict[str, Verdict] = {}
        ledger = Ledger()
        async for entry in log.read(start={p: 0 for p in cut.offsets}, cut=cut):
            if isinstance(entry, Poison):
                continue
            verdict = ledger.apply(entry.event, entry.where)
            node = wanted.get((entry.partition, entry.offset))
            if node is not None:
                verdicts[node] = verdict
    lines, code = [], 0
    for node, task_id in appended.tasks.items():
        verdict = verdicts.get(node)
        shown = "not read back (`taskfold tail` shows it)" if verdict is None else str(verdict)
        code = EXIT_REJECTED if verdict is None or verdict.outcome == "rejected" else code
        lines.append(f"{node}: task {task_id} at {positions[node]}: {shown}")
    summary = {v.outcome for v in verdicts.values()}
    lines.append(f"workflow {spec.workflow_id}: {len(appended.tasks)} nodes, "
                 + ("submitted" if summary == {"accepted"} else "already submitted" if summary == {"duplicate"}
                    else ", ".join(sorted(summary)) or "no verdict read"))
    return lines, code

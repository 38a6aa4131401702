"""`taskfold audit`: check the promises from the log alone; `taskfold audit explain`: one task's story.

The audit reads the events topic (whole, or up to --until/--offsets), folds it afresh and
judges every accepted event with rules that keep their own books (`taskfold.audit`). It
exits 1 when any rule is broken, 0 otherwise. Poison records are counted, not violations.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from taskfold.audit.deadline import DEFAULT_DEADLINE_MS
from taskfold.audit.explain import Explainer, Moment, Timeline, explain_log
from taskfold.audit.logaudit import LogAudit, audit_log
from taskfold.audit.report import RULES
from taskfold.audit.verdicts import StoreVerdicts
from taskfold.cli.connect import Target, resolve
from taskfold.cli.render import STATE_STYLE, VERDICT_STYLE, cli_console, parse_offsets, parse_time, show_time
from taskfold.cli.replay import progress_bar
from taskfold.log.eventlog import Cut, EventLog
from taskfold.log.foldlog import records_to_read
from taskfold.core.scheduling.model import QueuePolicy

T = TypeVar("T")
BOOTSTRAP_HELP = "broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"

audit_app = typer.Typer(add_completion=False, help="Check taskfold's promises from the log alone (exit 1 on a "
                        "violation); `taskfold audit explain TASK_ID` tells one task's story.")


def _cut(until: str | None, offsets: str | None) -> Cut | None:
    if until and offsets:
        raise typer.BadParameter("give --until or --offsets, not both")
    try:
        if until:
            return Cut(until_ms=parse_time(until))
        return Cut(offsets=parse_offsets(offsets)) if offsets else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--until" if until else "--offsets") from None


def _read(console: Console, target: Target, cut: Cut | None, label: str,
          work: Callable[[EventLog, Callable[[int], None]], Awaitable[T]]) -> T:
    """Run `work` over the log with a progress bar (drawn on long reads only)."""
    async def run() -> T:
        async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
            total = await records_to_read(log, cut)
            with progress_bar(console, label, total) as bar:
                job = bar.add_task(label, total=total)
                return await work(log, lambda n: bar.advance(job, n))
    return asyncio.run(run())


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    until: str = typer.Option(None, help="audit the log as of this time (ISO-8601 or epoch ms), by occurred_at"),
    offsets: str = typer.Option(None, help="audit the records before these positions, e.g. 0:120,1:80"),
    deadline_ms: int = typer.Option(DEFAULT_DEADLINE_MS, "--deadline-ms", min=0,
                                    help="a task not terminal, and unexplained (not waiting on a dependency, "
                                    "not_before, a retry backoff, or within its lease/timeout) for longer than "
                                    "this much log time before the log's newest event, is overdue"),
    require_terminal: bool = typer.Option(False, "--require-terminal",
                                          help="every task must have ended (for a drained, quiescent log)"),
    store: str = typer.Option(None, "--store", help="a projection store (opened read-only) whose recorded "
                              "verdicts must equal a fresh fold's"),
    limit: int = typer.Option(50, help="violations to print (0 for all)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
    bootstrap: str = typer.Option(None, help=BOOTSTRAP_HELP),
) -> None:
    """Audit the events log: exit 1 if any promise was broken."""
    if ctx.invoked_subcommand is not None:
        return
    console = cli_console(stderr=as_json, highlight=False)
    cut = _cut(until, offsets)
    verdicts = _open_store(store)
    target = resolve(bootstrap)
    result = _read(console, target, cut, "auditing", lambda log, progress: audit_log(
        log, cut, deadline_ms=deadline_ms, require_terminal=require_terminal, store=verdicts, progress=progress))
    if as_json:
        print(json.dumps(_as_json(result, deadline_ms)))
    else:
        _show(console, result, deadline_ms, limit)
    raise typer.Exit(0 if result.ok else 1)


def _open_store(path: str | None) -> StoreVerdicts | None:
    if path is None:
        return None
    from projections.store import StoreError
    from projections.verdicts import read_recorded

    try:
        recorded = read_recorded(path)
    except StoreError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from None
    return StoreVerdicts(recorded.verdicts, recorded.covered, source=path)


def _as_json(result: LogAudit, deadline_ms: int) -> dict:
    fold = result.fold
    out = {"ok": result.ok, "records": result.records, "events": fold.events, "accepted": fold.accepted,
           "poison": len(result.poison), "tasks": fold.tasks, "states": dict(fold.states),
           "explained": dict(fold.explained), "end_ms": fold.end_ms, "deadline_ms": deadline_ms,
           "violations": [v.as_dict() for v in result.violations],
           "by_rule": dict(fold.by_rule() + (result.store.by_rule() if result.store else Counter()))}
    if result.verdicts is not None:
        v = result.verdicts
        out["store"] = {"path": v.source, "compared": v.compared, "not_recorded": v.not_recorded,
                        "not_projected": v.not_projected}
    return out


def _show(console: Console, result: LogAudit, deadline_ms: int, limit: int) -> None:
    fold = result.fold
    console.print(f"audited {result.records:,} records in {result.seconds:.2f} s: {fold.events:,} events "
                  f"({fold.accepted:,} accepted), poison {len(result.poison)} (counted, not a violation); "
                  f"log time ends at {show_time(fold.end_ms)}")
    console.print(_rules_table(result))
    if result.violations:
        console.print(_violations_table(result, limit))
    states = ", ".join(f"{s} {n}" for s, n in sorted(fold.states.items())) or "none"
    console.print(f"tasks: {fold.tasks:,} ({states})")
    if fold.explained:
        why = ", ".join(f"{r} {n}" for r, n in sorted(fold.explained.items()))
        console.print(f"not terminal but explained (deadline {deadline_ms:,} ms): {why}")
    if result.verdicts is not None:
        v = result.verdicts
        console.print(f"store {v.source}: {v.compared:,} verdicts compared, {v.not_recorded:,} events with no "
                      f"recorded verdict, {v.not_projected:,} past what the store reflects")
    for poison in result.poison[:20]:
        console.print(f"[yellow]poison at {poison.position}[/]: {poison.reason}")
    if result.ok:
        console.print("[bold green]audit passed[/]: no rule broken")
    else:
        broken = ", ".join(sorted({v.rule for v in result.violations}))
        console.print(f"[bold red]audit FAILED[/]: {len(result.violations)} violation(s) of {broken}")


def _rules_table(result: LogAudit) -> Table:
    table = Table(title="rules", title_justify="left")
    table.add_column("rule", style="bold")
    table.add_column("fold verdicts")
    if result.store is not None:
        table.add_column("store verdicts")
    table.add_column("promise", overflow="fold")
    fold_counts = result.fold.by_rule()
    store_counts = result.store.by_rule() if result.store is not None else None
    for rule, promise in RULES.items():
        cells = [rule, _count(fold_counts[rule])]
        if store_counts is not None:
            cells.append(_count(store_counts[rule]))
        table.add_row(*cells, promise)
    return table


def _count(n: int) -> Text:
    return Text("ok", style="green") if n == 0 else Text(f"{n} broken", style="bold red")


def _violations_table(result: LogAudit, limit: int) -> Table:
    shown = result.violations[:limit] if limit else result.violations
    table = Table(title=f"violations ({len(shown)} of {len(result.violations)})", title_justify="left")
    for column in ("rule", "position", "queue", "task", "agent", "detail"):
        table.add_column(column, overflow="fold")
    for v in shown:
        table.add_row(Text(v.rule, style="red"), v.position or "-", v.queue, v.task_id or "-",
                      v.agent_id or "-", v.detail)
    return table


# explain


@audit_app.command()
def explain(
    task_id: str = typer.Argument(..., help="the task to explain"),
    queue: str = typer.Option(None, help="only this queue (task ids are per queue)"),
    until: str = typer.Option(None, help="as of this time (ISO-8601 or epoch ms), by occurred_at"),
    offsets: str = typer.Option(None, help="as of these positions, e.g. 0:120,1:80"),
    breaker_failures: int = typer.Option(3, min=1, help="the workers' --breaker-failures, to replay quarantines"),
    breaker_cooldown_ms: int = typer.Option(30_000, min=1, help="the workers' --breaker-cooldown-ms"),
    bootstrap: str = typer.Option(None, help=BOOTSTRAP_HELP),
) -> None:
    """Print a task's timeline and, for each assignment, the candidates, scores and strategy."""
    console = cli_console(highlight=False)
    cut = _cut(until, offsets)
    policy = QueuePolicy(breaker_failures=breaker_failures, breaker_cooldown_ms=breaker_cooldown_ms)
    target = resolve(bootstrap)
    found: Explainer = _read(console, target, cut, "reading", lambda log, progress: explain_log(
        log, task_id, queue, cut, progress, policy))
    timelines = found.timelines()
    if not timelines:
        where = f"queue {queue}" if queue else f"any of the {len(found.queues())} queue(s) in the log"
        cli_console(stderr=True).print(f"[red]unknown task[/]: no event about task {task_id!r} in {where} "
                                   f"({found.events:,} events read)")
        raise typer.Exit(1)
    for timeline in timelines:
        console.print(_explained(timeline))


def _explained(timeline: Timeline) -> Group:
    parts = [_header(timeline), _timeline_table(timeline)]
    for moment in timeline.decisions:
        parts.append(_decision(moment))
    if not timeline.decisions:
        parts.append(Text("no assignment was ever appended for this task", style="dim"))
    parts.append(_verdict_of_audit(timeline))
    return Group(*parts)


def _verdict_of_audit(timeline: Timeline) -> Text:
    """What the audit says about this task: broken rules, and why it has not ended."""
    out = Text()
    found = timeline.standing
    if found is not None and found.reason is not None:
        until = f" (until {show_time(found.until)})" if found.until is not None else ""
        out.append(f"not terminal: {found.reason}{until}\n")
    elif found is not None:
        out.append(f"not terminal and unexplained since {show_time(found.since)}: {found.detail}\n", style="yellow")
    if timeline.held_back:
        out.append("agents that can take it, kept away by their circuit breaker:\n")
        for agent in timeline.held_back:
            out.append(f"  {agent}\n")
    if not timeline.violations:
        return out.append("audit: no rule broken by this task's events", style="green")
    for v in timeline.violations:
        out.append(f"audit: [{v.rule}] at {v.position}: {v.detail}\n", style="red")
    return out


def _header(timeline: Timeline) -> Panel:
    task = timeline.task
    if task is None:
        body = Text("the fold never accepted this task's submission", style="yellow")
    else:
        body = Text()
        body.append(f"{task.task_type}  priority {task.priority.value}  state ")
        body.append(task.state.value, style=STATE_STYLE.get(task.state.value, "bold"))
        lost = f" ({task.lost_attempts} lost with their holder, not charged)" if task.lost_attempts else ""
        body.append(f"  attempt {task.attempt}{lost}  max_attempts {task.max_attempts}  agent {task.agent_id or '-'}\n")
        body.append(f"submitted {show_time(task.submitted_at)}  finished {show_time(task.finished_at)}")
        if task.reason or task.error:
            body.append(f"\n{task.reason or task.error}", style="dim")
    return Panel(body, title=f"task {timeline.task_id} in queue {timeline.queue}", title_align="left", expand=False)


def _timeline_table(timeline: Timeline) -> Table:
    table = Table(title="timeline", title_justify="left")
    for column in ("position", "time", "event", "actor", "attempt/agent", "verdict", "state after"):
        table.add_column(column, overflow="fold")
    for m in timeline.moments:
        attempt = getattr(m.event, "attempt", None)
        who = f"{attempt or '-'} / {m.event.agent or '-'}"
        table.add_row(m.position, show_time(m.event.occurred_at), m.event.event_type, m.event.actor, who,
                      Text(str(m.verdict), style=VERDICT_STYLE[m.verdict.outcome]),
                      Text(m.state or "-", style=STATE_STYLE.get(m.state or "", "")))
    return table


def _decision(moment: Moment) -> Group:
    decision = moment.decision
    assert decision is not None
    heading = Text.assemble(
        ("decision ", "bold"), f"at {moment.position}: attempt {decision.attempt} -> ", (decision.agent_id, "bold"),
        f"  strategy {decision.strategy}, by {decision.actor}, {len(decision.candidates)} candidate(s)  ",
        (str(moment.verdict), VERDICT_STYLE[moment.verdict.outcome]))
    table = Table(show_edge=True)
    for column in ("candidate", "score", "load/slots", "eligible", "why not"):
        table.add_column(column, overflow="fold")
    if not decision.candidates:
        table.add_row(Text("no candidates recorded", style="dim"), "", "", "", "")
    for c in sorted(decision.candidates, key=lambda c: (not c.eligible, -c.score, c.agent_id)):
        chosen = c.agent_id == decision.agent_id
        table.add_row(Text(c.agent_id + (" (chosen)" if chosen else ""), style="bold green" if chosen else ""),
                      f"{c.score:.4g}", f"{c.load}/{c.slots}",
                      Text("yes", style="green") if c.eligible else Text("no", style="red"), c.reason or "")
    return Group(heading, table)

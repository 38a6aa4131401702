"""`taskfold replay`: fold the log and print the task states it gives, or build a projection store.

Without `--rebuild`, `--as-of` or `--store` it folds and prints (as it always did). With
them it builds the gateway's projections from the log (`projections.rebuild`): the whole
log into the gateway's store (`--rebuild`), or the log as it was at a moment into a
separate store that a gateway can serve read-only (`--as-of`, or `--until`/`--offsets`
with `--store`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from taskfold.cli.connect import Target, resolve
from taskfold.cli.render import cli_console, parse_offsets, parse_time, show_time, state_counts, task_table
from taskfold.config import Settings, gateway_store
from taskfold.log.eventlog import Cut, EventLog
from taskfold.log.foldlog import FoldedLog, fold_log, records_to_read

BAR_FROM = 5000  # records; smaller replays finish before a bar would be worth drawing


def replay(
    until: str = typer.Option(None, help="as of this time (ISO-8601 or epoch ms), by the events' occurred_at"),
    offsets: str = typer.Option(None, help="as of these positions, e.g. 0:120,1:80 (records before them)"),
    limit: int = typer.Option(50, help="rows of the task table (0 for all)"),
    as_json: bool = typer.Option(False, "--json", help="print task states (or the build report) as JSON lines"),
    bootstrap: str = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"),
    rebuild: bool = typer.Option(False, "--rebuild",
                                 help="wipe and rebuild the gateway's projection store from offset 0"),
    as_of: str = typer.Option(None, "--as-of", help="build the projections as they were at this time "
                              "(ISO-8601 or epoch ms) into a separate store"),
    store: str = typer.Option(None, "--store", help="the store to build (default: the gateway's, "
                              "<state_dir>/gateway/<TASKFOLD_GATEWAY_NAME or port>, for --rebuild; "
                              "<state_dir>/projections/as-of-<ms> for --as-of); with --until or --offsets, "
                              "build the projections at that cut into it"),
) -> None:
    """Replay the events topic through the fold and print every task's state, or build projections."""
    console = cli_console(stderr=as_json)
    cut = _cut(until, offsets, as_of, rebuild, store)
    if rebuild or as_of is not None or store is not None:
        target = resolve(bootstrap)
        path = Path(store) if store else _default_store(cut)
        _build(console, target, cut if not rebuild else None, path, as_json)
        return
    target = resolve(bootstrap)
    result = asyncio.run(_run(console, target, cut))
    if as_json:
        for queue in result.ledger.queues.values():
            for task in queue.tasks.values():
                print(json.dumps({"task_id": task.task_id, "queue": task.queue, "state": task.state.value,
                                  "attempt": task.attempt, "agent_id": task.agent_id, "reason": task.reason}))
        return
    _report(console, result, cut, limit)


def _cut(until: str | None, offsets: str | None, as_of: str | None, rebuild: bool, store: str | None) -> Cut:
    """The cut the flags ask for; a BadParameter naming the flag when they are wrong or clash."""
    if rebuild and (as_of or until or offsets):
        raise typer.BadParameter("--rebuild replays the whole log; to build the projections at a moment "
                                 "use --as-of TIME (or --offsets with --store) instead", param_hint="--rebuild")
    if as_of and (until or offsets):
        raise typer.BadParameter("give --as-of, --until or --offsets, one of them", param_hint="--as-of")
    if until and offsets:
        raise typer.BadParameter("give --until or --offsets, not both")
    if store is not None and not (rebuild or as_of or until or offsets):
        raise typer.BadParameter("say what to build into it: --rebuild (the whole log), --as-of TIME, "
                                 "or --until/--offsets", param_hint="--store")
    try:
        moment = as_of or until
        return Cut(until_ms=parse_time(moment) if moment else None,
                   offsets=parse_offsets(offsets) if offsets else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--as-of" if as_of else None) from None


def progress_bar(console: Console, label: str, total: int) -> Progress:
    """The replay progress bar; drawn only for replays of `BAR_FROM` records or more."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=total < BAR_FROM)


async def _run(console: Console, target: Target, cut: Cut) -> FoldedLog:
    async with EventLog(target.bootstrap, target.topics, tansu=target.tansu) as log:
        total = await records_to_read(log, cut)
        with progress_bar(console, "replaying", total) as bar:
            job = bar.add_task("replay", total=total)
            return await fold_log(log, cut, progress=lambda n: bar.advance(job, n))


def _report(console: Console, result: FoldedLog, cut: Cut, limit: int) -> None:
    console.print(task_table(result.ledger.queues, limit, f"tasks{_where(cut)}"))
    counts = ", ".join(f"{state} {n}" for state, n in sorted(state_counts(result.ledger.queues).items()))
    verdicts = ", ".join(f"{v} {n}" for v, n in sorted(result.verdicts.items()))
    console.print(f"{result.records} records in {result.seconds:.2f} s ({result.events_per_second:,.0f}/s); "
                  f"verdicts: {verdicts or 'none'}; poison: {len(result.poison)}")
    console.print(f"tasks by state: {counts or 'none'}")
    for poison in result.poison[:20]:
        console.print(f"[red]poison at {poison.position}[/]: {poison.reason}")


def _where(cut: Cut) -> str:
    if cut.until_ms is not None:
        return f" as of {show_time(cut.until_ms)}"
    return f" as of offsets {cut.offsets}" if cut.offsets else ""


# Building projection stores


def _default_store(cut: Cut) -> Path:
    """<state_dir>/projections/as-of-<ms> for a moment; else the store `taskfold gateway` serves by default."""
    settings = Settings()
    if cut.until_ms is not None:
        return settings.state_dir / "projections" / f"as-of-{cut.until_ms}"
    return gateway_store(settings, settings.gateway_name or str(settings.gateway_port))


class _RebuildBar:
    """The progress bar of a rebuild, started once the rebuild knows how much it will read."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(self.console, "rebuilding", total)
            self.bar.start()
            self.job = self.bar.add_task("rebuild", total=total)
        self.bar.update(self.job, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _build(console: Console, target: Target, cut: Cut | None, path: Path, as_json: bool) -> None:
    """Build the projections into `path` and say what was built and how fast."""
    # Imported here: every other command would pay for loading RocksDB and the views.
    from projections.rebuild import CutError, TargetError, rebuild
    from projections.views import all_views

    bar = _RebuildBar(console)
    try:
        report = asyncio.run(rebuild(target.bootstrap, target.topics, path, all_views(), tansu=target.tansu,
                                     cut=cut, progress=bar))
    except CutError as exc:
        raise typer.BadParameter(str(exc), param_hint="--offsets") from None
    except TargetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from None
    finally:
        bar.close()
    telemetry = {role: n for role, n in report.applied.items() if role != "events"}
    if as_json:
        print(json.dumps({"store": str(path), "applied": report.applied, "verdicts": report.verdicts,
                          "poison": report.poison, "seconds": round(report.seconds, 3),
                          "events_per_second": round(report.events_per_second, 1), "built_to": report.built_to}))
        return
    what = f"the projections{_where(cut)}" if cut is not None else "the projection store"
    extra = ", ".join(f"{n:,} {role}" for role, n in telemetry.items() if n)
    verdicts = ", ".join(f"{v} {n:,}" for v, n in sorted(report.verdicts.items()))
    console.print(f"built {what} at {path}")
    console.print(f"{report.events:,} events{f' (+ {extra})' if extra else ''} in {report.seconds:.2f} s: "
                  f"{report.events_per_second:,.0f} events/s; verdicts: {verdicts or 'none'}; "
                  f"poison: {report.poison}")
    if cut is not None:
        console.print(f"serve it read-only: taskfold gateway --store {path} --read-only")

"""`taskfold topics check|create`: our topics on any cluster, checked or created, never changed.

Both compare every topic with what taskfold wants (taskfold.broker.topiccheck): partition
count, replication factor, cleanup policy, retention, min.insync.replicas, max.message.bytes,
and for `heartbeats` the compaction settings. A difference is printed as
`<topic>: <setting> expected <x>, actual <y>` and the command exits 1; an existing topic is
never altered (changing the system of record is the operator's decision).
"""

from __future__ import annotations

import asyncio

import typer
from pydantic import ValidationError

from taskfold.broker.topiccheck import Mismatch, check, create_missing, topic_specs
from taskfold.cli.connect import resolve
from taskfold.config import ClusterSettings, Settings, first_error

topics_app = typer.Typer(no_args_is_help=True, help="Check or create taskfold's topics on a cluster.")

PARTITIONS_HELP = "partitions of every topic (default: TASKFOLD_PARTITIONS)"
BOOTSTRAP_HELP = "broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)"


@topics_app.command("check")
def check_topics(
    partitions: int = typer.Option(None, min=1, max=1024, help=PARTITIONS_HELP),
    bootstrap: str = typer.Option(None, help=BOOTSTRAP_HELP),
) -> None:
    """Compare the topics with taskfold's layout; exit 1 naming each difference (a missing topic too)."""
    _run(partitions, bootstrap, create=False)


@topics_app.command("create")
def create_topics(
    partitions: int = typer.Option(None, min=1, max=1024, help=PARTITIONS_HELP),
    bootstrap: str = typer.Option(None, help=BOOTSTRAP_HELP),
) -> None:
    """Create the missing topics, then check the existing ones; exit 1 naming each difference."""
    _run(partitions, bootstrap, create=True)


def _run(partitions: int | None, bootstrap: str | None, *, create: bool) -> None:
    try:
        settings, cluster = Settings(), ClusterSettings()
    except ValidationError as exc:
        raise typer.BadParameter(first_error(exc)) from None
    target = resolve(bootstrap, settings)
    specs = topic_specs(target.topics, partitions or settings.partitions, cluster)
    created, mismatches = asyncio.run(_apply(target.bootstrap, specs, target.topics, cluster, create))
    for spec in specs:
        if spec.name in created:
            typer.echo(f"{spec.name}: created ({spec.partitions} partitions, replication {spec.replication_factor})")
        elif not any(m.topic == spec.name for m in mismatches):
            typer.echo(f"{spec.name}: ok ({spec.partitions} partitions, replication {spec.replication_factor})")
    for mismatch in mismatches:
        typer.echo(f"{mismatch}{' (refused at start)' if mismatch.refused else ''}", err=True)
    if mismatches:
        typer.echo(f"{len(mismatches)} difference(s); existing topics were not changed", err=True)
        raise typer.Exit(1)


async def _apply(bootstrap: str, specs, names, cluster: ClusterSettings,  # noqa: ANN001
                 create: bool) -> tuple[list[str], list[Mismatch]]:
    created = await create_missing(bootstrap, specs) if create else []
    return created, await check(bootstrap, specs, names, cluster)


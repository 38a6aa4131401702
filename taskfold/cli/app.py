"""The `taskfold` command line."""

import gc

import typer

from taskfold.cli.agent import agent
from taskfold.cli.audit import audit_app
from taskfold.cli.dev import dev
from taskfold.cli.fleet import agents, queues
from taskfold.cli.gateway import gateway
from taskfold.cli.replay import replay
from taskfold.cli.schedule import schedule_app
from taskfold.cli.submit import submit
from taskfold.cli.tail import tail
from taskfold.cli.tasks import cancel, redrive, result, status
from taskfold.cli.top import top
from taskfold.cli.topics import topics_app
from taskfold.cli.worker import worker
from taskfold.cli.workflow import workflow_app
from taskfold.config import environment_problem
from taskfold.ops import logs

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="taskfold: event-sourced coordination for workers and agents.")


@app.callback()
def _every_command() -> None:
    """taskfold: event-sourced coordination for workers and agents."""
    try:  # one log format for every process (TASKFOLD_LOG_FORMAT), set before any command logs
        logs.configure()
    except logs.LogFormatError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


app.command()(dev)
app.command()(submit)
app.command()(tail)
for verb in (status, result, cancel, redrive, queues, agents, top):  # issue 15: the verbs people reach for
    app.command()(verb)
app.command()(replay)
app.command()(worker)
app.command()(agent)
app.command()(gateway)
app.add_typer(audit_app, name="audit")
app.add_typer(workflow_app, name="workflow")
app.add_typer(topics_app, name="topics")
app.add_typer(schedule_app, name="schedule")


# A full (generation 2) collection scans the whole heap, and a gateway's heap is its read
# models: at CPython's default (700, 10, 10) the gateway spent 26% of its CPU in the cyclic
# GC during a 5,000-task burst, 20% of it in 8 full collections; at (700, 10, 1000) 7%, and
# the whole fleet's CPU per task fell 6.24 -> 5.94 ms (README, Benchmarks: tuning). Nearly
# everything we allocate dies by reference counting; cycles are still collected, later.
GC_THRESHOLDS = (700, 10, 1000)


def main() -> None:
    """Console-script entry point."""
    gc.set_threshold(*GC_THRESHOLDS)
    # A bad TASKFOLD_* value must name its variable, not surface as a traceback from
    # whichever component reads that setting first (an agent's append window, say).
    problem = environment_problem()
    if problem is not None:
        typer.echo(f"invalid environment: {problem}", err=True)
        raise SystemExit(2)
    app()

"""How the task and fleet commands reach taskfold: a `Client` over Kafka (as `submit` and `tail`
find the broker) or, with `--gateway`, over HTTP; and how client errors become exit codes.

Exit codes: 0 done; 1 the fold said no (rejected), no such task, or the broker or gateway
is unavailable; 2 bad input, naming the field; 3 not finished (yet, or within --timeout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from taskfold.cli.connect import resolve
from taskfold.clients import Client, Duplicate, NotFound, Refused, TimedOut, Unavailable

EXIT_NO = 1
EXIT_INVALID = 2
EXIT_NOT_FINISHED = 3

BOOTSTRAP = typer.Option(None, help="broker (default: TASKFOLD_BOOTSTRAP or the running `taskfold dev`)")
GATEWAY = typer.Option(None, "--gateway", envvar="TASKFOLD_GATEWAY_URL",
                       help="talk to this gateway (http://host:port) instead of the broker")
TOKEN = typer.Option(None, "--token", envvar="TASKFOLD_TOKEN", help="the gateway's bearer token")
QUEUE = typer.Option(None, "--queue", help="the task's queue, when its id is used in several")


def open_client(bootstrap: str | None, gateway: str | None, token: str | None) -> Client:
    """A Client of the gateway when one is named, else of the broker (exit 2 naming --bootstrap if none)."""
    if gateway:
        if not gateway.startswith(("http://", "https://")):
            raise typer.BadParameter(f"{gateway!r} is not an http:// or https:// URL", param_hint="--gateway")
        return Client.http(gateway, token)
    target = resolve(bootstrap)
    return Client.kafka(target.bootstrap, topics=target.topics, tansu=target.tansu)


def task_id_argument(value: str) -> str:
    """TASK must be a non-empty id."""
    if not value.strip():
        raise typer.BadParameter("a task id cannot be empty", param_hint="TASK")
    return value


@contextmanager
def answering(console: Console) -> Iterator[None]:
    """Turn client errors into a message and the exit code of the module docstring."""
    try:
        yield
    except Duplicate as exc:
        _say(console, f"{exc} (task {exc.task_id})")
        raise typer.Exit(EXIT_NO) from None
    except Refused as exc:
        if exc.position is None:  # refused before anything was appended: the input was bad
            for field, reason in exc.problems or [("(request)", str(exc))]:
                _say(console, f"invalid {field}: {reason}")
            raise typer.Exit(EXIT_INVALID) from None
        _say(console, f"{exc} (the event appended at {exc.position} changed nothing)")
        raise typer.Exit(EXIT_NO) from None
    except NotFound as exc:
        _say(console, str(exc))
        raise typer.Exit(EXIT_NO) from None
    except TimedOut as exc:
        _say(console, str(exc))
        raise typer.Exit(EXIT_NOT_FINISHED) from None
    except Unavailable as exc:
        _say(console, str(exc))
        raise typer.Exit(EXIT_NO) from None


def _say(console: Console, text: str) -> None:
    console.print(text, markup=False, style="red")

"""One log format for every process: as it is by default, JSON lines with TASKFOLD_LOG_FORMAT=json.

Every entry point calls `configure()` once, through the CLI's callback (taskfold/cli/app.py);
the worker tells faust to leave the root logger alone and the gateway tells uvicorn the same
(`json_logs()`), so one handler writes every record: ours, faust's, aiokafka's, uvicorn's.

A JSON line holds `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`,
every `extra=` field of the call, and `exception` (the formatted traceback) when there is
one. Status lines a command prints for people (`status()`) become JSON objects on stdout too.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import IO

FORMAT_VARIABLE = "TASKFOLD_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has: whatever else a record carries came with `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class LogFormatError(ValueError):
    """TASKFOLD_LOG_FORMAT holds a value that is not a format."""


def log_format(environ: dict[str, str] | None = None) -> str:
    """The format the environment asks for: `text` (the default) or `json`; LogFormatError names the rest."""
    value = (environ if environ is not None else os.environ).get(FORMAT_VARIABLE, "").strip().lower() or "text"
    if value not in FORMATS:
        raise LogFormatError(f"{FORMAT_VARIABLE}={value!r} is not a log format: use one of {', '.join(FORMATS)}")
    return value


def json_logs() -> bool:
    """True when this process logs JSON lines."""
    return log_format() == "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, object] = {
            "time": _iso(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def _iso(created: float) -> str:
    """A record's creation time (seconds since the epoch, from logging) as UTC ISO 8601 with ms."""
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure(level: int | str | None = None, stream: IO[str] | None = None) -> str:
    """Set up the root logger for the format asked for; returns it. Text leaves logging as it was.

    JSON replaces the root's handlers with one that writes JSON lines to `stream`
    (stderr by default); `level` sets the root's level when given.
    """
    chosen = log_format()
    if chosen == "json":
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(logging.WARNING if level is None else level)
    elif level is not None:
        logging.getLogger().setLevel(level)
    return chosen


def status(text: str, *, logger: str, stream: IO[str] | None = None, **fields: object) -> None:
    """Print a command's status line for people, or, with JSON logs, as a JSON object on the same stream."""
    out = stream or sys.stdout
    if json_logs():
        record = logging.LogRecord(logger, logging.INFO, "", 0, text, None, None)
        record.__dict__.update(fields)
        out.write(JsonFormatter().format(record) + "\n")
    else:
        out.write(text + "\n")
    out.flush()

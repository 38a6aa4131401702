"""TASKFOLD_LOG_FORMAT: text leaves logging alone, json writes one JSON object per record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from taskfold.cli.app import app
from taskfold.cli.render import JsonLines, status_console
from taskfold.ops import logs


@pytest.fixture
def root() -> Iterator[logging.Logger]:
    """The root logger, restored after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_extras_and_the_exception(root, monkeypatch) -> None:
    monkeypatch.setenv(logs.FORMAT_VARIABLE, "JSON")
    out = io.StringIO()
    assert logs.configure(logging.INFO, stream=out) == "json"
    log = logging.getLogger("taskfold.unit")
    log.info("assigned %s to %s", "t1", "a1", extra={"queue": "emails", "attempt": 2, "odd": object()})
    try:
        raise ValueError("the fold said no")
    except ValueError:
        log.exception("append failed")
    logging.getLogger("aiokafka").debug("not at this level")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["time"].endswith("Z") and first["time"][10] == "T" and len(first["time"]) == 24
    assert {k: first[k] for k in ("level", "logger", "message", "queue", "attempt")} == {
        "level": "INFO", "logger": "taskfold.unit", "message": "assigned t1 to a1", "queue": "emails", "attempt": 2}
    assert first["odd"].startswith("<object object")  # anything else becomes its text
    assert "exception" not in first and "exc_info" not in first and "args" not in first
    assert second["level"] == "ERROR" and second["message"] == "append failed"
    assert second["exception"].startswith("Traceback") and "ValueError: the fold said no" in second["exception"]


def test_json_replaces_the_handlers_and_text_leaves_them(root, monkeypatch) -> None:
    kept = logging.StreamHandler(io.StringIO())
    root.handlers[:] = [kept]
    monkeypatch.delenv(logs.FORMAT_VARIABLE, raising=False)
    assert logs.configure() == "text" and root.handlers == [kept]
    monkeypatch.setenv(logs.FORMAT_VARIABLE, "json")
    logs.configure()
    (handler,) = root.handlers
    assert isinstance(handler.formatter, logs.JsonFormatter) and root.level == logging.WARNING


def test_an_unknown_format_is_refused_naming_the_variable(monkeypatch) -> None:
    with pytest.raises(logs.LogFormatError, match=r"TASKFOLD_LOG_FORMAT='yaml' is not a log format: use one of text"):
        logs.log_format({"TASKFOLD_LOG_FORMAT": "yaml"})
    monkeypatch.setenv(logs.FORMAT_VARIABLE, "yaml")
    done = CliRunner().invoke(app, ["queues"])
    assert done.exit_code == 2 and "TASKFOLD_LOG_FORMAT='yaml'" in done.output


def test_status_lines_are_json_objects_with_json_logs(monkeypatch) -> None:
    out = io.StringIO()
    monkeypatch.setenv(logs.FORMAT_VARIABLE, "json")
    logs.status("taskfold worker w1: ready", logger="taskfold.worker", stream=out, worker="w1")
    console = status_console("taskfold.agent")
    assert isinstance(console, JsonLines)
    console.stream = out
    console.print("agent [bold]a1[/] serves q; [red]x[/]")
    console.print("broker [1, 2] unreachable")  # brackets that are not markup
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("taskfold.worker", "taskfold worker w1: ready"), ("taskfold.agent", "agent a1 serves q; x"),
        ("taskfold.agent", "broker [1, 2] unreachable")]
    assert lines[0]["worker"] == "w1" and lines[0]["level"] == "INFO"
    monkeypatch.setenv(logs.FORMAT_VARIABLE, "text")
    out = io.StringIO()
    logs.status("plain", logger="x", stream=out)
    assert out.getvalue() == "plain\n"

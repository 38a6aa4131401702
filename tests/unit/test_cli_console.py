"""CLI output that goes to a pipe or a file is never wrapped mid-word."""

from __future__ import annotations

import io

from taskfold.cli.render import cli_console, task_table
from taskfold.core.events import TaskSubmitted
from taskfold.core.fold import Ledger


def test_a_long_line_to_a_file_stays_one_line(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    console = cli_console(file=out)
    line = "submitted task " + "-".join(f"word{i}" for i in range(60)) + " to queue emails"
    console.print(line)
    assert out.getvalue() == line + "\n"


def test_a_table_to_a_file_does_not_fold_its_cells(monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    ledger = Ledger()
    long_id = "task-" + "x" * 150
    ledger.apply(TaskSubmitted(event_id="e-1", queue="emails", occurred_at=1, actor="t", task_id=long_id,
                               task_type="send"))
    out = io.StringIO()
    cli_console(file=out).print(task_table(ledger.queues, 0, "tasks"))
    assert long_id in out.getvalue()

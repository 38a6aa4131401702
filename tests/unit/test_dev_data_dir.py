"""`taskfold dev --data-dir`: what is refused before anything starts, and where s3rver is looked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from taskfold.broker import s3dir
from taskfold.broker.harness import Broker
from taskfold.cli.app import app
from taskfold.cli.dev import _announce


def test_a_data_dir_with_an_external_broker_is_refused_naming_both(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFOLD_BOOTSTRAP", "kafka:9092")
    result = CliRunner().invoke(app, ["dev", "--data-dir", "data"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "--data-dir" in result.output and "TASKFOLD_BOOTSTRAP=kafka:9092" in result.output
    assert not (tmp_path / "data").exists() and not (tmp_path / ".taskfold").exists()


def test_without_s3rver_the_error_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3dir, "REPO_ROOT", tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(s3dir.S3rverNotFound, match="run `scripts/install-tools`"):
        s3dir.find_s3dir()



@pytest.mark.parametrize(("kind", "data_dir", "says"), [
    ("tansu", None, "keeps its log in memory: history ends when dev stops (--data-dir DIR keeps it)"),
    ("container", None, "removed when dev stops, and its log with it"),
    ("tansu", Path("data"), "the log is kept in data (Tansu on s3:// through s3rver)"),
])
def test_dev_says_at_start_whether_its_log_outlives_it(kind: str, data_dir: Path | None, says: str) -> None:
    console = Console(record=True, width=300)
    _announce(console, Broker("127.0.0.1:9092", kind, kind == "tansu"), {"taskfold.events": True},
              Path(".taskfold/dev.json"), data_dir)
    text = console.export_text()
    assert says in text
    assert ("in memory" in text) == (kind == "tansu" and data_dir is None)

"""`taskfold dev --data-dir`: what is refused before anything starts, and where s3rver is looked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskfold.broker import s3dir
from taskfold.cli.app import app


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


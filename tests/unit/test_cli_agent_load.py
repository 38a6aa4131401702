"""`taskfold agent module:attr` finds a module in the working directory, as uvicorn and celery do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskfold.agent import Agent
from taskfold.cli.agent import _load

MAILER = 'from taskfold.agent import Agent\nagent = Agent("mailer-1", {"emails": 1})\n'


@pytest.fixture
def mailer_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding mailer.py, made the working directory, and not on sys.path."""
    (tmp_path / "mailer.py").write_text(MAILER)
    monkeypatch.chdir(tmp_path)
    # pytest may have put "" or the invocation directory on sys.path; neither may stand
    # in for the fix.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "mailer", raising=False)
    yield tmp_path
    sys.modules.pop("mailer", None)


def test_load_finds_a_module_in_the_working_directory(mailer_dir: Path) -> None:
    found = _load("mailer:agent")
    assert isinstance(found, Agent) and found.agent_id == "mailer-1"


def test_the_console_script_finds_it_too(mailer_dir: Path) -> None:
    # The console script, not `python -m` (which already puts the working directory first).
    script = Path(sys.executable).parent / "taskfold"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TASKFOLD_BOOTSTRAP")}
    done = subprocess.run([str(script), "agent", "mailer:agent", "--bootstrap", "127.0.0.1:1"], cwd=mailer_dir,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "No module named" not in done.stdout + done.stderr
    assert "no broker answers at 127.0.0.1:1" in done.stdout + done.stderr  # it got as far as the broker

"""Every `taskfold` command checks the TASKFOLD_* environment first: a bad value exits 2
naming its variable, before anything starts (no traceback from the component that reads it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("variable, value, says", [
    ("TASKFOLD_APPEND_BUSY_WINDOW_MS", "abc", "TASKFOLD_APPEND_BUSY_WINDOW_MS: Input should be a valid number, unable to parse string as a number"),
    ("TASKFOLD_APPEND_WINDOW_MS", "-1", "TASKFOLD_APPEND_WINDOW_MS: Input should be greater than or equal to 0"),
])
def test_a_bad_setting_exits_2_naming_its_variable(variable: str, value: str, says: str) -> None:
    env = {**os.environ, variable: value, "TASKFOLD_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "taskfold", "agent", "--demo", "-q", "x=1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"invalid environment: {says}"

"""The import contracts in pyproject.toml hold, a wrong arrow breaks them, and the things
that were written twice are written once.

`lint-imports` (import-linter) checks the layers (CLI; streams, projections; agent, audit;
log, broker; core; schemas) and the forbidden imports (the core's I/O libraries, the fold's
clock, the processors' applications, the commands' web framework). Running it here puts it
in the README's test command, so CI fails on a wrong arrow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("taskfold", "streams", "projections", "schemas")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # the test extra installs it beside python


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the packages under `root` with root's pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_tree(tmp_path: Path) -> Path:
    """The packages and pyproject.toml copied under tmp_path, to be broken there."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_import_contracts_hold() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # the audit reading a projection store (it is handed the verdicts instead)
    ("taskfold/audit/verdicts.py", "from projections.store import Store", "Layers"),
    # the core reaching a Kafka client, even lazily inside a function
    ("taskfold/core/policies.py", "def f():\n    import aiokafka", "imports no Kafka client"),
    # the fold reading the wall clock
    ("taskfold/core/fold/intake.py", "from taskfold.core.edge import now_ms", "read no clock"),
    # the gateway building reports with the agent SDK
    ("projections/gateway/agents_http.py", "from taskfold.agent.attempts import TaskContext",
     "neither the agent SDK nor the audit"),
    # `taskfold replay` loading FastAPI to learn a path
    ("taskfold/cli/replay.py", "def f():\n    from projections.gateway import app", "load no web framework"),
])
def test_a_wrong_arrow_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    root = copy_of_the_tree(tmp_path)
    with open(root / module, "a") as source:
        source.write(f"\n\n{line}\n")
    done = lint_imports(root)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout and broken in " ".join(done.stdout.split()), done.stdout


def code_matching(pattern: str) -> set[str]:
    """The modules of the four packages (as paths from the root) whose text matches `pattern`."""
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if re.search(pattern, path.read_text()):
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_one_module_reads_the_wall_clock() -> None:
    # Everything else takes the time as an argument or from taskfold.core.edge.now_ms.
    assert code_matching(r"\btime\.time(_ns)?\(|\bdatetime\.(now|utcnow)\(") == {"taskfold/core/edge.py"}


def test_one_partition_hash() -> None:
    # The fold's home partition, and queue_partition in the broker's topics for everyone else.
    assert code_matching(r"\bhome_partition\(") == {"taskfold/core/fold/placement.py", "taskfold/broker/topics.py"}
    assert code_matching(r"\bdef (queue_partition|partition_of)\(") == {"taskfold/broker/topics.py"}


def test_one_poison_record_builder() -> None:
    assert code_matching(r"[\"']poison-reason[\"']") == {"taskfold/log/records.py"}

"""`taskfold workflow submit` on the real broker: a YAML file over two queues, the same file
again (all duplicates, exit 0), a JSON spec on stdin, and a cycle refused (exit 2, naming the
nodes, nothing appended)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_cli import cli_env, taskfold, total_records

YAML = """\
workflow_id: nightly-2026-12-05
queue: etl
nodes:
  - name: extract
    task_type: extract
    payload: {source: "s3://bucket/day"}
  - name: transform
    task_type: transform
    queue: etl-gpu
    depends_on: [extract]
  - name: load
    task_type: load
    depends_on: [transform]
"""


async def test_a_yaml_workflow_is_submitted_and_again_is_all_duplicates(broker, topics, tmp_path: Path) -> None:
    env = cli_env(broker, topics)
    path = tmp_path / "nightly.yaml"
    path.write_text(YAML)
    first = taskfold(env, "workflow", "submit", str(path))
    assert first.returncode == 0, first
    assert first.stdout.splitlines()[0].startswith("extract: task ")
    assert first.stdout.strip().endswith("workflow nightly-2026-12-05: 3 nodes, submitted")
    again = taskfold(env, "workflow", "submit", str(path))
    assert again.returncode == 0, again
    assert "duplicate: event already applied" in again.stdout
    assert again.stdout.strip().endswith("3 nodes, already submitted")


async def test_json_on_stdin_and_a_cycle_refused_naming_the_nodes(broker, topics) -> None:
    env = cli_env(broker, topics)
    spec = {"workflow_id": "w-cycle", "queue": "q", "nodes": [
        {"name": "a", "task_type": "t", "depends_on": ["b"]}, {"name": "b", "task_type": "t", "depends_on": ["a"]}]}
    refused = subprocess.run([sys.executable, "-m", "taskfold", "workflow", "submit", "-"], input=json.dumps(spec),
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused
    assert "invalid nodes: dependency cycle: a -> b -> a" in refused.stdout
    assert await total_records(broker, topics) == 0
    spec["nodes"][0]["depends_on"] = []
    ok = subprocess.run([sys.executable, "-m", "taskfold", "workflow", "submit", "-"], input=json.dumps(spec),
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok
    assert await total_records(broker, topics) == 2


async def test_a_file_that_is_not_yaml_is_exit_2_naming_it(broker, topics, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{nope")
    refused = taskfold(cli_env(broker, topics), "workflow", "submit", str(path))
    assert refused.returncode == 2, refused
    assert f"invalid file: {path} is not JSON" in refused.stdout


async def test_a_changed_node_under_the_same_id_is_exit_2_naming_it_and_appends_nothing(broker, topics,
                                                                                      tmp_path: Path) -> None:
    env = cli_env(broker, topics)
    path = tmp_path / "nightly.yaml"
    path.write_text(YAML)
    assert taskfold(env, "workflow", "submit", str(path)).returncode == 0
    before = await total_records(broker, topics)
    path.write_text(YAML.replace("task_type: load", "task_type: load\n    priority: critical"))
    changed = taskfold(env, "workflow", "submit", str(path))
    assert changed.returncode == 2, changed
    assert "idempotency key 'workflow:nightly-2026-12-05:load' was already used by task" in changed.stdout
    assert "(priority differ)" in changed.stdout and changed.stdout.strip().endswith("nothing submitted")
    assert await total_records(broker, topics) == before

"""A client generated from the gateway's /openapi.json by openapi-python-client works (issue 15).

The generator runs with no warning (a warning means it dropped a model or a response), and
the generated package, imported here, submits a task, reads it, lists it, reads its history
and gets the gateway's error body back, against a real gateway on the real broker.

openapi-python-client pins typer<0.28 and taskfold pins typer 0.29, so the generator lives
in a venv of its own, built once from `tests/tools/openapi-python-client.txt` and cached
under ~/.cache/taskfold (keyed by that file's hash); building it needs the package index.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from projections.gateway.app import GatewayConfig
from projections.gateway.auth import Auth, parse_env
from projections.gateway.run import Gateway, bind
from taskfold.broker.harness import Broker
from taskfold.broker.topics import TopicNames

pytestmark = pytest.mark.integration

PINS = Path(__file__).resolve().parents[1] / "tools" / "openapi-python-client.txt"
PACKAGE = "taskfold_gateway_client"  # from the document's title, "taskfold gateway"
TOKENS = "sub-tok:submitter+auditor"


def generator_venv() -> Path:
    """The venv holding the pinned generator, built on first use (one builder at a time)."""
    digest = hashlib.sha256(PINS.read_bytes()).hexdigest()[:16]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskfold"
    venv = home / f"openapi-python-client-{digest}"
    built = venv / "pins.txt"  # copied in last: a venv without it was left half-built
    if built.exists():
        return venv
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when a killed builder dies
        if built.exists():
            return venv
        # Built where it stays: a venv's scripts name their interpreter by its absolute path.
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(PINS)],
                                   capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, f"cannot install the pinned generator from {PINS}:\n{installed.stderr}"
        shutil.copyfile(PINS, built)
    return venv


@pytest.fixture
def gateway_url(broker: Broker, topics: TopicNames, tmp_path: Path) -> Iterator[str]:
    config = GatewayConfig(store=tmp_path / "store", auth=Auth(parse_env(TOKENS)), bootstrap=broker.bootstrap,
                           topics=topics, tansu=broker.is_tansu, write_timeout_s=10.0)
    ready = threading.Event()
    gateway = Gateway(config, bind("127.0.0.1", 0), lambda url: ready.set())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(gateway.serve())
        except BaseException as exc:  # reported below instead of dying silently in the thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="gateway", daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "the gateway did not start within 60 s"
        assert not failure, failure
        yield gateway.url
    finally:
        gateway.stop()
        thread.join(30)
        gateway.sock.close()
    assert not thread.is_alive(), "the gateway did not stop"


def generate(url: str, where: Path) -> tuple[str, ModuleType]:
    """Generate the client from the gateway's document; (the generator's output, the imported package)."""
    document = where / "openapi.json"
    document.write_bytes(httpx.get(f"{url}/openapi.json", timeout=30).raise_for_status().content)
    venv = generator_venv()
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff hooks
    run = subprocess.run([str(venv / "bin" / "openapi-python-client"), "generate", "--path", str(document),
                          "--meta", "none", "--output-path", str(where / PACKAGE), "--fail-on-warning"],
                         capture_output=True, text=True, env=env, timeout=300)
    output = (run.stdout + run.stderr).strip()
    assert run.returncode == 0, output
    sys.path.insert(0, str(where))
    try:
        return output, importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


@pytest.fixture
def client_package(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def test_a_generated_client_submits_gets_lists_and_reads_history(gateway_url: str, client_package: Path,
                                                                 topics: TopicNames) -> None:
    output, package = generate(gateway_url, client_package)
    assert output.splitlines() == [f"Generating {client_package / PACKAGE}"], output  # no warning at all
    api = importlib.import_module(f"{PACKAGE}.api.writes.submit_task")
    reads = {name: importlib.import_module(f"{PACKAGE}.api.reads.{name}")
             for name in ("get_task", "list_tasks", "task_history")}
    models = importlib.import_module(f"{PACKAGE}.models")
    client = package.AuthenticatedClient(base_url=gateway_url, token="sub-tok", timeout=httpx.Timeout(30.0))
    queue = "openapi-client"

    with client:
        request = models.TaskRequest(queue=queue, task_type="echo", task_id="gen-1", payload={"hello": ["world", 1]},
                                     priority=models.Priority.HIGH, idempotency_key="gen-key-1")
        submitted = api.sync_detailed(client=client, body=request)
        assert submitted.status_code == 201, submitted.content
        assert isinstance(submitted.parsed, models.WriteResult) and submitted.parsed.verdict == "accepted"
        assert submitted.parsed.task["task_id"] == "gen-1"  # the task as GET shows it (a free-form object)
        again = api.sync_detailed(client=client, body=request)
        assert again.status_code == 200 and again.parsed.duplicate is True

        task = reads["get_task"].sync(task_id="gen-1", client=client)
        assert isinstance(task, models.TaskOut), task
        assert (task.queue, task.task_type, task.priority, task.state) == (
            queue, "echo", models.Priority.HIGH, models.TaskState.QUEUED)
        assert task.payload == {"hello": ["world", 1]}

        page = reads["list_tasks"].sync(client=client, queue=queue)
        assert isinstance(page, models.TaskPage) and [t.task_id for t in page.tasks] == ["gen-1"]

        history = reads["task_history"].sync(task_id="gen-1", client=client)
        assert isinstance(history, models.HistoryPage), history
        verdicts = [(row.event["type"], row.verdict.outcome) for row in history.events]
        assert verdicts == [("TaskSubmitted", "accepted"), ("TaskSubmitted", "duplicate")]
        assert history.events[1].verdict.ref == "gen-1" and history.events[0].task.state == models.TaskState.QUEUED

        missing = reads["get_task"].sync_detailed(task_id="no-such-task", client=client)
        assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorBody)
        assert missing.parsed.error.code == "not_found"

    stranger = package.AuthenticatedClient(base_url=gateway_url, token="wrong-tok")
    with stranger:
        refused = reads["list_tasks"].sync_detailed(client=stranger)
    assert refused.status_code == 401 and refused.parsed.error.code == "unauthenticated"

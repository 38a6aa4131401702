"""`compose/` can only be checked by reading it here (no Docker): issue 13, section 3.

Every taskfold service runs a real `taskfold` command with valid flags (parsed by the
CLI's own click tree), every TASKFOLD_ variable it sets is one taskfold reads, the topics
it creates match `taskfold/broker/topics.py`, and the proxy, Prometheus and the Grafana
dashboard point at processes and metrics that exist.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic_settings import BaseSettings
from typer._click.core import Command, Context  # typer 0.29 carries its own click
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

from taskfold.broker import topics as topics_module
from taskfold.broker.topics import TopicNames
from taskfold.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
SOURCES = [ROOT / "taskfold", ROOT / "streams", ROOT / "projections"]
PENDING: set[str] = set()  # variables compose sets before taskfold reads them (none now)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def taskfold_services(compose: dict) -> dict[str, dict]:
    """The services that run the taskfold image (its entrypoint is `taskfold`)."""
    found = {name: s for name, s in compose["services"].items()
             if s.get("image") == "taskfold:local" and "entrypoint" not in s}
    assert found, "no service runs the taskfold image"
    return found


def parse(argv: list[str]) -> Context:
    """Parse `taskfold ARGV` down to its leaf command, as the CLI would, without running it."""
    command: Command = typer.main.get_command(app)
    ctx = command.make_context("taskfold", list(argv), resilient_parsing=False)
    while isinstance(command, TyperGroup):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
    return ctx


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_every_taskfold_service_runs_a_real_command_with_valid_flags(compose: dict) -> None:
    for name, service in taskfold_services(compose).items():
        argv = service["command"]
        assert isinstance(argv, list), f"{name}: give the command as a list, not a shell string"
        try:
            ctx = parse(argv)
        except UsageError as exc:
            pytest.fail(f"{name}: `taskfold {shlex.join(argv)}` is refused: {exc.format_message()}")
        assert ctx.command.name in {"worker", "gateway", "agent"}, f"{name} runs {ctx.command.name}"


def test_the_parser_refuses_what_the_cli_refuses() -> None:
    for argv in (["worker", "--no-such-flag"], ["gateway", "--port", "http"], ["workers"], ["agent", "-q"]):
        with pytest.raises(UsageError):
            parse(argv)


def test_worker_and_gateway_ids_are_unique_and_workers_are_several(compose: dict) -> None:
    services = taskfold_services(compose).values()
    workers = [option(s["command"], "--worker-id") for s in services if s["command"][0] == "worker"]
    gateways = [option(s["command"], "--name") for s in services if s["command"][0] == "gateway"]
    agents = [option(s["command"], "--agent-id") for s in services if s["command"][0] == "agent"]
    assert len(workers) >= 2 and len(set(workers)) == len(workers), workers
    assert len(gateways) == 2 and len(set(gateways)) == 2, gateways
    assert agents and len(set(agents)) == len(agents), agents


def settings_variables() -> set[str]:
    """TASKFOLD_ variables the pydantic settings of taskfold/config.py read."""
    import taskfold.config as config

    names = set()
    for model in vars(config).values():
        if inspect.isclass(model) and issubclass(model, BaseSettings) and model is not BaseSettings:
            prefix = model.model_config.get("env_prefix", "")
            names |= {f"{prefix}{field}".upper() for field in model.model_fields}
    return names


def environ_variables() -> set[str]:
    """TASKFOLD_ variables read from os.environ directly: module constants and os.environ/getenv literals."""
    names = set()
    for source in (p for root in SOURCES for p in root.rglob("*.py")):
        tree = ast.parse(source.read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str) and node.value.value.startswith("TASKFOLD_"):
                names.add(node.value.value)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in {"os.environ.get", "os.getenv"} \
                    and node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return {n for n in names if n.startswith("TASKFOLD_")}


def compose_variables(compose: dict) -> dict[str, set[str]]:
    """{TASKFOLD_ variable: services that set it}, the image's ENV lines included."""
    found: dict[str, set[str]] = {}
    for name, service in taskfold_services(compose).items():
        for key in service.get("environment") or {}:
            if key.startswith("TASKFOLD_"):
                found.setdefault(key, set()).add(name)
    for line in (COMPOSE / "Dockerfile").read_text().splitlines():
        for key in re.findall(r"\b(TASKFOLD_[A-Z0-9_]+)=", line) if line.startswith("ENV ") else ():
            found.setdefault(key, set()).add("Dockerfile")
    return found


def test_every_taskfold_variable_set_is_one_taskfold_reads(compose: dict) -> None:
    read = settings_variables() | environ_variables() | PENDING
    unknown = {key: sorted(where) for key, where in compose_variables(compose).items() if key not in read}
    assert not unknown, f"set in compose/ but read by no taskfold code: {unknown}"


def test_pending_variables_are_still_pending() -> None:
    # Tripwire: a pending variable that taskfold now reads must leave PENDING.
    landed = PENDING & (settings_variables() | environ_variables())
    assert not landed, f"taskfold reads {sorted(landed)} now: remove them from PENDING in {__file__}"


def test_the_variable_scan_finds_what_taskfold_reads() -> None:
    assert {"TASKFOLD_BOOTSTRAP", "TASKFOLD_PARTITIONS", "TASKFOLD_STATE_DIR", "TASKFOLD_TOKENS"} <= settings_variables()
    assert {"TASKFOLD_BROKER", "TASKFOLD_CONTAINER"} <= environ_variables()
    assert "TASKFOLD_NO_SUCH_THING" not in settings_variables() | environ_variables()


def created_topics() -> dict[str, tuple[int, dict[str, str]]]:
    """{topic: (partitions, configs)} from the `create` lines of compose/kafka/create-topics.sh."""
    script = (COMPOSE / "kafka" / "create-topics.sh").read_text()
    variables = dict(re.findall(r"^([A-Z_]+)=(\S+)$", script, re.M))
    out = {}
    for topic, partitions, configs in re.findall(r"^create (\S+) +(\d+)((?: +\S+=\S+)*)$", script, re.M):
        settings = dict(item.split("=", 1) for item in configs.split())
        settings["min.insync.replicas"] = variables["MIN_INSYNC_REPLICAS"]
        out[topic] = (int(partitions), settings, int(variables["REPLICATION_FACTOR"]))
    return out


def test_topics_match_what_taskfold_creates(compose: dict) -> None:
    env = compose["x-taskfold-env"]
    names = TopicNames(env.get("TASKFOLD_TOPIC_PREFIX", "taskfold."))
    # topics.py of branch `kafka` puts min.insync.replicas into topic_configs itself.
    takes_insync = "min_insync_replicas" in inspect.signature(topics_module.topic_configs).parameters
    expected = topics_module.topic_configs(names, **({"min_insync_replicas": 2} if takes_insync else {}))
    created = created_topics()
    assert sorted(created) == sorted(names.all())
    for topic, (partitions, configs, replication) in created.items():
        assert partitions == int(env["TASKFOLD_PARTITIONS"]), f"{topic}: TASKFOLD_PARTITIONS differs"
        assert configs == {**expected[topic], "min.insync.replicas": "2"}, topic
        assert replication == 3, topic
    assert env["TASKFOLD_REPLICATION_FACTOR"] == "3" and env["TASKFOLD_MIN_INSYNC_REPLICAS"] == "2"


def test_the_cluster_has_three_brokers_with_replication_3_and_min_insync_2(compose: dict) -> None:
    brokers = {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("apache/kafka")
               and "KAFKA_NODE_ID" in (s.get("environment") or {})}
    assert len(brokers) == 3
    ids = {s["environment"]["KAFKA_NODE_ID"] for s in brokers.values()}
    assert len(ids) == 3
    for name, service in brokers.items():
        env = service["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(voters) == sorted(f"{s['environment']['KAFKA_NODE_ID']}@{n}:9093" for n, s in brokers.items())
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
    bootstrap = compose["x-taskfold-env"]["TASKFOLD_BOOTSTRAP"].split(",")
    assert sorted(bootstrap) == sorted(f"{n}:9092" for n in brokers)


def gateway_addresses(compose: dict) -> set[str]:
    return {f"{name}:{option(s['command'], '--port')}" for name, s in taskfold_services(compose).items()
            if s["command"][0] == "gateway"}


def test_the_proxy_balances_both_gateways(compose: dict) -> None:
    conf = (COMPOSE / "nginx" / "nginx.conf").read_text()
    upstream = re.search(r"upstream gateways \{(.*?)\}", conf, re.S).group(1)
    assert set(re.findall(r"server (\S+?:\d+)", upstream)) == gateway_addresses(compose)


def probe_addresses(compose: dict) -> set[str]:
    """host:port of every worker's and agent's --http-port (/healthz, /readyz, /metrics)."""
    services = taskfold_services(compose)
    missing = [n for n, s in services.items()
               if s["command"][0] in ("worker", "agent") and "--http-port" not in s["command"]]
    assert not missing, f"serve no /metrics (no --http-port): {missing}"
    assert compose["x-taskfold-env"]["TASKFOLD_HTTP_HOST"] == "0.0.0.0", "probes on loopback: unreachable"
    return {f"{name}:{option(s['command'], '--http-port')}" for name, s in services.items()
            if s["command"][0] in ("worker", "agent")}


def test_prometheus_scrapes_every_process_that_serves_metrics(compose: dict) -> None:
    config = yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert gateway_addresses(compose) <= targets
    assert probe_addresses(compose) <= targets
    assert "kafka-exporter:9308" in targets and "kafka-exporter" in compose["services"]


def test_worker_and_agent_healthchecks_ask_their_own_probe_port(compose: dict) -> None:
    for name, service in taskfold_services(compose).items():
        if service["command"][0] in ("worker", "agent"):
            port = option(service["command"], "--http-port")
            assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"]), name


def test_every_mounted_file_exists(compose: dict) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts {source}, which is not in compose/"


def gateway_metric_names(tmp_path: Path) -> set[str]:
    """Every metric name the gateway's /metrics exposes, rendered by its own registry."""
    from projections.gateway.ops import GatewayMetrics
    from projections.projector import Projector
    from projections.store import Store

    store = Store(tmp_path / "store")
    live = type("Live", (), {"caught_up": lambda self: True, "lag": lambda self: {"events": {0: 0}},
                             "projector": Projector(store, []), "store": store})()
    metrics = GatewayMetrics(lambda: type("Runtime", (), {"live": live})())
    metrics.latency.labels("GET", "/v1/tasks", "200").observe(0.01)
    try:
        return rendered_names(metrics.registry)
    finally:
        store.close()


def rendered_names(registry) -> set[str]:  # noqa: ANN001 - a CollectorRegistry
    """Every metric and sample name a registry serves (counters also with their `_total`)."""
    from prometheus_client import generate_latest

    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    names = {f.name for f in families} | {s.name for f in families for s in f.samples}
    return names | {f"{f.name}_total" for f in families if f.type == "counter"}


def worker_and_agent_metric_names() -> set[str]:
    """Every metric name the workers' and agents' /metrics serve (taskfold.ops.probes)."""
    from streams.app import WorkerOptions, build
    from streams.metrics import WorkerProbe
    from taskfold.agent import Agent
    from taskfold.agent.metrics import AgentProbe

    async def nowhere(events: list) -> None:
        pass

    outbox = type("Outbox", (), {"append": staticmethod(nowhere), "quarantine": None})()
    topology = build("127.0.0.1:1", TopicNames("unit."), tansu=False, partitions=4, outbox=outbox,
                     options=WorkerOptions(store="memory://", read_heartbeats=False))
    agent = AgentProbe(Agent("a1", {"q": 1}))
    agent.durations.labels("q", "echo", "completed").observe(0.01)
    return rendered_names(WorkerProbe(topology, "unit.events", "w1").registry) | rendered_names(agent.registry)


def test_the_dashboard_uses_metrics_that_exist(tmp_path: Path, compose: dict) -> None:
    dashboard = json.loads((COMPOSE / "grafana" / "dashboards" / "taskfold.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\b((?:taskfold|kafka)_[a-z0-9_]+)", e)}
    served = gateway_metric_names(tmp_path) | worker_and_agent_metric_names()
    assert {"taskfold_worker_waiting_tasks", "taskfold_agent_running_attempts",
            "taskfold_agent_attempt_duration_seconds_bucket"} <= used, "no worker or agent panels"
    assert {n for n in used if n.startswith("taskfold_")} - served == set()
    assert {n for n in used if n.startswith("kafka_")} <= {"kafka_consumergroup_lag"}  # kafka-exporter's
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("queue depth", "throughput", "latency", "utilization", "lag", "poison", "rejection",
                  "by priority", "attempt latency"):
        assert topic in titles, f"no panel on {topic}"


def test_grafana_provisions_the_dashboard_from_the_mounted_folder(compose: dict) -> None:
    provider = yaml.safe_load((COMPOSE / "grafana" / "provisioning" / "dashboards" / "taskfold.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]

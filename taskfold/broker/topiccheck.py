"""What our topics should look like, what they do look like, and the differences.

`taskfold topics` and the start of every service (`ensure_topics`) use it. A difference
is reported, never repaired: changing a topic that holds the system of record is an
operator's decision. A few differences are refused at start (`Mismatch.refused`),
because running on them loses or misplaces events:

* a partition count other than the one asked for (queue keys would hash elsewhere);
* `events` compacted (only the last event of each queue would survive);
* `events` with a retention (`retention.ms` or `retention.bytes` not -1), unless
  TASKFOLD_EVENTS_RETENTION_ALLOWED=true says the operator keeps history elsewhere.

A setting the broker does not report (Tansu reports only the configs set at creation)
shows as "unset": `taskfold topics check` lists it, start-up only logs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import NoError, for_code

from taskfold.broker import clients
from taskfold.broker.topics import TopicNames, topic_configs
from taskfold.config import ClusterSettings

UNSET = "unset"
MISSING = "missing"


@dataclass(frozen=True)
class TopicSpec:
    """How taskfold wants one topic."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class TopicState:
    """How the cluster has one topic (None fields: the topic does not exist)."""

    name: str
    partitions: int | None
    replication_factor: int | None
    configs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mismatch:
    """One setting of one topic that differs from what taskfold wants."""

    topic: str
    setting: str
    expected: str
    actual: str
    refused: bool = False  # services refuse to start on it

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} expected {self.expected}, actual {self.actual}"


def topic_specs(names: TopicNames, partitions: int | Mapping[str, int],
                settings: ClusterSettings | None = None, **retention_ms: int) -> list[TopicSpec]:
    """Our four topics as they should be: partitions, replication from the settings, configs."""
    settings = settings if settings is not None else ClusterSettings()
    configs = topic_configs(names, min_insync_replicas=settings.min_insync_replicas, **retention_ms)
    return [TopicSpec(topic, partitions if isinstance(partitions, int) else partitions[topic],
                      settings.replication_factor, configs[topic]) for topic in configs]


def compare(spec: TopicSpec, state: TopicState, names: TopicNames,
            settings: ClusterSettings | None = None) -> list[Mismatch]:
    """Every difference between the wanted and the actual topic, the dangerous ones marked refused."""
    if state.partitions is None:
        return [Mismatch(spec.name, "topic", "present", MISSING)]
    settings = settings if settings is not None else ClusterSettings()
    out = []
    if state.partitions != spec.partitions:
        out.append(Mismatch(spec.name, "partitions", str(spec.partitions), str(state.partitions), refused=True))
    if state.replication_factor != spec.replication_factor:
        out.append(Mismatch(spec.name, "replication factor", str(spec.replication_factor),
                            str(state.replication_factor)))
    for name, expected in spec.configs.items():
        actual = state.configs.get(name, UNSET)
        if actual != expected:
            out.append(Mismatch(spec.name, name, expected, actual, refused=_refused(spec.name, name, actual,
                                                                                      names, settings)))
    return out


def _refused(topic: str, setting: str, actual: str, names: TopicNames, settings: ClusterSettings) -> bool:
    """True for a difference that loses events: compaction of, or (unless allowed) retention on, `events`."""
    if topic != names.events or actual == UNSET:
        return False
    if setting == "cleanup.policy":
        return "compact" in actual
    if setting in ("retention.ms", "retention.bytes"):
        return actual != "-1" and not settings.events_retention_allowed
    return False


async def describe(bootstrap: str, topics: list[str]) -> dict[str, TopicState]:
    """The actual partitions, replication factor and configs of each topic (absent ones too)."""
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        # Metadata of every topic: asking by name would auto-create it on some brokers.
        present = {meta["topic"]: meta for meta in await admin.describe_topics()
                   if meta["topic"] in topics and for_code(meta["error_code"]) is NoError}
        configs: dict[str, dict[str, str]] = {}
        if present:
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t) for t in present])
            for response in responses:
                for error_code, message, _type, name, entries in response.resources:
                    if for_code(error_code) is not NoError:
                        raise for_code(error_code)(f"describing the configs of {name}: {message}")
                    configs[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    finally:
        await admin.close()
    out = {}
    for topic in topics:
        meta = present.get(topic)
        if meta is None:
            out[topic] = TopicState(topic, None, None)
            continue
        replicas = {len(p["replicas"]) for p in meta["partitions"]}
        out[topic] = TopicState(topic, len(meta["partitions"]), min(replicas) if replicas else 0,
                                configs.get(topic, {}))
    return out


async def check(bootstrap: str, specs: list[TopicSpec], names: TopicNames,
                settings: ClusterSettings | None = None) -> list[Mismatch]:
    """Every difference between the wanted topics and the cluster's."""
    states = await describe(bootstrap, [s.name for s in specs])
    return [m for spec in specs for m in compare(spec, states[spec.name], names, settings)]


async def create_missing(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics of `specs` that do not exist; return their names. Existing ones are left alone."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    states = await describe(bootstrap, [s.name for s in specs])
    missing = [s for s in specs if states[s.name].partitions is None]
    if not missing:
        return []
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs)) for s in missing])
    finally:
        await admin.close()
    created = []
    for topic, error_code, *rest in response.topic_errors:
        error = for_code(error_code)
        if error is NoError:
            created.append(topic)
        elif error is not TopicAlreadyExistsError:  # made by someone else meanwhile: checked like the rest
            raise error(f"creating topic {topic}: {(rest[0] if rest else None) or error.__name__}")
    return created
